"""Tasmota decoding and command encoding, from the examples in Tasmota's documentation.

Sources: https://tasmota.github.io/docs/MQTT/ and https://tasmota.github.io/docs/Commands/
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.conventions import build_conventions
from gateway.conventions.tasmota import MAX_KEYS, TasmotaConvention
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
STATE = {
    "Time": "2019-09-22T15:09:47",
    "Uptime": "0T00:05:11",
    "UptimeSec": 311,
    "Heap": 28,
    "SleepMode": "Dynamic",
    "Sleep": 50,
    "LoadAvg": 19,
    "MqttCount": 1,
    "POWER": "OFF",
    "Wifi": {"AP": 1, "SSId": "indebuurt1", "Channel": 1, "RSSI": 88, "LinkCount": 1},
}
ENERGY = {
    "Time": "2019-09-22T15:09:47",
    "ENERGY": {
        "TotalStartTime": "2019-09-19T09:50:39",
        "Total": 0.081,
        "Yesterday": 0.028,
        "Today": 0.012,
        "Period": 0,
        "Power": 12,
        "ApparentPower": 15,
        "ReactivePower": 9,
        "Factor": 0.8,
        "Voltage": 231,
        "Current": 0.065,
    },
}
AM2301 = {
    "Time": "2019-09-22T15:09:47",
    "AM2301": {"Temperature": 24.6, "Humidity": 58.2, "DewPoint": 15.8},
    "TempUnit": "C",
}


@pytest.fixture
def tasmota() -> TasmotaConvention:
    return TasmotaConvention()


def decode(conv: TasmotaConvention, topic: str, payload: object) -> list[DeviceEvent]:
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
    ("payload", "expected"),
    [
        (
            ENERGY,
            {
                "ENERGY.TotalStartTime": "2019-09-19T09:50:39",
                "ENERGY.Total": 0.081,
                "ENERGY.Yesterday": 0.028,
                "ENERGY.Today": 0.012,
                "ENERGY.Period": 0,
                "ENERGY.Power": 12,
                "ENERGY.ApparentPower": 15,
                "ENERGY.ReactivePower": 9,
                "ENERGY.Factor": 0.8,
                "ENERGY.Voltage": 231,
                "ENERGY.Current": 0.065,
            },
        ),
        (
            AM2301,
            {"AM2301.Temperature": 24.6, "AM2301.Humidity": 58.2, "AM2301.DewPoint": 15.8},
        ),
    ],
)
def test_sensor_objects_flatten_to_metrics(
    tasmota: TasmotaConvention, payload: dict[str, Any], expected: dict[str, Any]
) -> None:
    """tele/SENSOR nests per sensor; Time and TempUnit describe the message, not readings."""
    events = decode(tasmota, "tele/tasmota_plug/SENSOR", payload)
    assert readings(events) == expected
    assert all(ts == NOW for e in events if isinstance(e, Telemetry) for _, ts, _ in e.samples)


def test_sensor_units_come_from_tasmota_fixed_units(tasmota: TasmotaConvention) -> None:
    """Energy fields get their fixed units; temperatures follow TempUnit; humidity is %."""
    decode(tasmota, "tele/tasmota_plug/SENSOR", ENERGY)
    meta = last_meta(decode(tasmota, "tele/tasmota_plug/SENSOR", AM2301))
    assert meta.units == {
        "ENERGY.Total": "kWh",
        "ENERGY.Yesterday": "kWh",
        "ENERGY.Today": "kWh",
        "ENERGY.Power": "W",
        "ENERGY.ApparentPower": "VA",
        "ENERGY.ReactivePower": "var",
        "ENERGY.Voltage": "V",
        "ENERGY.Current": "A",
        "AM2301.Temperature": "°C",
        "AM2301.DewPoint": "°C",
        "AM2301.Humidity": "%",
    }


def test_state_gives_readings_and_a_power_command(tasmota: TasmotaConvention) -> None:
    """tele/STATE values become readings, and its POWER key offers the POWER command."""
    events = decode(tasmota, "tele/tasmota_plug/STATE", STATE)
    values = readings(events)
    assert values["POWER"] == "OFF"
    assert values["Wifi.RSSI"] == 88
    assert "Time" not in values
    meta = last_meta(events)
    assert meta.name == "tasmota_plug"
    assert meta.raw["commands"] == {
        "POWER": {"params": {"state": {"type": "string", "enum": ["ON", "OFF", "TOGGLE"]}}}
    }
    again = decode(tasmota, "tele/tasmota_plug/STATE", STATE)
    assert not any(isinstance(e, MetaChange) for e in again)  # meta only when it changes


@pytest.mark.parametrize(
    ("payload", "online"),
    [(b"Online", True), (b"Offline", False), (b"online", True)],
)
def test_lwt_sets_status(tasmota: TasmotaConvention, payload: bytes, online: bool | None) -> None:
    """tele/LWT Online/Offline (the retained last will) is the device status."""
    assert decode(tasmota, "tele/tasmota_plug/LWT", payload) == [
        StatusChange("tasmota.tasmota_plug", online)
    ]


def test_a_cleared_last_will_removes_the_device(tasmota: TasmotaConvention) -> None:
    """The retained LWT cleared: the device was removed, and its commands are gone with it."""
    meta = last_meta(decode(tasmota, "tele/plug/STATE", {"POWER": "ON"}))
    assert decode(tasmota, "tele/plug/LWT", b"") == [Removed("tasmota.plug")]
    with pytest.raises(CommandError):
        tasmota.encode_command("tasmota.plug", meta, "POWER", "c-1", {"state": "ON"})


@pytest.mark.parametrize(
    ("command", "params", "payload", "answer_topic", "answer", "result"),
    [
        ("POWER", {"state": "ON"}, b"ON", "stat/plug/RESULT", {"POWER": "ON"}, {"POWER": "ON"}),
        ("POWER", {"state": "TOGGLE"}, b"TOGGLE", "stat/plug/POWER", b"OFF", {"POWER": "OFF"}),
        (
            "Dimmer",
            {"value": 40.0},
            b"40",
            "stat/plug/RESULT",
            {"POWER": "ON", "Dimmer": 40},
            {"POWER": "ON", "Dimmer": 40},
        ),
        ("Dimmer", {"value": 40}, b"40", "stat/plug/DIMMER", {"Dimmer": 40}, {"Dimmer": 40}),
    ],
)
def test_commands_go_to_cmnd_and_resolve_on_the_device_answer(
    tasmota: TasmotaConvention,
    command: str,
    params: dict[str, Any],
    payload: bytes,
    answer_topic: str,
    answer: object,
    result: dict[str, Any],
) -> None:
    """cmnd/<topic>/<Command> carries the value; once armed, stat/RESULT (or stat/<COMMAND>)
    answers ok: the device's own answer, also when it shows no change."""
    meta = last_meta(decode(tasmota, "tele/plug/STATE", {"POWER": "ON", "Dimmer": 100}))
    assert set(meta.commands) == {"POWER", "Dimmer"}
    topic, body = tasmota.encode_command("tasmota.plug", meta, command, "c-9", params)
    assert (topic, body) == (f"cmnd/plug/{command}", payload)
    assert tasmota.arm("tasmota.plug", "c-9", {"POWER": (NOW, "ON"), "Dimmer": (NOW, 100)})
    events = decode(tasmota, answer_topic, answer)
    assert [e for e in events if isinstance(e, CommandResult)] == [
        CommandResult("tasmota.plug", "c-9", "ok", result)
    ]


