"""Several conventions enabled at once: which one decodes a topic, and the device ids they make."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.conventions import Convention, build_conventions
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
