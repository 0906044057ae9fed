"""Homie v4 and v5 decoding and command encoding, from the examples in the Homie specification.

Sources: https://homieiot.github.io/specification/spec-core-v4_0_0/ and
https://homieiot.github.io/specification/spec-core-v5_0_0/
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.conventions.homie import MAX_NODES, HomieConvention
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
from tests.support.conventions import refusal

NOW = 1_764_090_000.0
SUPER_CAR = [
    ("homie/super-car/$homie", "4.0.0"),
    ("homie/super-car/$name", "Super car"),
    ("homie/super-car/$nodes", "engine"),
    ("homie/super-car/engine/$name", "Car engine"),
    ("homie/super-car/engine/$type", "V8"),
    ("homie/super-car/engine/$properties", "speed,temperature"),
    ("homie/super-car/engine/speed/$datatype", "integer"),
    ("homie/super-car/engine/speed/$unit", "km/h"),
    ("homie/super-car/engine/temperature/$name", "Engine temperature"),
    ("homie/super-car/engine/temperature/$settable", "false"),
    ("homie/super-car/engine/temperature/$unit", "°C"),
    ("homie/super-car/engine/temperature/$datatype", "float"),
    ("homie/super-car/engine/temperature/$format", "-20:120"),
]
KITCHEN_LIGHT = [
    ("homie/kitchen-light/$name", "Kitchen light"),
    ("homie/kitchen-light/$nodes", "light"),
    ("homie/kitchen-light/light/$properties", "power,brightness,mode"),
    ("homie/kitchen-light/light/power/$datatype", "boolean"),
    ("homie/kitchen-light/light/power/$settable", "true"),
    ("homie/kitchen-light/light/brightness/$datatype", "integer"),
    ("homie/kitchen-light/light/brightness/$format", "0:100"),
    ("homie/kitchen-light/light/brightness/$unit", "%"),
    ("homie/kitchen-light/light/brightness/$settable", "true"),
    ("homie/kitchen-light/light/mode/$datatype", "enum"),
    ("homie/kitchen-light/light/mode/$format", "warm,cold,party"),
    ("homie/kitchen-light/light/mode/$settable", "true"),
    ("homie/kitchen-light/$state", "ready"),
]
DESCRIPTION_V5 = {
    "homie": "5.0",
    "version": 7,
    "name": "Super car",
    "nodes": {
        "engine": {
            "name": "Car engine",
            "type": "V8",
            "properties": {
                "temperature": {
                    "name": "Engine temperature",
                    "settable": False,
                    "unit": "°C",
                    "datatype": "float",
                    "format": "-20:120",
                },
                "target": {"datatype": "integer", "format": "10:100:5", "settable": True},
            },
        }
    },
}


@pytest.fixture
def homie() -> HomieConvention:
    return HomieConvention()


def replay(conv: HomieConvention, messages: list[tuple[str, str]]) -> list[DeviceEvent]:
    events: list[DeviceEvent] = []
    for topic, payload in messages:
        events += conv.decode(topic, payload.encode(), NOW)
    return events


def last_meta(events: list[DeviceEvent]) -> DeviceMeta:
    metas = [e.meta for e in events if isinstance(e, MetaChange)]
    assert metas, events
    assert metas[-1] is not None
    return metas[-1]


def test_v4_super_car_example_becomes_meta_once_complete(homie: HomieConvention) -> None:
    """The spec's super-car: meta is announced once every property has its $datatype."""
    events = replay(homie, SUPER_CAR)
    metas = [e for e in events if isinstance(e, MetaChange)]
    assert len(metas) == 1  # not before every property is typed, and not again for $format
    meta = last_meta(events)
    assert meta.name == "Super car"
    assert meta.units == {"engine.speed": "km/h", "engine.temperature": "°C"}
    assert meta.commands == {}
    (value,) = homie.decode("homie/super-car/engine/temperature", b"21.5", NOW)
    assert value == Telemetry("homie.super-car", [("engine.temperature", NOW, 21.5)])


