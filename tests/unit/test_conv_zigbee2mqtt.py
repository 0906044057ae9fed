"""Zigbee2MQTT decoding and command encoding, from the examples in Zigbee2MQTT's documentation.

Sources: https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html and
https://www.zigbee2mqtt.io/guide/usage/exposes.html
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.conventions.zigbee2mqtt import Zigbee2MqttConvention
from gateway.errors import CommandError, DecodeError
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
from gateway.names import is_device_id
from tests.support.conventions import PAYLOADS, refusal

NOW = 1_764_090_000.0

STATE_ON_OFF_TOGGLE = {
    "type": "binary",
    "name": "state",
    "property": "state",
    "value_on": "ON",
    "value_off": "OFF",
    "value_toggle": "TOGGLE",
    "access": 7,
}
BRIGHTNESS = {
    "type": "numeric",
    "name": "brightness",
    "property": "brightness",
    "value_min": 0,
    "value_max": 254,
    "access": 7,
}
LIGHT = {
    "type": "light",
    "features": [
        STATE_ON_OFF_TOGGLE,
        BRIGHTNESS,
        {"type": "numeric", "name": "color_temp", "property": "color_temp", "access": 7},
        {
            "type": "composite",
            "name": "color_xy",
            "property": "color",
            "features": [
                {"type": "numeric", "name": "x", "property": "x", "access": 7},
                {"type": "numeric", "name": "y", "property": "y", "access": 7},
            ],
        },
    ],
}
BULB = {
    "ieee_address": "0x90fd9ffffe6494fc",
    "type": "Router",
    "supported": True,
    "friendly_name": "kitchen/ceiling light",
    "definition": {
        "model": "LED1624G9",
        "vendor": "IKEA",
        "description": "TRADFRI LED bulb E14/E26/E27 600 lumen, dimmable, color, opal white",
        "exposes": [
            LIGHT,
            {
                "type": "enum",
                "name": "effect",
                "property": "effect",
                "values": ["blink", "okay"],
                "access": 2,
            },
            {
                "type": "numeric",
                "name": "linkquality",
                "property": "linkquality",
                "unit": "lqi",
                "access": 1,
            },
        ],
    },
}
SENSOR = {
    "ieee_address": "0x00158d00018255df",
    "type": "EndDevice",
    "supported": True,
    "friendly_name": "0x00158d00018255df",
    "definition": {
        "model": "WSDCGQ01LM",
        "vendor": "Xiaomi",
        "exposes": [
            {
                "type": "numeric",
                "name": "temperature",
                "property": "temperature",
                "unit": "°C",
                "access": 1,
            },
            {
                "type": "binary",
                "name": "occupancy",
                "property": "occupancy",
                "value_on": True,
                "value_off": False,
                "access": 1,
            },
        ],
    },
}
UNSUPPORTED = {
    "ieee_address": "0x00169a00022256da",
    "type": "Router",
    "supported": False,
    "friendly_name": "my_sensor",
    "definition": None,
}
COORDINATOR = {
    "ieee_address": "0x00124b00120144ae",
    "type": "Coordinator",
    "friendly_name": "Coordinator",
    "definition": None,
}
BULB_ID = "z2m.kitchen-ceiling-light-fb5a61d5"


@pytest.fixture
def z2m() -> Zigbee2MqttConvention:
    return Zigbee2MqttConvention("zigbee2mqtt")


def announce(z2m: Zigbee2MqttConvention, *devices: dict[str, Any]) -> list[DeviceEvent]:
    return z2m.decode("zigbee2mqtt/bridge/devices", orjson.dumps(list(devices)), NOW)


def metas(events: list[DeviceEvent]) -> dict[str, DeviceMeta | None]:
    return {e.device: e.meta for e in events if isinstance(e, MetaChange)}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"temperature": 27.34, "humidity": 44.72}, [("temperature", 27.34), ("humidity", 44.72)]),
        ({"action": "single"}, [("action", "single")]),
        ({"occupancy": True}, [("occupancy", True)]),
        (
            {"state": "ON", "brightness": 215, "color_temp": 325},
            [("state", "ON"), ("brightness", 215), ("color_temp", 325)],
        ),
        ({"color": {"x": 0.123, "y": 0.123}}, [("color.x", 0.123), ("color.y", 0.123)]),
        ({"battery": None, "voltage": 3000}, [("voltage", 3000)]),
    ],
)
def test_state_examples_become_readings(
    z2m: Zigbee2MqttConvention, payload: dict[str, Any], expected: list[tuple[str, Any]]
) -> None:
    """Documented state payloads flatten to metrics at the receive time; nulls are skipped."""
    (event,) = z2m.decode("zigbee2mqtt/0x0fffffffffffffff", orjson.dumps(payload), NOW)
    assert event == Telemetry("z2m.0x0fffffffffffffff", [(m, NOW, v) for m, v in expected])


@pytest.mark.parametrize(
    ("name", "device_id"),
    [
        ("my_bulb", "z2m.my_bulb"),
        ("0x00158d00018255df", "z2m.0x00158d00018255df"),
        ("kitchen/floor_light", "z2m.kitchen-floor_light-57033602"),
        ("kitchen floor_light", "z2m.kitchen-floor_light-df854a39"),
        ("Küche Decke", "z2m.K-che-Decke-61b17d6e"),
    ],
)
def test_friendly_names_map_to_stable_distinct_ids(
    z2m: Zigbee2MqttConvention, name: str, device_id: str
) -> None:
    """Names with `/`, spaces or accents become valid, distinct ids that never change."""
    (event,) = z2m.decode(f"zigbee2mqtt/{name}", b'{"linkquality": 40}', NOW)
    assert isinstance(event, Telemetry)
    assert event.device == device_id
    assert is_device_id(device_id)


def test_long_names_fit_the_id_limit(z2m: Zigbee2MqttConvention) -> None:
    """A 200-character friendly name still yields an id within the 64-character allow-list."""
    (event,) = z2m.decode("zigbee2mqtt/" + "a b" * 70, b'{"x": 1}', NOW)
    assert isinstance(event, Telemetry)
    assert is_device_id(event.device)


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b'{"state":"online"}', True),
        (b'{"state":"offline"}', False),
        (b"online", True),
        (b"offline", False),
        (b"", None),
    ],
)
def test_availability_json_and_legacy_forms(
    z2m: Zigbee2MqttConvention, payload: bytes, online: bool | None
) -> None:
    """Both the JSON availability payload and the legacy plain string set the status."""
    events = z2m.decode("zigbee2mqtt/kitchen/floor_light/availability", payload, NOW)
    assert events == [StatusChange("z2m.kitchen-floor_light-57033602", online)]


def test_bridge_devices_become_meta_with_units_and_typed_commands(
    z2m: Zigbee2MqttConvention,
) -> None:
    """Exposes give units, and settable binary/numeric/enum exposes become typed commands."""
    found = metas(announce(z2m, COORDINATOR, BULB, SENSOR, UNSUPPORTED))
    assert set(found) == {BULB_ID, "z2m.0x00158d00018255df", "z2m.my_sensor"}
    bulb = found[BULB_ID]
    assert bulb is not None
    assert bulb.name == "kitchen/ceiling light"
    assert bulb.type == "LED1624G9"
    assert bulb.raw["commands"] == {
        "set_state": {"params": {"state": {"type": "string", "enum": ["ON", "OFF", "TOGGLE"]}}},
        "set_brightness": {"params": {"brightness": {"type": "number", "min": 0, "max": 254}}},
        "set_color_temp": {"params": {"color_temp": {"type": "number"}}},
        "set_effect": {"params": {"effect": {"type": "string", "enum": ["blink", "okay"]}}},
    }
    # A set-only expose (effect) is no metric; composite features nest under their property.
    assert set(bulb.raw["metrics"]) == {
        "state",
        "brightness",
        "color_temp",
        "color.x",
        "color.y",
        "linkquality",
    }
    assert bulb.units == {"linkquality": "lqi"}
    sensor = found["z2m.0x00158d00018255df"]
    assert sensor is not None
    assert sensor.units == {"temperature": "°C"}
    assert sensor.commands == {}


def test_unchanged_bridge_devices_send_no_meta_again(z2m: Zigbee2MqttConvention) -> None:
    """A republished device list announces only devices whose meta changed, or that left."""
    announce(z2m, BULB, SENSOR)
    assert metas(announce(z2m, BULB, SENSOR)) == {}
    gone = [e for e in announce(z2m, BULB) if isinstance(e, Removed)]
    assert gone == [Removed("z2m.0x00158d00018255df")]


#: The bulb's values as the registry holds them before the commands below.
BEFORE = {"state": (NOW, "OFF"), "brightness": (NOW, 10)}


@pytest.mark.parametrize(
    ("command", "params", "payload", "echo", "answered"),
    [
        ("set_state", {"state": "ON"}, {"state": "ON"}, {"state": "ON", "brightness": 3}, True),
        ("set_state", {"state": "ON"}, {"state": "ON"}, {"state": "OFF"}, False),
        ("set_state", {"state": "TOGGLE"}, {"state": "TOGGLE"}, {"state": "ON"}, True),
        ("set_state", {"state": "TOGGLE"}, {"state": "TOGGLE"}, {"state": "OFF"}, False),
        ("set_brightness", {"brightness": 128}, {"brightness": 128}, {"brightness": 128.0}, True),
        ("set_brightness", {"brightness": 128}, {"brightness": 128}, {"state": "ON"}, False),
    ],
)
def test_commands_publish_set_json_and_resolve_on_echo(
    z2m: Zigbee2MqttConvention,
    command: str,
    params: dict[str, Any],
    payload: dict[str, Any],
    echo: dict[str, Any],
    answered: bool,
) -> None:
    """Commands go to <friendly_name>/set; once armed, the state echo showing the set value (for a
    toggle, any change from the state before) answers ok."""
    meta = metas(announce(z2m, BULB))[BULB_ID]
    assert meta is not None
    topic, body = z2m.encode_command(BULB_ID, meta, command, "c-1", params)
    assert topic == "zigbee2mqtt/kitchen/ceiling light/set"
    assert orjson.loads(body) == payload
    assert z2m.arm(BULB_ID, "c-1", BEFORE)
    events = z2m.decode("zigbee2mqtt/kitchen/ceiling light", orjson.dumps(echo), NOW)
    results = [e for e in events if isinstance(e, CommandResult)]
    key = next(iter(payload))
    expected = [CommandResult(BULB_ID, "c-1", "ok", {key: echo[key]})] if answered else []
    assert results == expected


def test_an_echo_answers_once(z2m: Zigbee2MqttConvention) -> None:
    """After its echo, a command is no longer waiting: the next state answers nothing."""
    meta = metas(announce(z2m, BULB))[BULB_ID]
    assert meta is not None
    z2m.encode_command(BULB_ID, meta, "set_state", "c-1", {"state": "ON"})
    assert z2m.arm(BULB_ID, "c-1", BEFORE)
    first = z2m.decode("zigbee2mqtt/kitchen/ceiling light", b'{"state":"ON"}', NOW)
    second = z2m.decode("zigbee2mqtt/kitchen/ceiling light", b'{"state":"ON"}', NOW)
    assert [type(e) for e in first] == [Telemetry, CommandResult]
    assert [type(e) for e in second] == [Telemetry]


def test_command_for_a_device_without_exposes_is_refused(z2m: Zigbee2MqttConvention) -> None:
    """Only commands the bridge announced can be encoded; anything else is not_found."""
    announce(z2m, BULB)
    with pytest.raises(CommandError) as caught:
        z2m.encode_command("z2m.my_sensor", DeviceMeta(), "set_state", "c-1", {"state": "ON"})
    assert caught.value.code == "not_found"


@pytest.mark.parametrize(
    ("payload", "online"),
    [
        (b"online", True),
        (b"offline", False),
        (b'{"state":"online"}', True),
        (b'{"state":"offline"}', False),
        (b"", None),
    ],
)
def test_bridge_state_shows_the_bridge_as_a_device(
    z2m: Zigbee2MqttConvention, payload: bytes, online: bool | None
) -> None:
    """`bridge/state`, plain or JSON, is the status of the device `z2m.bridge`."""
    events = z2m.decode("zigbee2mqtt/bridge/state", payload, NOW)
    assert metas(events)["z2m.bridge"].type == "bridge"  # type: ignore[union-attr]
    assert StatusChange("z2m.bridge", online) in events


def test_an_offline_bridge_makes_every_device_behind_it_unreachable(
    z2m: Zigbee2MqttConvention,
) -> None:
    """Offline: every announced device shows offline and its own availability cannot say
    otherwise; back online: each shows what it last said itself (unknown if nothing)."""
    announce(z2m, BULB, SENSOR)
    z2m.decode("zigbee2mqtt/kitchen/ceiling light/availability", b"online", NOW)
    down = z2m.decode("zigbee2mqtt/bridge/state", b"offline", NOW)
    assert {e.device: e.online for e in down if isinstance(e, StatusChange)} == {
        "z2m.bridge": False,
        BULB_ID: False,
        "z2m.0x00158d00018255df": False,
    }
    assert z2m.decode("zigbee2mqtt/kitchen/ceiling light/availability", b"online", NOW) == []
    up = z2m.decode("zigbee2mqtt/bridge/state", b'{"state":"online"}', NOW)
    assert {e.device: e.online for e in up if isinstance(e, StatusChange)} == {
        "z2m.bridge": True,
        BULB_ID: True,
        "z2m.0x00158d00018255df": None,
    }


def test_devices_announced_while_the_bridge_is_offline_are_unreachable(
    z2m: Zigbee2MqttConvention,
) -> None:
    """Retained messages replay in any order: a device list after an offline bridge/state still
    shows its devices unreachable."""
    z2m.decode("zigbee2mqtt/bridge/state", b"offline", NOW)
    assert StatusChange(BULB_ID, False) in announce(z2m, BULB)


def test_commands_to_devices_behind_an_offline_bridge_are_refused_at_once(
    z2m: Zigbee2MqttConvention,
) -> None:
    """Nothing is published while the bridge is offline: the command is refused as
    `unavailable` (reason bridge_offline) instead of timing out; online again, it goes out."""
    meta = metas(announce(z2m, BULB))[BULB_ID]
    assert meta is not None
    z2m.decode("zigbee2mqtt/bridge/state", b"offline", NOW)
    with pytest.raises(CommandError) as caught:
        z2m.encode_command(BULB_ID, meta, "set_state", "c-1", {"state": "ON"})
    assert (caught.value.code, caught.value.reason) == ("unavailable", "bridge_offline")
    z2m.decode("zigbee2mqtt/bridge/state", b"online", NOW)
    topic, _ = z2m.encode_command(BULB_ID, meta, "set_state", "c-2", {"state": "ON"})
    assert topic == "zigbee2mqtt/kitchen/ceiling light/set"


@pytest.mark.parametrize(
    "topic",
    [
        "zigbee2mqtt/kitchen/ceiling light/set",
        "zigbee2mqtt/kitchen/ceiling light/get",
        "zigbee2mqtt/my_bulb/set/state",
        "zigbee2mqtt/bridge/logging",
        "zigbee2mqtt/bridge/response/permit_join",
    ],
)
def test_requests_and_bridge_chatter_are_ignored(z2m: Zigbee2MqttConvention, topic: str) -> None:
    """Command topics (including the gateway's own) and bridge topics are no device state."""
    assert z2m.decode(topic, b'{"state":"ON"}', NOW) == []


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("zigbee2mqtt/lamp", b"ON", "invalid_json"),
        ("zigbee2mqtt/lamp", b"[1, 2]", "bad_payload"),
        ("zigbee2mqtt/lamp", b"{}", "empty_state"),
        ("zigbee2mqtt/lamp", b'{"x": NaN}', "invalid_json"),
        ("zigbee2mqtt/lamp/availability", b"maybe", "bad_status"),
        ("zigbee2mqtt/lamp/availability", b'{"state": 1}', "bad_status"),
        ("zigbee2mqtt/bridge/devices", b'{"devices": []}', "bad_payload"),
        ("zigbee2mqtt/bridge/devices", b"\xff", "invalid_json"),
    ],
)
def test_malformed_messages_raise_decode_errors(
    z2m: Zigbee2MqttConvention, topic: str, payload: bytes, reason: str
) -> None:
    """Malformed payloads are refused with a stable reason, never another exception."""
    assert refusal(z2m, topic, payload, NOW) == reason


