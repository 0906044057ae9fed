"""Shelly Gen2+ over MQTT, from the examples in Shelly's own API documentation.

Sources: https://shelly-api-docs.shelly.cloud/gen2/ComponentsAndServices/Mqtt (topics),
https://shelly-api-docs.shelly.cloud/gen2/General/Notifications (NotifyStatus, NotifyEvent),
https://shelly-api-docs.shelly.cloud/gen2/General/RPCProtocol (frames, src/id, errors) and the
GetStatus examples of Switch, Cover, Light, EM and Temperature.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.conventions.shelly import ShellyConvention
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    Removed,
    StatusChange,
    Telemetry,
)
from tests.support.conventions import PAYLOADS, refusal

NOW = 1_764_090_000.0
PLUG = "shellyplus1pm-a8032ab636ec"
PLUG_ID = f"shelly.{PLUG}"
SWITCH_STATUS = {
    "id": 0,
    "source": "timer",
    "output": True,
    "apower": 8.9,
    "voltage": 237.5,
    "current": 0.068,
    "aenergy": {"total": 6.532, "by_minute": [45.199, 47.141, 88.397], "minute_ts": 1654511760},
    "temperature": {"tC": 23.5, "tF": 74.4},
}
COVER_STATUS = {
    "id": 0,
    "source": "limit_switch",
    "state": "open",
    "apower": 0,
    "current_pos": 100,
    "target_pos": None,
    "pos_control": True,
}
LIGHT_STATUS = {"id": 0, "source": "init", "output": False, "brightness": 50}
EM_STATUS = {"id": 0, "a_current": 4.029, "a_voltage": 236.1, "a_act_power": 951.2,
             "a_aprt_power": 951.9, "total_act_power": 1015.3}  # fmt: skip
TEMPERATURE_STATUS = {"id": 0, "tC": 22.4, "tF": 72.3}


@pytest.fixture
def shelly() -> ShellyConvention:
    return ShellyConvention()


def send(conv: ShellyConvention, topic: str, payload: object) -> list[DeviceEvent]:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return conv.decode(topic, body, NOW)


def readings(events: list[DeviceEvent]) -> dict[str, Any]:
    return {m: v for e in events if isinstance(e, Telemetry) for m, _, v in e.samples}


def last_meta(events: list[DeviceEvent]) -> DeviceMeta:
    metas = [e.meta for e in events if isinstance(e, MetaChange)]
    assert metas, events
    assert metas[-1] is not None
    return metas[-1]


@pytest.mark.parametrize(
    ("component", "status", "expected"),
    [
        (
            "switch:0",
            SWITCH_STATUS,
            {"switch:0.output": True, "switch:0.apower": 8.9, "switch:0.voltage": 237.5,
             "switch:0.current": 0.068, "switch:0.aenergy.total": 6.532,
             "switch:0.temperature.tC": 23.5, "switch:0.temperature.tF": 74.4},
        ),
        (
            "cover:0",
            COVER_STATUS,
            {"cover:0.state": "open", "cover:0.apower": 0, "cover:0.current_pos": 100,
             "cover:0.pos_control": True},
        ),
        ("light:0", LIGHT_STATUS, {"light:0.output": False, "light:0.brightness": 50}),
        (
            "em:0",
            EM_STATUS,
            {"em:0.a_current": 4.029, "em:0.a_voltage": 236.1, "em:0.a_act_power": 951.2,
             "em:0.a_aprt_power": 951.9, "em:0.total_act_power": 1015.3},
        ),
        ("temperature:0", TEMPERATURE_STATUS, {"temperature:0.tC": 22.4, "temperature:0.tF": 72.3}),
    ],
)  # fmt: skip
def test_component_status_topics_become_dotted_metrics(
    shelly: ShellyConvention, component: str, status: dict[str, Any], expected: dict[str, Any]
) -> None:
    """`<id>/status/<component>`: every reading of the component, dotted; its id, the source of
    the last change, per-minute lists and nulls are no readings."""
    events = send(shelly, f"{PLUG}/status/{component}", status)
    assert readings(events) == expected
    assert not [e for e in events if isinstance(e, Rejected)]


def test_units_follow_shellys_documented_units(shelly: ShellyConvention) -> None:
    """apower W, voltage V, current A, aenergy.total Wh, tC °C, em's a_act_power W, …"""
    send(shelly, f"{PLUG}/status/em:0", EM_STATUS)
    meta = last_meta(send(shelly, f"{PLUG}/status/switch:0", SWITCH_STATUS))
    assert meta.units["switch:0.apower"] == "W"
    assert meta.units["switch:0.aenergy.total"] == "Wh"
    assert meta.units["switch:0.temperature.tC"] == "°C"
    assert meta.units["em:0.a_act_power"] == "W"
    assert meta.units["em:0.a_aprt_power"] == "VA"
    assert "switch:0.output" not in meta.units


