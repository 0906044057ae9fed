"""Topics taken from device data stay in their convention's namespace (docs/security.md, rule 1).

Every convention that derives topics from device data (Home Assistant discovery configs,
Zigbee2MQTT friendly names, Homie ids, Tasmota topics) refuses a topic outside the filters it
owns, a `$` topic, one with wildcards or NUL, and one owned by another enabled convention or by
the gateway (`<native prefix>/+/cmd/#`, `iotgw/sync/#`); `owns_command_topic` checks the final
topic of a command again at publish time. The last tests fuzz discovery payloads against an
oracle written independently of gateway code.
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import load_config
from gateway.conventions import Convention, build_conventions
from gateway.conventions.common import Filters, Namespace
from gateway.conventions.homeassistant import HomeAssistantConvention
from gateway.conventions.homie import HomieConvention
from gateway.conventions.native import NativeConvention
from gateway.conventions.zigbee2mqtt import Zigbee2MqttConvention
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.models import DeviceEvent, MetaChange, Rejected, Subscribe
from tests.support.params import fitting_params

ENABLE_ALL = {
    f"conventions.{name}.enabled": True
    for name in ("zigbee2mqtt", "tasmota", "homie", "shelly", "sparkplug", "homeassistant")
}
#: Outside the discovery prefix, allowed by the operator; the second also lies in Zigbee2MQTT's.
ALLOWED = ["ext/#", "zigbee2mqtt/#"]


def build(**overrides: Any) -> dict[str, Convention]:
    settings_ = {
        **ENABLE_ALL,
        "conventions.homeassistant.allowed_topics": ALLOWED,
        **overrides,
    }
    conventions = build_conventions(load_config(env={}, overrides=settings_).conventions)
    return {c.name: c for c in conventions}


def send(conv: Convention, topic: str, payload: object) -> list[DeviceEvent]:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return conv.decode(topic, body, 0.0)


def reasons(events: list[DeviceEvent]) -> list[str]:
    return [e.reason for e in events if isinstance(e, Rejected)]


def subscribed(events: list[DeviceEvent]) -> list[str]:
    return [t for e in events if isinstance(e, Subscribe) for t in e.topics]


def meta_of(events: list[DeviceEvent], device: str) -> Any:
    return next(e.meta for e in events if isinstance(e, MetaChange) and e.device == device)


# --- the shared check ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "allowed"),
    [
        ("home/a/state", True),
        ("home", True),  # `home/#` also matches its parent level (MQTT 3.1.1 §4.7.1.2)
        ("ext/x", True),
        ("home/+/state", False),
        ("home/#", False),
        ("home/a\x00", False),
        ("", False),
        ("$SYS/broker/clients", False),
        ("elsewhere/x", False),
        ("home/gw/cmd/x", False),  # inside, but the neighbour's
        (None, False),
    ],
)
def test_the_namespace_check(topic: Any, allowed: bool) -> None:
    """Plain, not `$`, inside the own or borrowed filters, outside every foreign one."""
    namespace = Namespace(["home/#"], borrowed=["ext/#"], foreign=["home/+/cmd/#"])
    assert namespace.allows(topic) is allowed
    assert (namespace.refusal(topic) is None) is allowed


def test_each_convention_declares_its_own_filters_and_keeps_off_the_others() -> None:
    """`namespace.own` per convention; every other convention's filters and the gateway's topics
    are foreign to it (native's command topics are the gateway's own, except to native)."""
    conventions = build()
    assert {name: c.namespace.own for name, c in conventions.items()} == {
        "native": ("iotgw/#",),
        "zigbee2mqtt": ("zigbee2mqtt/#",),
        "tasmota": ("tele/+/+", "stat/+/+", "cmnd/+/+"),
        "homie": ("homie/#",),
        "shelly": (
            "shelly*/online",
            "shelly*/events/rpc",
            "shelly*/status/+",
            "shelly*/rpc",
            "iotgw-shelly/rpc",
        ),
        "sparkplug": ("spBv1.0/#",),
        "homeassistant": ("homeassistant/#",),
    }
    for name, convention in conventions.items():
        foreign = set(convention.namespace.foreign.filters)
        others = {f for n, c in conventions.items() if n != name for f in c.namespace.own}
        gateway = {"iotgw/sync/#"} | ({"iotgw/+/cmd/#"} if name != "native" else set())
        assert foreign == others | gateway


# --- Home Assistant -----------------------------------------------------------------------------

HOSTILE_TOPICS = [
    "iotgw/thermo-1/cmd/set_target",  # another device's native command topic
    "zigbee2mqtt/bridge/request/permit_join",  # inside the allow-list, but Zigbee2MQTT's
    "tele/plug/SENSOR",  # Tasmota's
    "homie/car/engine/speed/set",  # Homie's
    "shellyplus1pm-a8032ab636ec/rpc",  # a Shelly's request topic
    "iotgw/sync/iotgw-1",  # the gateway's retained-state marker
    "$SYS/broker/clients/connected",
    "secret/alarm/code",  # outside the namespace
    "homeassistant/+/x",
    "homeassistant/x\x00",
]


@pytest.mark.parametrize("topic", HOSTILE_TOPICS)
@pytest.mark.parametrize("field", ["stat_t", "avty_t", "cmd_t", "~"])
def test_home_assistant_refuses_topics_outside_its_namespace(field: str, topic: str) -> None:
    """A state, availability or command topic (also through `~`) outside the discovery prefix
    and the allow-list, or another convention's or the gateway's, is refused and counted: nothing
    is subscribed, and no command is offered or published. (Shown as a device, with
    `duplicates = "show"`: suppressed, a config naming another convention's topics makes none.)"""
    ha = build(**{"conventions.homeassistant.duplicates": "show"})["homeassistant"]
    config = {"name": "x", "dev": {"ids": ["box"]}, "stat_t": "homeassistant/switch/x/state"}
    config |= {"~": topic, "cmd_t": "~"} if field == "~" else {field: topic}
    events = send(ha, "homeassistant/switch/x/config", config)
    assert "bad_topic" in reasons(events)
    assert topic not in subscribed(events)
    assert topic.startswith("homeassistant/") or not ha.owns(topic)  # not decoded as state
    with pytest.raises(CommandError):
        ha.encode_command("ha.box", meta_of(events, "ha.box"), "set_x", "c-1", {"state": "ON"})
    assert not ha.owns_command_topic("ha.box", topic)


def test_home_assistant_uses_the_prefix_and_the_allow_list() -> None:
    """Topics under the discovery prefix or in allowed_topics are used; `~` inside them too."""
    ha = build()["homeassistant"]
    events = send(
        ha,
        "homeassistant/switch/pump/config",
        {"~": "ext/pump", "stat_t": "~/state", "cmd_t": "~/set", "avty_t": "homeassistant/x/av"},
    )
    assert reasons(events) == []
    assert sorted(subscribed(events)) == ["ext/pump/state", "homeassistant/x/av"]
    topic, _ = ha.encode_command(
        "ha.pump", meta_of(events, "ha.pump"), "set_pump", "c-1", {"state": "ON"}
    )
    assert topic == "ext/pump/set"
    assert ha.owns_command_topic("ha.pump", "ext/pump/set")
    assert not ha.owns_command_topic("ha.other", "ext/pump/set")


def test_home_assistant_without_an_allow_list_stays_under_its_prefix() -> None:
    """By default only the discovery prefix is Home Assistant's: an ESPHome-style state topic
    outside it needs allowed_topics."""
    ha = HomeAssistantConvention()
    events = send(ha, "homeassistant/sensor/t/config", {"stat_t": "esp/t/state"})
    assert reasons(events) == ["bad_topic", "unsupported_component"]
    assert subscribed(events) == []


def test_a_command_topic_another_device_also_names_belongs_to_neither() -> None:
    """Device A's config naming device B's command (or state) topic: the command is refused for
    both (a token allowed A must not command B through it)."""
    ha = build()["homeassistant"]
    b = send(ha, "homeassistant/switch/b/config", {"cmd_t": "ext/b/set", "stat_t": "ext/b/st"})
    assert ha.owns_command_topic("ha.b", "ext/b/set")
    a = send(ha, "homeassistant/switch/a/config", {"cmd_t": "ext/b/set"})
    for device, events, command in (("ha.a", a, "set_a"), ("ha.b", b, "set_b")):
        assert not ha.owns_command_topic(device, "ext/b/set")
        with pytest.raises(CommandError):
            ha.encode_command(device, meta_of(events, device), command, "c", {"state": "ON"})
    c = send(ha, "homeassistant/switch/c/config", {"cmd_t": "ext/b/st"})
    assert not ha.owns_command_topic("ha.c", "ext/b/st")  # B's state topic
    assert meta_of(c, "ha.c") is not None
    send(ha, "homeassistant/switch/a/config", b"")  # A withdrawn: B's topic is B's again
    assert ha.owns_command_topic("ha.b", "ext/b/set")


@pytest.mark.parametrize(
    "allowed", [["$SYS/#"], ["a/#/b"], ["a+/b"], [""], ["a\x00"], ["$share/g/x"]]
)
def test_allowed_topics_must_be_plain_filters(allowed: list[str]) -> None:
    """allowed_topics holds MQTT filters; `$` topics and malformed filters are config errors."""
    with pytest.raises(ConfigError, match=r"allowed_topics\[0\]"):
        build(**{"conventions.homeassistant.allowed_topics": allowed})


# --- Zigbee2MQTT --------------------------------------------------------------------------------


def bridge(*names: str) -> bytes:
    exposes = [{"type": "binary", "property": "state", "value_on": "ON", "value_off": "OFF",
                "access": 7}]  # fmt: skip
    return orjson.dumps(
        [{"friendly_name": n, "definition": {"model": "M", "exposes": exposes}} for n in names]
    )


@pytest.mark.parametrize(
    "name",
    [
        "lamp/set",  # its state topic is lamp's command topic
        "lamp/set/brightness",
        "lamp/get",
        "lamp/availability",  # its state topic is lamp's availability
        "bridge/request/permit_join",
        "bridge",
        "/lamp",
        "lamp/",
        "a//b",
        "lamp\n2",
        "lamp+",
        "#",
        "",
    ],
)
def test_zigbee2mqtt_refuses_friendly_names_whose_topics_are_not_their_own(name: str) -> None:
    """Such a name is refused (bad_device) and never commanded; the other names stay."""
    z2m = build()["zigbee2mqtt"]
    events = send(z2m, "zigbee2mqtt/bridge/devices", bridge("lamp", name))
    assert reasons(events) == ["bad_device"]
    assert [e.device for e in events if isinstance(e, MetaChange)] == ["z2m.lamp"]
    assert z2m.owns_command_topic("z2m.lamp", "zigbee2mqtt/lamp/set")
    assert not z2m.owns_command_topic("z2m.lamp", f"zigbee2mqtt/{name}/set")


def test_zigbee2mqtt_refuses_a_name_whose_command_topic_another_convention_owns() -> None:
    """With Homie's base topic inside Zigbee2MQTT's, a friendly name under it is refused."""
    z2m = build(**{"conventions.homie.base_topic": "zigbee2mqtt/homie"})["zigbee2mqtt"]
    events = send(z2m, "zigbee2mqtt/bridge/devices", bridge("homie/car", "lamp"))
    assert reasons(events) == ["bad_topic"]
    assert not z2m.owns_command_topic("z2m.homie-car-0e0c4bd2", "zigbee2mqtt/homie/car/set")


# --- Homie, Tasmota, native ---------------------------------------------------------------------


def homie_light(homie: Convention, device: str = "light") -> Any:
    events: list[DeviceEvent] = []
    for leaf, payload in (
        ("$state", "init"),
        ("$nodes", "power"),
        ("power/$properties", "on"),
        ("power/on/$datatype", "boolean"),
        ("power/on/$settable", "true"),
        ("$state", "ready"),
    ):
        events += send(homie, f"homie/{device}/{leaf}", payload.encode())
    return meta_of(events, f"homie.{device}")


def test_homie_commands_only_their_own_property_topic() -> None:
    """A Homie command goes to the device's own `…/set`; other topics are not its own."""
    homie = build()["homie"]
    meta = homie_light(homie)
    topic, _ = homie.encode_command("homie.light", meta, "set_power_on", "c", {"value": True})
    assert topic == "homie/light/power/on/set"
    assert homie.owns_command_topic("homie.light", topic)
    assert not homie.owns_command_topic("homie.other", topic)
    assert not homie.owns_command_topic("homie.light", "homie/light/power/off/set")


def test_homie_refuses_a_command_topic_another_convention_owns() -> None:
    """With Zigbee2MQTT's base topic inside Homie's, a Homie device under it is not commanded."""
    homie = build(**{"conventions.zigbee2mqtt.base_topic": "homie/zb"})["homie"]
    meta = homie_light(homie, "zb")
    with pytest.raises(CommandError):
        homie.encode_command("homie.zb", meta, "set_power_on", "c", {"value": True})
    assert not homie.owns_command_topic("homie.zb", "homie/zb/power/on/set")


def test_tasmota_commands_only_their_own_command_topics() -> None:
    """A Tasmota command goes to cmnd/<its topic>/<command>; another device's is not its own."""
    tasmota = build()["tasmota"]
    events = send(tasmota, "tele/plug/STATE", {"POWER": "ON"})
    meta = meta_of(events, "tasmota.plug")
    topic, _ = tasmota.encode_command("tasmota.plug", meta, "POWER", "c", {"state": "ON"})
    assert topic == "cmnd/plug/POWER"
    assert tasmota.owns_command_topic("tasmota.plug", topic)
    assert not tasmota.owns_command_topic("tasmota.other", topic)
    assert not tasmota.owns_command_topic("tasmota.plug", "cmnd/plug/Backlog")


def test_tasmota_refuses_command_topics_another_convention_owns() -> None:
    """With the native prefix `cmnd`, every Tasmota command topic is native's: refused."""
    tasmota = build(**{"conventions.native.prefix": "cmnd"})["tasmota"]
    meta = meta_of(send(tasmota, "tele/plug/STATE", {"POWER": "ON"}), "tasmota.plug")
    with pytest.raises(CommandError):
        tasmota.encode_command("tasmota.plug", meta, "POWER", "c", {"state": "ON"})
    assert not tasmota.owns_command_topic("tasmota.plug", "cmnd/plug/POWER")


def test_native_commands_only_their_own_command_topics() -> None:
    """A native command topic is `<prefix>/<device>/cmd/<command>` of that very device."""
    native = build()["native"]
    assert native.owns_command_topic("thermo-1", "iotgw/thermo-1/cmd/set_target")
    assert not native.owns_command_topic("thermo-2", "iotgw/thermo-1/cmd/set_target")
    assert not native.owns_command_topic("thermo-1", "iotgw/thermo-1/cmd/a/b")
    assert not native.owns_command_topic("thermo-1", "iotgw/thermo-1/telemetry")
    assert isinstance(native, NativeConvention)


# --- fuzzing discovery payloads ----------------------------------------------------------------


def filter_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 matching, written here independently of the gateway's Filters."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    want, have = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have) or (level != "+" and level != have[i]):
            return False
    return len(want) == len(have)


def in_namespace(topic: str, own: list[str], foreign: list[str]) -> bool:
    return (
        bool(topic)
        and not any(c in topic for c in "+#\x00")
        and not topic.startswith("$")
        and any(filter_matches(f, topic) for f in own)
        and not any(filter_matches(f, topic) for f in foreign)
    )


OWN = {
    "zigbee2mqtt": ["zigbee2mqtt/#"],
    "homie": ["homie/#"],
    "homeassistant": ["homeassistant/#", *ALLOWED],
}
GATEWAY = ["iotgw/+/cmd/#", "iotgw/sync/#"]
EVERYONE = ["iotgw/#", "zigbee2mqtt/#", "tele/+/+", "stat/+/+", "cmnd/+/+", "homie/#",
            "homeassistant/#"]  # fmt: skip


def foreign_to(name: str) -> list[str]:
    mine = {"zigbee2mqtt": "zigbee2mqtt/#", "homie": "homie/#", "homeassistant": "homeassistant/#"}
    return [*GATEWAY, *(f for f in EVERYONE if f != mine[name])]


#: Levels that make topics land everywhere: own, borrowed, foreign, gateway, `$`, wildcards.
LEVELS = st.sampled_from(
    ["homeassistant", "ext", "zigbee2mqtt", "iotgw", "cmd", "sync", "tele", "homie", "bridge",
     "set", "get", "availability", "$SYS", "+", "#", "", "~", "a", "x\x00", "5", "request"]
)  # fmt: skip
TOPIC = st.lists(LEVELS, min_size=1, max_size=5).map("/".join)
TILDE_TOPIC = TOPIC | TOPIC.map(lambda t: "~/" + t) | TOPIC.map(lambda t: t + "/~") | st.just("~")


def assert_inside(
    name: str, conv: Convention, events: list[DeviceEvent], also_foreign: list[str] = ()
) -> None:
    """No subscription and no command topic outside the convention's namespace."""
    own, foreign = OWN[name], [*foreign_to(name), *also_foreign]
    for topic in subscribed(events):
        assert in_namespace(topic, own, foreign), topic
    for event in events:
        if not isinstance(event, MetaChange) or event.meta is None:
            continue
        for command, spec in event.meta.commands.items():
            with contextlib.suppress(CommandError):
                topic, _ = conv.encode_command(
                    event.device, event.meta, command, "c-1", fitting_params(spec)
                )
                assert in_namespace(topic, own, foreign), topic
                assert conv.owns_command_topic(event.device, topic)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(
    configs=st.lists(
        st.tuples(
            st.sampled_from(["switch", "light", "number", "select", "button", "sensor", "device"]),
            st.dictionaries(
                st.sampled_from(["stat_t", "cmd_t", "avty_t", "~", "json_attr_t"]),
                TILDE_TOPIC,
                max_size=4,
            ),
            st.lists(st.dictionaries(st.sampled_from(["t", "topic"]), TILDE_TOPIC), max_size=2),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_home_assistant_configs_stay_in_the_namespace(
    configs: list[tuple[str, dict[str, str], list[dict[str, str]]]],
) -> None:
    """Whatever topics configs name (plain, with `~`, in `avty` lists, device-based), nothing
    is subscribed or published outside Home Assistant's namespace."""
    ha = build()["homeassistant"]
    assert isinstance(ha, HomeAssistantConvention)
    for i, (component, topics, availability) in enumerate(configs):
        config: dict[str, Any] = {**topics, "dev": {"ids": [f"d{i % 2}"]}, "ops": ["a"]}
        if availability:
            config["avty"] = availability
        if component == "device":
            config = {"dev": config.pop("dev"), "cmps": {"c": {"p": "switch", **config}}}
        with contextlib.suppress(DecodeError):
            assert_inside("homeassistant", ha, send(ha, f"homeassistant/{component}/o{i}/config",
                                                    config))  # fmt: skip


NAME = st.lists(LEVELS | st.text(max_size=4), min_size=1, max_size=4).map("/".join)


@FUZZ
@given(names=st.lists(NAME, min_size=1, max_size=6))
def test_fuzzed_zigbee2mqtt_device_lists_stay_in_the_namespace(names: list[str]) -> None:
    """Whatever friendly names bridge/devices announces, commands stay in Zigbee2MQTT's
    namespace (here with Homie's base topic inside it), each on its own device's topic."""
    z2m = build(**{"conventions.homie.base_topic": "zigbee2mqtt/homie"})["zigbee2mqtt"]
    assert isinstance(z2m, Zigbee2MqttConvention)
    with contextlib.suppress(DecodeError):
        events = send(z2m, "zigbee2mqtt/bridge/devices", bridge(*names))
        assert_inside("zigbee2mqtt", z2m, events, also_foreign=["zigbee2mqtt/homie/#"])


HOMIE_ID = st.sampled_from(["car", "5", "zb", "$x", "a+b", "set", "", "A_b-9", "n"])
HOMIE_DEVICE = st.tuples(
    st.lists(HOMIE_ID, min_size=1, max_size=2).map("/".join),  # "zb", "5/zb", "a+b", ...
    st.lists(st.tuples(HOMIE_ID, HOMIE_ID), min_size=1, max_size=3),  # (node, property)
    st.sampled_from(["integer", "boolean", "enum", "string", ""]),
)


def homie_messages(device: str, props: list[tuple[str, str]], datatype: str) -> list[tuple]:
    """A Homie device announcing settable properties: v5 as a description, v4 as attributes."""
    if device.startswith("5/"):
        nodes: dict[str, Any] = {}
        for node, prop in props:
            spec = {"settable": True, "datatype": datatype, "format": "a,b"}
            nodes.setdefault(node, {"properties": {}})["properties"][prop] = spec
        return [(f"{device}/$description", orjson.dumps({"nodes": nodes}))]
    messages = [(f"{device}/$state", b"init"),
                (f"{device}/$nodes", ",".join(n for n, _ in props).encode())]  # fmt: skip
    for node, prop in props:
        messages += [(f"{device}/{node}/$properties", prop.encode()),
                     (f"{device}/{node}/{prop}/$datatype", datatype.encode()),
                     (f"{device}/{node}/{prop}/$settable", b"true")]  # fmt: skip
    return [*messages, (f"{device}/$state", b"ready")]


@FUZZ
@given(devices=st.lists(HOMIE_DEVICE, min_size=1, max_size=4))
def test_fuzzed_homie_attributes_stay_in_the_namespace(
    devices: list[tuple[str, list[tuple[str, str]], str]],
) -> None:
    """Whatever ids and attributes Homie devices announce (v4 and v5), commands stay in Homie's
    namespace (here with Zigbee2MQTT's base topic inside it), each on its own device's topic."""
    homie = build(**{"conventions.zigbee2mqtt.base_topic": "homie/zb"})["homie"]
    assert isinstance(homie, HomieConvention)
    for device in devices:
        events: list[DeviceEvent] = []
        for path, payload in homie_messages(*device):
            with contextlib.suppress(DecodeError):
                events += send(homie, f"homie/{path}", payload)
        assert_inside("homie", homie, events, also_foreign=["homie/zb/#"])


@pytest.mark.parametrize(
    ("topic", "matched"),
    [
        ("shellyplus1pm-a8032ab636ec/online", True),
        ("shelly/online", True),
        ("shellyplus1pm-a8/status/switch:0", True),
        ("shellyplus1pm-a8/status/switch:0/x", False),
        ("livingroom/online", False),
        ("online", False),
        ("$shelly/online", False),
        ("iotgw/thermo-1/cmd/x", True),
    ],
)
def test_a_starred_first_level_matches_ids_with_that_prefix(topic: str, matched: bool) -> None:
    """`shelly*/online` (namespaces only, never sent to a broker) matches first levels starting
    with `shelly`; plain filters beside it match as MQTT says."""
    filters = Filters(["shelly*/online", "shelly*/status/+", "iotgw/+/cmd/#"])
    assert filters.match(topic) is matched