def test_bad_values_are_counted_but_good_ones_kept(z2m: Zigbee2MqttConvention) -> None:
    """An array value is refused on its own; the other values of the message still arrive."""
    events = z2m.decode("zigbee2mqtt/lamp", b'{"state": "ON", "scenes": [1, 2]}', NOW)
    assert events == [
        Telemetry("z2m.lamp", [("state", NOW, "ON")]),
        Rejected("bad_value", "scenes=[1, 2]"),
    ]


def test_odd_bridge_entries_are_skipped(z2m: Zigbee2MqttConvention) -> None:
    """Entries without a usable name are counted; the rest of the device list still applies."""
    events = announce(z2m, {"friendly_name": 42}, "junk", SENSOR)  # type: ignore[arg-type]
    assert Rejected("bad_device", "42") in events
    assert set(metas(events)) == {"z2m.0x00158d00018255df"}


@given(
    topic=st.text(max_size=40).map(lambda t: "zigbee2mqtt/" + t),
    payload=PAYLOADS,
)
def test_arbitrary_input_raises_nothing_but_decode_errors(topic: str, payload: bytes) -> None:
    """Untrusted topics and payloads (bridge/devices included) never raise anything else."""
    z2m = Zigbee2MqttConvention()
    announce(z2m, BULB)
    for candidate in (topic, "zigbee2mqtt/bridge/devices"):
        with contextlib.suppress(DecodeError):
            events = z2m.decode(candidate, payload, NOW)
            assert all(isinstance(e, DeviceEvent) for e in events)
