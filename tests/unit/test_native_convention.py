"""The native convention: `<prefix>/<device>/<leaf>` messages decoded, commands encoded."""

from __future__ import annotations

import orjson
import pytest

from gateway.config import load_config
from gateway.conventions import build_conventions
from gateway.conventions.native import NativeConvention
from gateway.errors import DecodeError
from gateway.models import CommandResult, MetaChange, Rejected, StatusChange, Telemetry

NOW = 1_764_090_000.0
native = NativeConvention(prefix="home")


def decode(leaf: str, payload: bytes | str, device: str = "thermo-1") -> list:
    raw = payload.encode() if isinstance(payload, str) else payload
    return native.decode(f"home/{device}/{leaf}", raw, NOW)


def test_subscriptions_cover_the_four_device_leaves():
    """The convention subscribes to telemetry, status, meta and result under its prefix."""
    assert sorted(native.subscriptions()) == [
        "home/+/meta",
        "home/+/result",
        "home/+/status",
        "home/+/telemetry",
    ]
    assert native.owns("home/x/telemetry")
    assert not native.owns("homework/x/telemetry")


@pytest.mark.parametrize(
    ("payload", "samples"),
    [
        ('{"temperature": 21.4, "ts": 1000.5}', [("temperature", 1000.5, 21.4)]),
        ('{"battery": {"volt": 3.7}, "ts": 5}', [("battery.volt", 5.0, 3.7)]),
        (
            '{"a": {"b": {"c": 1}}, "on": true, "mode": "heat", "ts": 2}',
            [("a.b.c", 2.0, 1), ("on", 2.0, True), ("mode", 2.0, "heat")],
        ),
        ('{"temperature": 20}', [("temperature", NOW, 20)]),
        ('{"big": 9007199254740992, "ts": 1}', [("big", 1.0, 2**53)]),
        ('{"neg": -9007199254740992, "ts": 1}', [("neg", 1.0, -(2**53))]),
        ('{"s": "' + "x" * 256 + '", "ts": 1}', [("s", 1.0, "x" * 256)]),
    ],
)
def test_telemetry_is_flattened_with_its_timestamp(payload, samples):
    """Telemetry objects become samples; nested objects give dotted names; ts or receive time."""
    assert decode("telemetry", payload) == [Telemetry("thermo-1", samples)]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ('{"t": 1, "ts": "yesterday"}', "bad_ts"),
        ('{"t": 1, "ts": true}', "bad_ts"),
        ('{"t": 1, "list": [1, 2]}', "bad_value"),
        ('{"t": 1, "n": null}', "bad_value"),
        ('{"t": 1, "big": 9007199254740993}', "bad_value"),
        ('{"t": 1, "s": "' + "x" * 257 + '"}', "bad_value"),
        ('{"t": 1, "bad\\u0001name": 2}', "bad_metric_name"),
        ('{"t": 1, "' + "m" * 129 + '": 2}', "bad_metric_name"),
    ],
)
def test_bad_parts_of_telemetry_are_rejected_and_the_rest_kept(payload, reason):
    """A bad ts or value is reported as Rejected(reason) while good metrics still decode."""
    events = decode("telemetry", payload)
    rejected = [e for e in events if isinstance(e, Rejected)]
    [telemetry] = [e for e in events if isinstance(e, Telemetry)]
    assert [r.reason for r in rejected] == [reason]
    assert ("t", NOW, 1) in telemetry.samples


def test_bad_ts_falls_back_to_receive_time():
    """A non-numeric ts is rejected and the samples carry the gateway's receive time."""
    events = decode("telemetry", '{"t": 1, "ts": "soon"}')
    assert events[-1] == Telemetry("thermo-1", [("t", NOW, 1)])


def test_nesting_beyond_the_depth_limit_is_rejected():
    """Objects nested deeper than the limit are rejected as too_deep."""
    deep: dict = {"v": 1}
    for _ in range(12):
        deep = {"n": deep}
    events = decode("telemetry", orjson.dumps({**deep, "ok": 1}))
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["too_deep"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b'{"x": 1e400}', "invalid_json"),  # orjson refuses infinity
        (b'{"x": NaN}', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "bad_payload"),
        (b'"text"', "bad_payload"),
        (b"{}", "empty_telemetry"),
        (b'{"ts": 5}', "empty_telemetry"),
    ],
)
def test_unusable_telemetry_raises_decode_error(payload, reason):
    """Telemetry with nothing usable raises DecodeError with a stable reason."""
    with pytest.raises(DecodeError) as refused:
        decode("telemetry", payload)
    assert refused.value.reason == reason