def test_ready_announces_whatever_arrived(homie: HomieConvention) -> None:
    """A device that says `ready` gets its meta even if an attribute never came."""
    events = replay(
        homie,
        [
            ("homie/d1/$nodes", "n"),
            ("homie/d1/n/$properties", "p"),
            ("homie/d1/$state", "ready"),
        ],
    )
    assert events[0] == StatusChange("homie.d1", True)
    assert list(last_meta(events).raw["metrics"]) == ["n.p"]


def test_init_holds_meta_until_ready(homie: HomieConvention) -> None:
    """While a device says `init` its attributes are still arriving: one meta, at `ready`."""
    events = replay(homie, [("homie/kitchen-light/$state", "init"), *KITCHEN_LIGHT])
    metas = [e for e in events if isinstance(e, MetaChange)]
    assert len(metas) == 1
    assert set(last_meta(events).commands) == {
        "set_light_power",
        "set_light_brightness",
        "set_light_mode",
    }


@pytest.mark.parametrize(
    ("datatype", "payload", "value"),
    [
        ("integer", "42", 42),
        ("integer", "-7", -7),
        ("float", "21.5", 21.5),
        ("float", "1e3", 1000.0),
        ("boolean", "true", True),
        ("boolean", "false", False),
        ("enum", "party", "party"),
        ("string", "", ""),
        ("color", "255,255,0", "255,255,0"),
        ("datetime", "2024-01-01T10:00:00Z", "2024-01-01T10:00:00Z"),
        (None, "12", 12),
        (None, "true", True),
    ],
)
def test_values_follow_their_datatype(
    homie: HomieConvention, datatype: str | None, payload: str, value: object
) -> None:
    """Payloads are strings on the wire; the $datatype decides the reading's JSON type."""
    if datatype is not None:
        homie.decode("homie/d1/n/p/$datatype", datatype.encode(), NOW)
    (event,) = homie.decode("homie/d1/n/p", payload.encode(), NOW)
    assert isinstance(event, Telemetry)
    assert event.samples == [("n.p", NOW, value)]
    assert type(event.samples[0][2]) is type(value)


@pytest.mark.parametrize(
    ("datatype", "payload"),
    [("integer", "4.5"), ("integer", ""), ("float", "NaN"), ("float", "abc"), ("boolean", "TRUE")],
)
def test_values_that_break_their_datatype_are_refused(
    homie: HomieConvention, datatype: str, payload: str
) -> None:
    """`4.5` for an integer or `TRUE` for a boolean (case sensitive) is a bad value."""
    homie.decode("homie/d1/n/p/$datatype", datatype.encode(), NOW)
    with pytest.raises(DecodeError) as caught:
        homie.decode("homie/d1/n/p", payload.encode(), NOW)
    assert caught.value.reason == "bad_value"


@pytest.mark.parametrize(
    ("state", "online"),
    [
        ("ready", True),
        ("init", True),
        ("alert", True),
        ("sleeping", False),
        ("disconnected", False),
        ("lost", False),
    ],
)
def test_state_maps_to_status(homie: HomieConvention, state: str, online: bool | None) -> None:
    """$state: connected states are online, sleeping/disconnected/lost (the will) offline."""
    events = homie.decode("homie/d1/$state", state.encode(), NOW)
    assert events[0] == StatusChange("homie.d1", online)


def test_a_cleared_state_removes_the_device(homie: HomieConvention) -> None:
    """$state cleared: the device was removed (Removed); the rest of its retained topics being
    cleared afterwards brings nothing back."""
    replay(homie, KITCHEN_LIGHT)
    assert homie.decode("homie/kitchen-light/$state", b"", NOW) == [Removed("homie.kitchen-light")]
    for topic, _ in KITCHEN_LIGHT:
        assert homie.decode(topic, b"", NOW) == []


