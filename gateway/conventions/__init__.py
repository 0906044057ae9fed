"""Device conventions: each module turns one family of topics into DeviceEvents and back.

A convention owns its topic layout completely; the rest of the gateway only ever sees device ids,
metrics and events. A new convention gets a config section of its own (ConventionsConfig) and an
entry in `build_conventions`; nothing in the hub or the registry changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from gateway.conventions import homeassistant, homie, native, tasmota, zigbee2mqtt
from gateway.models import DeviceEvent, DeviceMeta, Value


class Convention(Protocol):
    """The decoding interface. Implementations do no I/O and read no clock; they may keep state
    of their own (a bridge's device list, discovery configs, commands awaiting their echo)."""

    @property
    def name(self) -> str:
        """The convention's config section (`zigbee2mqtt`), also its label in metrics."""
        ...

    def subscriptions(self) -> list[str]:
        """MQTT topic filters to subscribe to."""
        ...

    def owns(self, topic: str) -> bool:
        """True if this convention decodes messages on `topic`."""
        ...

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        """Decode one message; raise DecodeError when nothing in it is usable."""
        ...

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        """Topic and payload that carry a validated command to `device`."""
        ...

    def owns_command_topic(self, device: str, topic: str) -> bool:
        """True if `topic` is one this convention publishes `device`'s commands on: the command
        service checks every topic `encode_command` built before it is published."""
        ...


ConventionFactory = Callable[[Any], Convention]


def build_conventions(settings: Any) -> list[Convention]:
    """Instantiate every enabled convention from its section of ConventionsConfig."""
    # Sections are instantiated in ConventionsConfig's field order, which is also the order the
    # pipeline asks `owns` in: the first convention that owns a topic decodes it.
    factories: dict[str, ConventionFactory] = {
        "native": native.NativeConvention.from_config,
        "zigbee2mqtt": zigbee2mqtt.Zigbee2MqttConvention.from_config,
        "tasmota": tasmota.TasmotaConvention.from_config,
        "homie": homie.HomieConvention.from_config,
        "homeassistant": homeassistant.HomeAssistantConvention.from_config,
    }
    sections = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    return [factories[name](section) for name, section in sections.items() if section.enabled]