def test_telemetry_with_only_bad_values_reports_them_without_a_telemetry_event():
    """When every value is bad, only the Rejected events come back."""
    assert decode("telemetry", '{"l": [1]}') == [Rejected("bad_value", "l=[1]")]


@pytest.mark.parametrize(
    ("payload", "online"),
    [(b"online", True), (b"offline", False), (b"", None), (b" ONLINE\n", True)],
)
def test_status_payloads(payload, online):
    """Status online/offline (any case, trimmed) and an empty (cleared) retained status."""
    assert decode("status", payload) == [StatusChange("thermo-1", online)]


@pytest.mark.parametrize("payload", [b"maybe", b"1", b'{"online": true}'])
def test_garbage_status_is_refused(payload):
    """A status that is not online/offline/empty raises DecodeError bad_status."""
    with pytest.raises(DecodeError) as refused:
        decode("status", payload)
    assert refused.value.reason == "bad_status"


def test_meta_is_parsed_and_empty_meta_clears_it():
    """A meta payload gives MetaChange with parsed meta; an empty retained payload clears it."""
    [change] = decode("meta", '{"type": "thermostat", "name": "Hall", "commands": {"toggle": {}}}')
    assert isinstance(change, MetaChange)
    assert change.meta is not None
    assert change.meta.name == "Hall"
    assert list(change.meta.commands) == ["toggle"]
    assert decode("meta", b"") == [MetaChange("thermo-1", None)]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            '{"id": "c-1", "status": "ok", "result": {"target": 21}}',
            CommandResult("thermo-1", "c-1", "ok", {"target": 21}, None),
        ),
        (
            '{"id": "c-2", "status": "error", "error": "stuck"}',
            CommandResult("thermo-1", "c-2", "error", None, "stuck"),
        ),
        (
            '{"id": "c-3", "status": "error", "error": 5}',
            CommandResult("thermo-1", "c-3", "error", None, None),
        ),
    ],
)
def test_results_are_parsed(payload, expected):
    """A result with a string id and status ok/error becomes a CommandResult."""
    assert decode("result", payload) == [expected]


@pytest.mark.parametrize(
    "payload",
    ['{"status": "ok"}', '{"id": 5, "status": "ok"}', '{"id": "c", "status": "done"}', "[]"],
)
def test_malformed_results_are_refused(payload):
    """A result without a string id or with an unknown status raises DecodeError bad_result."""
    with pytest.raises(DecodeError) as refused:
        decode("result", payload)
    assert refused.value.reason == "bad_result"


@pytest.mark.parametrize(
    ("topic", "reason"),
    [
        ("home/bad$id/telemetry", "bad_device_id"),
        ("home/-leading/telemetry", "bad_device_id"),
        ("home/" + "d" * 65 + "/telemetry", "bad_device_id"),
        ("home//telemetry", "bad_device_id"),
        ("home/thermo-1/telemetry/extra", "unknown_topic"),
        ("home/thermo-1", "unknown_topic"),
        ("home/thermo-1/cmd", "unknown_topic"),
    ],
)
def test_bad_topics_are_refused(topic, reason):
    """Device ids outside the allow-list and topics with the wrong levels raise DecodeError."""
    with pytest.raises(DecodeError) as refused:
        native.decode(topic, b'{"x": 1}', NOW)
    assert refused.value.reason == reason


def test_encode_command_builds_topic_and_payload():
    """A command goes to <prefix>/<device>/cmd/<name> as {"id": ..., "params": ...}."""
    topic, payload = native.encode_command(
        "thermo-1",
        None,
        "set_target",
        "c-abc",
        {"target": 21.5},  # type: ignore[arg-type]
    )
    assert topic == "home/thermo-1/cmd/set_target"
    assert orjson.loads(payload) == {"id": "c-abc", "params": {"target": 21.5}}


def test_ids_with_another_conventions_tag_are_refused():
    """A native message for `z2m.lamp` (any leaf) is refused as foreign_device once the build
    has told native the other conventions' tags; other dotted ids stay native."""
    (built,) = build_conventions(load_config(env={}, overrides={}).conventions)
    for leaf, payload in (("telemetry", b'{"t": 1}'), ("status", b"offline"), ("meta", b"{}")):
        with pytest.raises(DecodeError) as caught:
            built.decode(f"iotgw/z2m.lamp/{leaf}", payload, NOW)
        assert caught.value.reason == "foreign_device"
    assert built.decode("iotgw/site.a/status", b"online", NOW) == [StatusChange("site.a", True)]
    assert not built.owns_command_topic("z2m.lamp", "iotgw/z2m.lamp/cmd/set_state")