def test_unknown_command_answer_is_an_error(tasmota: TasmotaConvention) -> None:
    """{"Command":"Unknown"} answers the waiting command with an error, not ok."""
    meta = last_meta(decode(tasmota, "tele/plug/STATE", {"POWER": "ON"}))
    tasmota.encode_command("tasmota.plug", meta, "POWER", "c-1", {"state": "ON"})
    assert tasmota.arm("tasmota.plug", "c-1", {})
    events = decode(tasmota, "stat/plug/RESULT", {"Command": "Unknown"})
    assert events == [CommandResult("tasmota.plug", "c-1", "error", None, "Command Unknown")]


def test_result_settings_are_no_readings(tasmota: TasmotaConvention) -> None:
    """RESULT keys that are settings, not state, answer commands but are not readings."""
    decode(tasmota, "tele/plug/STATE", {"POWER": "ON", "Dimmer": 100})
    events = decode(tasmota, "stat/plug/RESULT", {"SetOption19": "OFF", "Dimmer": 30})
    assert readings(events) == {"Dimmer": 30}


def test_commands_the_device_never_showed_are_refused(tasmota: TasmotaConvention) -> None:
    """Only commands the device's state revealed can be encoded."""
    meta = last_meta(decode(tasmota, "tele/plug/STATE", {"POWER": "ON"}))
    with pytest.raises(CommandError) as caught:
        tasmota.encode_command("tasmota.plug", meta, "Dimmer", "c-1", {"value": 3})
    assert caught.value.code == "not_found"