def test_settable_properties_become_typed_commands(homie: HomieConvention) -> None:
    """$settable properties give commands typed by $datatype, bounded by $format."""
    meta = last_meta(replay(homie, KITCHEN_LIGHT))
    assert meta.raw["commands"] == {
        "set_light_power": {"params": {"value": {"type": "boolean"}}},
        "set_light_brightness": {"params": {"value": {"type": "integer", "min": 0, "max": 100}}},
        "set_light_mode": {
            "params": {"value": {"type": "string", "enum": ["warm", "cold", "party"]}}
        },
    }


@pytest.mark.parametrize(
    ("command", "value", "payload"),
    [
        ("set_light_power", True, b"true"),
        ("set_light_brightness", 40.0, b"40"),
        ("set_light_mode", "party", b"party"),
    ],
)
def test_command_publishes_set_and_the_next_value_answers(
    homie: HomieConvention, command: str, value: object, payload: bytes
) -> None:
    """`…/<node>/<prop>/set ← true`; once armed, the property's next value showing the requested
    one is the echo that answers ok."""
    meta = last_meta(replay(homie, KITCHEN_LIGHT))
    topic, body = homie.encode_command(
        "homie.kitchen-light", meta, command, "c-1", {"value": value}
    )
    prop = command.removeprefix("set_light_")
    assert (topic, body) == (f"homie/kitchen-light/light/{prop}/set", payload)
    assert homie.arm("homie.kitchen-light", "c-1", {})
    assert homie.decode(f"homie/kitchen-light/light/{prop}/set", payload, NOW) == []
    events = homie.decode(f"homie/kitchen-light/light/{prop}", payload, NOW)
    (result,) = [e for e in events if isinstance(e, CommandResult)]
    assert (result.command_id, result.status) == ("c-1", "ok")
    assert result.result == {f"light.{prop}": events[0].samples[0][2]}  # type: ignore[union-attr]


def test_v5_description_document(homie: HomieConvention) -> None:
    """v5: `homie/5/<id>/$description` describes everything; commands go to homie/5/…/set."""
    events = homie.decode("homie/5/super-car/$description", orjson.dumps(DESCRIPTION_V5), NOW)
    meta = last_meta(events)
    assert meta.name == "Super car"
    assert meta.units == {"engine.temperature": "°C"}
    assert meta.raw["commands"] == {
        "set_engine_target": {"params": {"value": {"type": "integer", "min": 10, "max": 100}}}
    }
    topic, body = homie.encode_command(
        "homie.super-car", meta, "set_engine_target", "c", {"value": 55}
    )
    assert (topic, body) == ("homie/5/super-car/engine/target/set", b"55")
    (value,) = homie.decode("homie/5/super-car/engine/temperature", b"21.5", NOW)
    assert value == Telemetry("homie.super-car", [("engine.temperature", NOW, 21.5)])


@pytest.mark.parametrize(
    ("prop", "payload", "value"),
    [("target", b"100", 100), ("temperature", b"90.5", 90.5)],
)
def test_v5_target_is_the_value_a_property_is_moving_to(
    homie: HomieConvention, prop: str, payload: bytes, value: object
) -> None:
    """A property's `$target` (a dimmer fading to 100 %) is the metric `<node>.<prop>.target`,
    typed like the property, announced in the meta once seen; a cleared target says nothing."""
    homie.decode("homie/5/super-car/$description", orjson.dumps(DESCRIPTION_V5), NOW)
    events = homie.decode(f"homie/5/super-car/engine/{prop}/$target", payload, NOW)
    assert events[0] == Telemetry("homie.super-car", [(f"engine.{prop}.target", NOW, value)])
    assert f"engine.{prop}.target" in last_meta(events).raw["metrics"]
    again = homie.decode(f"homie/5/super-car/engine/{prop}/$target", payload, NOW)
    assert not [e for e in again if isinstance(e, MetaChange)]  # announced once
    assert homie.decode(f"homie/5/super-car/engine/{prop}/$target", b"", NOW) == []


