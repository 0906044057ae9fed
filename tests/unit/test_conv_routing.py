"""Several conventions enabled at once: which one decodes a topic, and the device ids they make."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.conventions import Convention, Routes, build_conventions
from gateway.models import Rejected, Subscribe

ALL = {
    f"conventions.{name}.enabled": True
    for name in ("zigbee2mqtt", "tasmota", "homie", "homeassistant")
}


@pytest.fixture
def conventions() -> list[Convention]:
    return build_conventions(load_config(env={}, overrides=ALL).conventions)


def owner(conventions: list[Convention], topic: str) -> str | None:
    """The convention the pipeline would ask to decode `topic` (the first that owns it)."""
    return next((c.name for c in conventions if c.owns(topic)), None)


def test_all_conventions_can_be_enabled_together(conventions: list[Convention]) -> None:
    """Every section builds, in the documented order; each subscribes to its own topics."""
    assert [c.name for c in conventions] == [
        "native",
        "zigbee2mqtt",
        "tasmota",
        "homie",
        "homeassistant",
    ]
    filters = [f for c in conventions for f in c.subscriptions()]
    assert len(filters) == len(set(filters))


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("iotgw/thermo-1/telemetry", "native"),
        ("zigbee2mqtt/kitchen/lamp", "zigbee2mqtt"),
        ("tele/plug/SENSOR", "tasmota"),
        ("stat/plug/RESULT", "tasmota"),
        ("homie/super-car/$state", "homie"),
        ("homie/5/super-car/$description", "homie"),
        ("homeassistant/sensor/x/config", "homeassistant"),
        ("cmnd/plug/POWER", None),
        ("somewhere/else", None),
    ],
)
def test_each_topic_has_one_owner(
    conventions: list[Convention], topic: str, expected: str | None
) -> None:
    """Topics route to their convention; topics nobody subscribed to are nobody's."""
    assert owner(conventions, topic) == expected


def test_a_discovered_state_topic_of_another_convention_stays_with_it(
    conventions: list[Convention],
) -> None:
    """Tasmota's HA discovery names tele/…/SENSOR: Home Assistant refuses another convention's
    topic (bad_topic, nothing subscribed) and the Tasmota convention keeps decoding it."""
    ha = conventions[-1]
    events = ha.decode(
        "homeassistant/sensor/218FF9_ENERGY_Total/config",
        b'{"stat_t": "tele/plug001/SENSOR", "val_tpl": "{{value_json[\'ENERGY\'][\'Total\']}}",'
        b' "dev": {"ids": ["218FF9"]}}',
        0.0,
    )
    assert "bad_topic" in [e.reason for e in events if isinstance(e, Rejected)]
    assert not [e for e in events if isinstance(e, Subscribe)]
    assert not ha.owns("tele/plug001/SENSOR")
    assert owner(conventions, "tele/plug001/SENSOR") == "tasmota"


class Counting:
    """Wraps a convention and counts how often it is asked whether it owns a topic."""

    def __init__(self, inner: Convention) -> None:
        self.inner = inner
        self.asked = 0
        self.name = inner.name

    def owns(self, topic: str) -> bool:
        self.asked += 1
        return self.inner.owns(topic)

    def roots(self) -> frozenset[str] | None:
        return self.inner.roots()


@pytest.mark.parametrize(
    "topic",
    [
        "iotgw/thermo-1/telemetry",
        "zigbee2mqtt/kitchen/lamp",
        "tele/plug/SENSOR",
        "homie/5/super-car/$description",
        "homeassistant/sensor/x/config",
        "cmnd/plug/POWER",
        "somewhere/else",
        "",
    ],
)
def test_routes_pick_the_same_owner_as_asking_everyone_in_order(
    conventions: list[Convention], topic: str
) -> None:
    """Routing by first level gives the owner the ordered scan of every convention gives."""
    found = Routes(conventions).owner(topic)
    assert (found.name if found else None) == owner(conventions, topic)


def test_a_native_message_asks_only_conventions_its_first_level_can_concern(
    conventions: list[Convention],
) -> None:
    """A native topic asks native (and the conventions whose topics may lie anywhere), never
    the idle conventions bound to other first levels."""
    counting = [Counting(c) for c in conventions]
    routes = Routes(counting)  # type: ignore[arg-type]  # duck-typed stand-ins
    for _ in range(10):
        assert routes.owner("iotgw/thermo-1/telemetry").name == "native"  # type: ignore[union-attr]
    asked = {c.name: c.asked for c in counting}
    assert asked == {
        "native": 10,
        "zigbee2mqtt": 0,
        "tasmota": 0,
        "homie": 0,
        "homeassistant": 0,
    }