def test_configured_full_topic_layout(tasmota: TasmotaConvention) -> None:
    """FullTopic tasmota/%topic%/%prefix%/ (the Commands page example) decodes and encodes."""
    custom = TasmotaConvention("tasmota/%topic%/%prefix%/")
    assert custom.subscriptions() == ["tasmota/+/tele/+", "tasmota/+/stat/+"]
    assert not custom.owns("tele/sonoff-mylight/STATE")
    meta = last_meta(decode(custom, "tasmota/sonoff-mylight/stat/RESULT", {"POWER1": "OFF"}))
    topic, body = custom.encode_command(
        "tasmota.sonoff-mylight", meta, "POWER1", "c-2", {"state": "TOGGLE"}
    )
    assert (topic, body) == ("tasmota/sonoff-mylight/cmnd/POWER1", b"TOGGLE")
    assert custom.arm("tasmota.sonoff-mylight", "c-2", {})
    events = decode(custom, "tasmota/sonoff-mylight/stat/RESULT", {"POWER1": "ON"})
    assert CommandResult("tasmota.sonoff-mylight", "c-2", "ok", {"POWER1": "ON"}) in events
    assert readings(events) == {"POWER1": "ON"}


@pytest.mark.parametrize(
    ("full_topic", "reason"),
    [
        ("%topic%/", "needs %prefix% exactly once"),
        ("%prefix%/%prefix%/%topic%/", "needs %prefix% exactly once"),
        ("%prefix%/%hostname%/%topic%/", "other levels must be literal"),
        ("%prefix%/+/%topic%/", "other levels must be literal"),
    ],
)
def test_unsupported_full_topics_are_config_errors(full_topic: str, reason: str) -> None:
    """A FullTopic the convention cannot match is refused at start, naming the key."""
    overrides = {"conventions.tasmota.enabled": True, "conventions.tasmota.full_topic": full_topic}
    config = load_config(env={}, overrides=overrides)
    with pytest.raises(ConfigError) as caught:
        build_conventions(config.conventions)
    assert caught.value.path == "conventions.tasmota.full_topic"
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("tele/plug/INFO2", b'{"Info2":{"WebServerMode":"Admin"}}'),
        ("tele/plug/HASS_STATE", b"{}"),
        ("stat/plug/STATUS5", b'{"StatusNET":{"Hostname":"plug"}}'),
    ],
)
def test_known_leaves_without_readings_are_ignored(
    tasmota: TasmotaConvention, topic: str, payload: bytes
) -> None:
    """Firmware, network and discovery leaves are understood and skipped, not errors."""
    assert tasmota.decode(topic, payload, NOW) == []


def test_status_answers_carry_sensor_readings(tasmota: TasmotaConvention) -> None:
    """stat/STATUS8 (StatusSNS) gives the same readings as tele/SENSOR."""
    events = decode(tasmota, "stat/plug/STATUS8", {"StatusSNS": AM2301})
    assert readings(events)["AM2301.Temperature"] == 24.6


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("tele/plug/LWT", b"Maybe", "bad_status"),
        ("tele/plug/SENSOR", b"{", "invalid_json"),
        ("tele/plug/STATE", b"[]", "bad_payload"),
        ("tele/plug/WHATEVER", b"{}", "unknown_topic"),
        ("stat/plug/POWER", b"HALF", "bad_value"),
        ("stat/plug/POWER2", b"\xff", "bad_payload"),
        ("tele/plug", b"{}", "unknown_topic"),
    ],
)
def test_malformed_messages_raise_decode_errors(
    tasmota: TasmotaConvention, topic: str, payload: bytes, reason: str
) -> None:
    """Malformed or unknown messages are refused with a stable reason."""
    assert refusal(tasmota, topic, payload, NOW) == reason


@given(
    leaf=st.sampled_from(["LWT", "STATE", "SENSOR", "RESULT", "INFO1", "POWER", "STATUS8", "X"]),
    prefix=st.sampled_from(["tele", "stat"]),
    payload=PAYLOADS,
)
def test_arbitrary_input_raises_nothing_but_decode_errors(
    leaf: str, prefix: str, payload: bytes
) -> None:
    """Untrusted payloads on every leaf never raise anything but DecodeError."""
    tasmota = TasmotaConvention()
    with contextlib.suppress(DecodeError):
        events = tasmota.decode(f"{prefix}/plug/{leaf}", payload, NOW)
        assert all(isinstance(e, DeviceEvent) for e in events)


def test_units_and_state_keys_per_device_are_bounded(tasmota: TasmotaConvention) -> None:
    """A SENSOR or STATE with more keys than MAX_KEYS keeps MAX_KEYS and counts the rest."""
    sensors = {f"S{i}": {"Temperature": 1} for i in range(MAX_KEYS + 5)}
    events = decode(tasmota, "tele/plug/SENSOR", {**sensors, "TempUnit": "C"})
    assert Rejected("too_many_metrics", "tasmota.plug") in events
    assert len(last_meta(events).units) == MAX_KEYS
    state = decode(tasmota, "tele/plug/STATE", {f"K{i}": i for i in range(MAX_KEYS + 5)})
    assert Rejected("too_many_metrics", "tasmota.plug") in state