def test_notify_status_overlays_changes_at_the_devices_time(shelly: ShellyConvention) -> None:
    """NotifyStatus (the documentation's example): the changed keys, at its `ts`."""
    frame = {
        "src": "shellypro4pm-f008d1d8b8b8",
        "dst": "user_1",
        "method": "NotifyStatus",
        "params": {"ts": 1631186545.04, "switch:0": {"id": 0, "output": True, "source": "button"}},
    }
    events = send(shelly, "shellypro4pm-f008d1d8b8b8/events/rpc", frame)
    assert (
        Telemetry("shelly.shellypro4pm-f008d1d8b8b8", [("switch:0.output", 1631186545.04, True)])
        in events
    )
    assert last_meta(events).type == "shellypro4pm"


def test_notify_full_status_reads_instance_components_only(shelly: ShellyConvention) -> None:
    """NotifyFullStatus: every instance component; sys, wifi, cloud and mqtt are diagnostics."""
    params = {
        "ts": 1680962879.62,
        "temperature:0": {"id": 0, "tC": 19.8, "tF": 67.6},
        "humidity:0": {"id": 0, "rh": 42.2},
        "devicepower:0": {"id": 0, "battery": {"V": 0.43, "percent": 0}},
        "sys": {"mac": "B8D61A8B17CC", "uptime": 3},
        "wifi": {"sta_ip": "192.168.3.183", "rssi": -60},
        "cloud": {"connected": False},
    }
    frame = {"src": "shellyplusht-b8d61a8b17cc", "method": "NotifyFullStatus", "params": params}
    events = send(shelly, "shellyplusht-b8d61a8b17cc/events/rpc", frame)
    assert readings(events) == {
        "temperature:0.tC": 19.8,
        "temperature:0.tF": 67.6,
        "humidity:0.rh": 42.2,
        "devicepower:0.battery.V": 0.43,
        "devicepower:0.battery.percent": 0,
    }


def test_notify_event_becomes_the_components_event_reading(shelly: ShellyConvention) -> None:
    """NotifyEvent (the documentation's example): `input:0.event` = single_push."""
    frame = {
        "src": "shellypro4pm-f008d1d8b8b8",
        "method": "NotifyEvent",
        "params": {
            "ts": 1631266595.43,
            "events": [
                {"component": "input:0", "id": 0, "event": "single_push", "ts": 1631266595.43}
            ],
        },
    }
    events = send(shelly, "shellypro4pm-f008d1d8b8b8/events/rpc", frame)
    assert events == [
        Telemetry(
            "shelly.shellypro4pm-f008d1d8b8b8", [("input:0.event", 1631266595.43, "single_push")]
        )
    ]


@pytest.mark.parametrize(
    ("payload", "events"),
    [
        (b"true", [StatusChange(PLUG_ID, True)]),
        (b"false", [StatusChange(PLUG_ID, False)]),
        (b"", [Removed(PLUG_ID)]),
    ],
)
def test_online_is_the_status_and_its_clearing_a_removal(
    shelly: ShellyConvention, payload: bytes, events: list[DeviceEvent]
) -> None:
    """`<id>/online` true/false (retained, the last will); cleared, the device is gone."""
    decoded = send(shelly, f"{PLUG}/online", payload)
    assert [e for e in decoded if not isinstance(e, MetaChange)] == events


