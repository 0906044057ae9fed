"""Several conventions enabled at once: which one decodes a topic, and the device ids they make."""

from __future__ import annotations

import pytest

from gateway.config import load_config
from gateway.conventions import Convention, Routes, build_conventions
from gateway.errors import ConfigError
from gateway.models import MetaChange, Rejected, Subscribe

ALL = {
    f"conventions.{name}.enabled": True
    for name in ("zigbee2mqtt", "tasmota", "homie", "shelly", "sparkplug", "homeassistant")
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
        "shelly",
        "sparkplug",
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
        ("shellyplus1pm-a8032ab636ec/events/rpc", "shelly"),
        ("iotgw-shelly/rpc", "shelly"),
        ("spBv1.0/Plant1/NDATA/Edge01", "sparkplug"),
        ("livingroom/online", None),
        ("cmnd/plug/POWER", None),
        ("somewhere/else", None),
    ],
)
def test_each_topic_has_one_owner(
    conventions: list[Convention], topic: str, expected: str | None
) -> None:
    """Topics route to their convention; topics nobody subscribed to are nobody's."""
    assert owner(conventions, topic) == expected


TASMOTA_DISCOVERY = (
    "homeassistant/sensor/218FF9_ENERGY_Total/config",
    b'{"stat_t": "tele/plug001/SENSOR", "val_tpl": "{{value_json[\'ENERGY\'][\'Total\']}}",'
    b' "avty_t": "tele/plug001/LWT", "dev": {"ids": ["218FF9"]}}',
)
#: Zigbee2MQTT's own discovery of a sensor it reads (its homeassistant extension's shape).
Z2M_DISCOVERY = (
    "homeassistant/sensor/0x00158d0001a2b3c4/temperature/config",
    b'{"name": null, "device_class": "temperature", "unit_of_measurement": "\xc2\xb0C",'
    b' "state_topic": "zigbee2mqtt/0x00158d0001a2b3c4",'
    b' "value_template": "{{ value_json.temperature }}",'
    b' "availability": [{"topic": "zigbee2mqtt/bridge/state"}],'
    b' "device": {"identifiers": ["zigbee2mqtt_0x00158d0001a2b3c4"],'
    b' "name": "0x00158d0001a2b3c4"}}',
)


@pytest.mark.parametrize("discovery", [TASMOTA_DISCOVERY, Z2M_DISCOVERY])
def test_devices_another_convention_reads_are_shown_once(
    conventions: list[Convention], discovery: tuple[str, bytes]
) -> None:
    """Tasmota's and Zigbee2MQTT's own discovery of the devices they read: Home Assistant makes no
    `ha.` twin (no meta, nothing subscribed; counted as `duplicate`, not as a hostile
    bad_topic) and the dedicated convention keeps decoding the topics."""
    ha = conventions[-1]
    events = ha.decode(*discovery, 0.0)
    assert [e.reason for e in events if isinstance(e, Rejected)] == ["duplicate"]
    assert not [e for e in events if not isinstance(e, Rejected)]
    assert not ha.owns("tele/plug001/SENSOR")
    assert owner(conventions, "tele/plug001/SENSOR") == "tasmota"
    assert owner(conventions, "zigbee2mqtt/0x00158d0001a2b3c4") == "zigbee2mqtt"


@pytest.mark.parametrize("discovery", [TASMOTA_DISCOVERY, Z2M_DISCOVERY])
def test_duplicates_show_keeps_the_twin_with_its_topics_refused(
    discovery: tuple[str, bytes],
) -> None:
    """`duplicates = "show"`: the `ha.` device appears, its topics refused (bad_topic) and never
    subscribed, as before."""
    settings = {**ALL, "conventions.homeassistant.duplicates": "show"}
    ha = build_conventions(load_config(env={}, overrides=settings).conventions)[-1]
    events = ha.decode(*discovery, 0.0)
    assert "bad_topic" in [e.reason for e in events if isinstance(e, Rejected)]
    assert [e for e in events if isinstance(e, MetaChange)]
    assert not [e for e in events if isinstance(e, Subscribe)]


def test_a_config_naming_the_gateways_own_topics_is_still_refused(
    conventions: list[Convention],
) -> None:
    """Suppression is for other conventions' devices only: a config naming the gateway's command
    topics is no duplicate, and stays refused and counted."""
    ha = conventions[-1]
    events = ha.decode(
        "homeassistant/switch/evil/config", b'{"cmd_t": "iotgw/thermo-1/cmd/set_target"}', 0.0
    )
    assert "bad_topic" in [e.reason for e in events if isinstance(e, Rejected)]


def test_duplicates_must_be_suppress_or_show() -> None:
    """Any other word is a configuration error naming the key."""
    with pytest.raises(ConfigError, match=r"conventions\.homeassistant\.duplicates"):
        load_config(env={}, overrides={"conventions.homeassistant.duplicates": "link"})


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
        "shellyplus1pm-a8032ab636ec/status/switch:0",
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
        "shelly": 0,
        "sparkplug": 0,
        "homeassistant": 0,
    }
