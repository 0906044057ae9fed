"""What every convention shares: the factory table, the registry's meta cache, the prefix base."""

from __future__ import annotations

import dataclasses

import orjson

from gateway.config import ConventionsConfig, load_config
from gateway.conventions import CONVENTIONS, build_conventions, id_tags
from gateway.conventions.base import PrefixConvention
from gateway.models import MetaChange
from gateway.registry import Registry

META = {"type": "plug", "metrics": {"power": {"unit": "W"}}, "commands": {"toggle": {}}}


def test_every_config_section_has_a_convention() -> None:
    """CONVENTIONS names exactly the sections of ConventionsConfig, in the same order."""
    assert list(CONVENTIONS) == [f.name for f in dataclasses.fields(ConventionsConfig)]


def test_each_convention_has_its_own_id_tag() -> None:
    """Every convention but native tags its ids, and no two share a tag."""
    assert id_tags() == {
        "z2m": "zigbee2mqtt",
        "tasmota": "tasmota",
        "homie": "homie",
        "shelly": "shelly",
        "spb": "sparkplug",
        "ha": "homeassistant",
    }


def test_conventions_parse_meta_through_the_registrys_cache() -> None:
    """Two devices announcing the same declarations share one parsed copy, kept by the registry."""
    config = load_config(env={}, overrides={})
    registry = Registry(config.registry)
    (native,) = build_conventions(config.conventions, registry.shapes)
    metas = [
        event.meta
        for device in ("plug-1", "plug-2")
        for event in native.decode(f"iotgw/{device}/meta", orjson.dumps(META), 0.0)
        if isinstance(event, MetaChange) and event.meta is not None
    ]
    assert len(metas) == 2
    assert metas[0].commands is metas[1].commands
    assert len(registry.shapes) == 1


def test_prefix_conventions_take_their_prefix_from_their_own_config_key() -> None:
    """The prefix-owning conventions read `base_topic`, `discovery_prefix` or `prefix`."""
    overrides = {
        "conventions.native.prefix": "n",
        "conventions.zigbee2mqtt.enabled": True,
        "conventions.zigbee2mqtt.base_topic": "z",
        "conventions.homie.enabled": True,
        "conventions.homie.base_topic": "h",
        "conventions.homeassistant.enabled": True,
        "conventions.homeassistant.discovery_prefix": "d",
    }
    conventions = build_conventions(load_config(env={}, overrides=overrides).conventions)
    prefixes = {c.name: c.prefix for c in conventions if isinstance(c, PrefixConvention)}
    assert prefixes == {"native": "n", "zigbee2mqtt": "z", "homie": "h", "homeassistant": "d"}