@pytest.mark.parametrize(
    ("component", "status", "command", "params", "method", "rpc_params"),
    [
        ("switch:0", SWITCH_STATUS, "switch_0.set", {"on": True}, "Switch.Set",
         {"id": 0, "on": True}),
        ("switch:0", SWITCH_STATUS, "switch_0.toggle", {}, "Switch.Toggle", {"id": 0}),
        ("cover:0", COVER_STATUS, "cover_0.go_to_position", {"pos": 40}, "Cover.GoToPosition",
         {"id": 0, "pos": 40}),
        ("cover:0", COVER_STATUS, "cover_0.stop", {}, "Cover.Stop", {"id": 0}),
        ("light:0", LIGHT_STATUS, "light_0.set", {"brightness": 80}, "Light.Set",
         {"id": 0, "brightness": 80}),
        ("number:200", {"value": 21}, "number_200.set", {"value": 22.5}, "Number.Set",
         {"id": 200, "value": 22.5}),
    ],
)  # fmt: skip
def test_commands_are_rpc_requests_on_the_devices_rpc_topic(
    shelly: ShellyConvention,
    component: str,
    status: dict[str, Any],
    command: str,
    params: dict[str, Any],
    method: str,
    rpc_params: dict[str, Any],
) -> None:
    """A component seen offers its commands; each is a JSON-RPC request with the gateway's src
    and a fresh id, on `<id>/rpc`."""
    meta = last_meta(send(shelly, f"{PLUG}/status/{component}", status))
    assert command in meta.commands
    topic, body = shelly.encode_command(PLUG_ID, meta, command, "c-1", params)
    assert topic == f"{PLUG}/rpc"
    frame = orjson.loads(body)
    assert (frame["src"], frame["method"], frame["params"]) == ("iotgw-shelly", method, rpc_params)
    assert isinstance(frame["id"], int)
    assert shelly.owns_command_topic(PLUG_ID, topic)


def request_id(shelly: ShellyConvention, meta: DeviceMeta, command_id: str) -> int:
    _, body = shelly.encode_command(PLUG_ID, meta, "switch_0.set", command_id, {"on": True})
    return int(orjson.loads(body)["id"])


def test_the_answer_on_the_gateways_topic_is_the_result(shelly: ShellyConvention) -> None:
    """The response frame on `iotgw-shelly/rpc` with the request's id and the device's src
    answers the command: `result` is ok, `error` is error with Shelly's code and message."""
    meta = last_meta(send(shelly, f"{PLUG}/status/switch:0", SWITCH_STATUS))
    ok_id, error_id = request_id(shelly, meta, "c-1"), request_id(shelly, meta, "c-2")
    assert shelly.arm(PLUG_ID, "c-1", {})
    ok = send(shelly, "iotgw-shelly/rpc", {"id": ok_id, "src": PLUG, "dst": "iotgw-shelly",
                                           "result": {"was_on": False}})  # fmt: skip
    assert ok == [CommandResult(PLUG_ID, "c-1", "ok", {"was_on": False})]
    error = {"code": -103, "message": "Invalid argument 'id': no instance found"}
    failed = send(shelly, "iotgw-shelly/rpc", {"id": error_id, "src": PLUG, "error": error})
    assert failed == [
        CommandResult(
            PLUG_ID, "c-2", "error", None, "-103: Invalid argument 'id': no instance found"
        )
    ]
    # Answered once: the same id again matches nothing.
    assert refusal(shelly, "iotgw-shelly/rpc", orjson.dumps({"id": ok_id, "src": PLUG}), NOW) == (
        "unmatched_result"
    )


