"""What the simulator publishes decodes with the gateway's own native convention."""

from __future__ import annotations

import random

import pytest

from gateway.conventions.native import NativeConvention
from gateway.models import CommandResult, DeviceMeta, MetaChange, StatusChange, Telemetry
from simulators.devices import Thermostat
from simulators.wire import (
    OFFLINE,
    ONLINE,
    BadCommand,
    Topics,
    meta_payload,
    parse_command_payload,
    result_payload,
    telemetry_payload,
)

NOW = 1_764_000_000.0


@pytest.fixture
def native() -> NativeConvention:
    return NativeConvention(prefix="site/a")


@pytest.fixture
def topics() -> Topics:
    return Topics("site/a")


def test_telemetry_round_trips(native: NativeConvention, topics: Topics) -> None:
    """Telemetry decodes to the same metrics, values and ts (ms precision)."""
    values = {"temperature": 21.37, "mode": "heat", "on": True, "count": 3}
    (event,) = native.decode(
        topics.telemetry("thermo-1"), telemetry_payload(values, NOW + 0.1234), 0
    )
    assert isinstance(event, Telemetry)
    assert event.device == "thermo-1"
    assert {(m, v) for m, _, v in event.samples} == set(values.items())
    assert all(ts == pytest.approx(NOW + 0.123) for _, ts, _ in event.samples)


def test_meta_round_trips(native: NativeConvention, topics: Topics) -> None:
    """A model's meta decodes to a DeviceMeta with its units and typed command params."""
    model = Thermostat("thermo-1", random.Random(1), "Hall")
    (event,) = native.decode(topics.meta("thermo-1"), meta_payload(model.meta()), NOW)
    assert isinstance(event, MetaChange)
    assert isinstance(event.meta, DeviceMeta)
    assert event.meta.units["temperature"] == "°C"
    target = event.meta.commands["set_target"].params["target"]
    assert (target.type, target.min, target.max) == ("number", 5.0, 30.0)


@pytest.mark.parametrize(("payload", "online"), [(ONLINE, True), (OFFLINE, False)])
def test_status_round_trips(
    native: NativeConvention, topics: Topics, payload: bytes, online: bool
) -> None:
    """online/offline decode as status changes."""
    assert native.decode(topics.status("sw-1"), payload, NOW) == [StatusChange("sw-1", online)]


def test_results_round_trip(native: NativeConvention, topics: Topics) -> None:
    """ok and error results decode with their id, result and message."""
    ok = native.decode(topics.result("t-1"), result_payload("c-1", "ok", {"target": 22.0}), NOW)
    assert ok == [CommandResult("t-1", "c-1", "ok", {"target": 22.0}, None)]
    error = native.decode(topics.result("t-1"), result_payload("c-2", "error", error="no"), NOW)
    assert error == [CommandResult("t-1", "c-2", "error", {}, "no")]


def test_gateway_command_topic_and_payload_parse(native: NativeConvention, topics: Topics) -> None:
    """A command the gateway encodes is recognised by the device side, id and params intact."""
    topic, payload = native.encode_command(
        "thermo-1", DeviceMeta(), "set_mode", "c-9", {"mode": "off"}
    )
    assert topics.parse_command(topic) == ("thermo-1", "set_mode")
    assert parse_command_payload(payload) == ("c-9", {"mode": "off"})


@pytest.mark.parametrize(
    "topic", ["site/a/thermo-1/telemetry", "site/b/thermo-1/cmd/x", "site/a/t/cmd/x/y", "site/a"]
)
def test_other_topics_are_not_commands(topics: Topics, topic: str) -> None:
    """Only prefix/<device>/cmd/<command> is a command topic."""
    assert topics.parse_command(topic) is None


@pytest.mark.parametrize("payload", [b"{", b"[]", b'{"params": {}}', b'{"id": 5}', b"\xff"])
def test_unreadable_commands_raise(payload: bytes) -> None:
    """A command without a readable string id cannot be answered and raises BadCommand."""
    with pytest.raises(BadCommand):
        parse_command_payload(payload)


def test_command_without_params_has_empty_params() -> None:
    """`params` may be omitted for commands that take none."""
    assert parse_command_payload(b'{"id": "c-1"}') == ("c-1", {})
