"""Device conventions: each module turns one family of topics into DeviceEvents and back.

A convention owns its topic layout completely; the rest of the gateway only ever sees device ids,
metrics and events. A new convention is a module with a class implementing `Convention` (its
`name`, its device id `tag`, `from_config`), an entry in `CONVENTIONS` and a config section of its
own (gateway.config.ConventionsConfig); nothing in the hub or the registry changes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gateway.conventions.base import Convention, Routes, Surroundings
from gateway.conventions.homeassistant import HomeAssistantConvention
from gateway.conventions.homie import HomieConvention
from gateway.conventions.native import NativeConvention
from gateway.conventions.shelly import ShellyConvention
from gateway.conventions.sparkplug import SparkplugConvention
from gateway.conventions.tasmota import TasmotaConvention
from gateway.conventions.zigbee2mqtt import Zigbee2MqttConvention
from gateway.meta import ShapeCache
from gateway.sync import TOPIC_ROOT as SYNC_ROOT

__all__ = [
    "CONVENTIONS",
    "Convention",
    "Routes",
    "Surroundings",
    "build_conventions",
    "id_tags",
]

ConventionClass = (
    type[NativeConvention]
    | type[Zigbee2MqttConvention]
    | type[TasmotaConvention]
    | type[HomieConvention]
    | type[ShellyConvention]
    | type[SparkplugConvention]
    | type[HomeAssistantConvention]
)

#: Config section -> the convention built from it.
CONVENTIONS: dict[str, ConventionClass] = {
    cls.name: cls
    for cls in (
        NativeConvention,
        Zigbee2MqttConvention,
        TasmotaConvention,
        HomieConvention,
        ShellyConvention,
        SparkplugConvention,
        HomeAssistantConvention,
    )
}


def id_tags() -> dict[str, str]:
    """Device id tag -> the convention whose ids carry it (`z2m` -> `zigbee2mqtt`), for every
    known convention, enabled or not: ids of one never become another's."""
    return {cls.tag: name for name, cls in CONVENTIONS.items() if cls.tag}


def build_conventions(settings: Any, shapes: ShapeCache | None = None) -> list[Convention]:
    """Instantiate every enabled convention from its section of ConventionsConfig.

    `shapes` is the registry's cache of parsed meta declarations (None: nothing shared).
    """
    # Sections are instantiated in ConventionsConfig's field order, which is also the order the
    # pipeline asks `owns` in: the first convention that owns a topic decodes it.
    sections = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    conventions: list[Convention] = [
        CONVENTIONS[name].from_config(s) for name, s in sections.items() if s.enabled
    ]
    tags = frozenset(id_tags())
    # The gateway's own topics: its retained-state marker, and the native command topics (also
    # when the native convention is off: devices may still listen there).
    commands = f"{settings.native.prefix}/+/cmd/#"
    for convention in conventions:
        reserved = [SYNC_ROOT + "#"] if convention.name == "native" else [SYNC_ROOT + "#", commands]
        reserved += [f for c in conventions if c is not convention for f in c.namespace.own]
        surroundings = Surroundings(
            foreign_topics=tuple(reserved),
            foreign_tags=tags - {CONVENTIONS[convention.name].tag},
            shapes=shapes,
            neighbours=tuple((c.name, c.namespace.own) for c in conventions if c is not convention),
        )
        convention.bind(surroundings)
    return conventions