def test_an_answer_from_another_device_answers_nothing(shelly: ShellyConvention) -> None:
    """Anyone can publish on the gateway's answer topic: an answer whose src is not the device
    the request went to is refused (unmatched_result) and the request keeps waiting."""
    meta = last_meta(send(shelly, f"{PLUG}/status/switch:0", SWITCH_STATUS))
    rid = request_id(shelly, meta, "c-1")
    forged = orjson.dumps({"id": rid, "src": "shellyplus1-evil", "result": {}})
    assert refusal(shelly, "iotgw-shelly/rpc", forged, NOW) == "unmatched_result"
    real = send(shelly, "iotgw-shelly/rpc", {"id": rid, "src": PLUG, "result": {}})
    assert [type(e) for e in real] == [CommandResult]


def test_commands_of_components_never_seen_are_not_found(shelly: ShellyConvention) -> None:
    """Only components the device reported offer commands."""
    meta = last_meta(send(shelly, f"{PLUG}/status/switch:0", SWITCH_STATUS))
    with pytest.raises(CommandError) as caught:
        shelly.encode_command(PLUG_ID, meta, "switch_1.set", "c-1", {"on": True})
    assert caught.value.code == "not_found"


@pytest.mark.parametrize(
    ("topic", "owned"),
    [
        (f"{PLUG}/online", True),
        (f"{PLUG}/events/rpc", True),
        (f"{PLUG}/status/switch:0", True),
        ("iotgw-shelly/rpc", True),
        (f"{PLUG}/rpc", False),  # requests: the gateway's own, or another client's
        (f"{PLUG}/status/switch:0/x", False),
        ("livingroom/online", False),  # not a Shelly's prefix
        ("esp32/status/relay", False),
    ],
)
def test_only_shelly_prefixes_are_owned(shelly: ShellyConvention, topic: str, owned: bool) -> None:
    """The broker sends every `+/online`; only first levels starting with id_prefix are Shelly's."""
    assert shelly.owns(topic) is owned


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        (f"{PLUG}/online", b"maybe", "bad_status"),
        (f"{PLUG}/status/switch:0", b"[1]", "bad_payload"),
        (f"{PLUG}/status/switch:0", b"{", "invalid_json"),
        (f"{PLUG}/events/rpc", b'{"method": "NotifyStatus"}', "bad_payload"),
        ("iotgw-shelly/rpc", b'{"id": 99, "src": "x", "result": {}}', "unmatched_result"),
    ],
)
def test_malformed_messages_raise_decode_errors(
    shelly: ShellyConvention, topic: str, payload: bytes, reason: str
) -> None:
    """Unreadable statuses, notifications and answers are refused with a reason."""
    assert refusal(shelly, topic, payload, NOW) == reason


def test_metrics_per_device_are_bounded(shelly: ShellyConvention) -> None:
    """A device announcing ever more components stops growing its meta (too_many_metrics)."""
    events: list[DeviceEvent] = []
    for i in range(300):
        events += send(shelly, f"{PLUG}/status/switch:{i}", {"apower": 1})
    assert Rejected("too_many_metrics", PLUG_ID) in events
    assert len(last_meta(events).units) <= 256


@pytest.mark.parametrize(("id_prefix", "rpc_src"), [("", "x"), ("a/b", "x"), ("shelly", "shellyx"),
                                                    ("shelly", "a/b"), ("sh*", "x")])  # fmt: skip
def test_bad_settings_are_config_errors(id_prefix: str, rpc_src: str) -> None:
    """An id prefix or rpc src that is no single level (or one the prefix would own) is refused."""
    with pytest.raises(ConfigError):
        ShellyConvention(id_prefix, rpc_src)


@given(
    leaf=st.sampled_from(["online", "events/rpc", "status/switch:0", "status/sys"]),
    payload=PAYLOADS,
)
def test_arbitrary_input_raises_nothing_but_decode_errors(leaf: str, payload: bytes) -> None:
    """Untrusted statuses, notifications and answers never raise anything but DecodeError."""
    shelly = ShellyConvention()
    for topic in (f"{PLUG}/{leaf}", "iotgw-shelly/rpc"):
        with contextlib.suppress(DecodeError):
            assert all(isinstance(e, DeviceEvent) for e in shelly.decode(topic, payload, NOW))