def test_v5_target_of_the_wrong_type_is_refused(homie: HomieConvention) -> None:
    """A target that breaks its property's datatype is refused like a value (bad_value)."""
    homie.decode("homie/5/super-car/$description", orjson.dumps(DESCRIPTION_V5), NOW)
    assert refusal(homie, "homie/5/super-car/engine/target/$target", b"4.5", NOW) == "bad_value"


def test_v5_description_draft_lists_are_read(homie: HomieConvention) -> None:
    """Draft v5 documents list nodes and properties as arrays with ids; they work too."""
    draft: dict[str, Any] = {
        "homie": "5.0",
        "name": "Lamp",
        "nodes": [
            {"id": "l", "properties": [{"id": "on", "datatype": "boolean", "settable": True}]}
        ],
    }
    meta = last_meta(homie.decode("homie/5/lamp/$description", orjson.dumps(draft), NOW))
    assert set(meta.commands) == {"set_l_on"}


@pytest.mark.parametrize(
    "topic",
    [
        "homie/super-car/$homie",
        "homie/super-car/$stats/uptime",
        "homie/super-car/$fw/name",
        "homie/super-car/engine/$type",
        "homie/super-car/engine/temperature/$retained",
        "homie/5/$broadcast/alert",
    ],
)
def test_attributes_without_meaning_for_the_gateway_are_ignored(
    homie: HomieConvention, topic: str
) -> None:
    """Statistics, firmware and broadcasts are understood and skipped."""
    assert homie.decode(topic, b"x", NOW) == []


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("homie/super car/$state", b"ready", "bad_device_id"),
        ("homie/d1/$state", b"on-fire", "bad_status"),
        ("homie/d1/n/p/extra/deep", b"1", "unknown_topic"),
        ("homie/d1/n.x/p", b"1", "bad_id"),
        ("homie/5/d1/$description", b"[]", "bad_payload"),
        ("homie/d1/n/p", b"\xff", "bad_payload"),
    ],
)
def test_malformed_messages_raise_decode_errors(
    homie: HomieConvention, topic: str, payload: bytes, reason: str
) -> None:
    """Bad ids, states, topics and payloads are refused with a stable reason."""
    assert refusal(homie, topic, payload, NOW) == reason


def test_only_settable_properties_can_be_commanded(homie: HomieConvention) -> None:
    """A property that is not $settable has no command to encode."""
    meta = last_meta(replay(homie, SUPER_CAR))
    with pytest.raises(CommandError):
        homie.encode_command("homie.super-car", meta, "set_engine_temperature", "c", {"value": 1})


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@given(
    messages=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "homie/d/$state",
                    "homie/d/$nodes",
                    "homie/d/n/$properties",
                    "homie/d/n/p",
                    "homie/d/n/p/$datatype",
                    "homie/d/n/p/$format",
                    "homie/d/n/p/$settable",
                    "homie/5/d/$description",
                    "homie/d/n/p/set",
                ]
            ),
            st.binary(max_size=24) | TEXT.map(str.encode) | st.just(b"ready") | st.just(b"true"),
        ),
        max_size=12,
    )
)
def test_arbitrary_input_raises_nothing_but_decode_errors(
    messages: list[tuple[str, bytes]],
) -> None:
    """Any sequence of untrusted attribute and value messages raises nothing but DecodeError."""
    homie = HomieConvention()
    for topic, payload in messages:
        with contextlib.suppress(DecodeError):
            events = homie.decode(topic, payload, NOW)
            assert all(isinstance(e, DeviceEvent) for e in events)


def test_nodes_per_device_are_bounded(homie: HomieConvention) -> None:
    """Node attributes for more than MAX_NODES nodes are refused and counted, not kept."""
    for i in range(MAX_NODES):
        assert homie.decode(f"homie/d/n{i}/$name", b"x", NOW) == []
    assert homie.decode("homie/d/more/$name", b"x", NOW) == [Rejected("too_many_nodes", "homie.d")]
