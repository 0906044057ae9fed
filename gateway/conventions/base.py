"""What every convention implements, what it is told about the rest of the gateway, and the base
of the conventions that own everything under one topic prefix.

Conventions do no I/O and read no clock; they may keep state of their own (a bridge's device list,
discovery configs, commands awaiting their echo), bounded like everything device traffic can grow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from gateway.conventions.common import Echoes, Namespace, base_topic
from gateway.meta import ShapeCache
from gateway.models import DeviceEvent, DeviceMeta, Value


@dataclass(frozen=True, slots=True)
class Surroundings:
    """What `build_conventions` tells each convention once every enabled one exists."""

    #: Filters owned by the other enabled conventions and by the gateway itself: nothing device
    #: data names may lie there (docs/security.md, rule 1).
    foreign_topics: tuple[str, ...] = ()
    #: The device id tags of every other convention (`z2m`, `ha`, ...): ids this one may not make.
    foreign_tags: frozenset[str] = frozenset()
    #: The registry's cache of parsed meta declarations (None: parsed, never shared).
    shapes: ShapeCache | None = None
    #: Every other enabled convention's own filters, by name (Home Assistant tells the devices
    #: another convention already reads from its own discovery of them).
    neighbours: tuple[tuple[str, tuple[str, ...]], ...] = ()


class Convention(Protocol):
    """The decoding interface the pipeline and the command router use."""

    @property
    def name(self) -> str:
        """The convention's config section (`zigbee2mqtt`), also its label in metrics."""
        ...

    @property
    def namespace(self) -> Namespace:
        """The topics this convention owns (`namespace.own`, MQTT filters) and the check that
        keeps every topic taken from device data inside them (docs/security.md, rule 1)."""
        ...

    def bind(self, surroundings: Surroundings) -> None:
        """Take what the rest of the gateway says (called once, before the first message)."""
        ...

    def subscriptions(self) -> list[str]:
        """MQTT topic filters to subscribe to."""
        ...

    def owns(self, topic: str) -> bool:
        """True if this convention decodes messages on `topic`."""
        ...

    def roots(self) -> frozenset[str] | None:
        """The first levels of every topic `owns` can accept (`iotgw` for `iotgw/#`), so the
        pipeline asks only the conventions a topic can concern; None: any first level (topics
        named at run time, device ids as the first level)."""
        ...

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        """Decode one message; raise DecodeError when nothing in it is usable."""
        ...

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        """Topic and payload that carry a validated command to `device`; raise CommandError
        (not_found) when the device offers no such command or no topic it may be sent on."""
        ...

    def owns_command_topic(self, device: str, topic: str) -> bool:
        """True if `topic` is a command topic of `device` inside this convention's namespace:
        the command service checks every topic `encode_command` built before it is published
        (docs/security.md, rule 3)."""
        ...

    def forget(self, device: str) -> list[DeviceEvent]:
        """Drop everything kept for a device the gateway forgot; return what follows from it
        (Unsubscribe for topics no longer needed)."""
        ...

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        """The broker acknowledged the publish of an encoded command (PUBACK): from now on what
        the device sends may confirm it; nothing it sent before can (docs/security.md, rule 5).

        `before` is the device's latest values when the command was prepared (metric -> (ts,
        value)), for conventions that confirm by a state report showing a change. False: nothing
        the device can send will confirm this command (the router answers `unconfirmed`).
        """
        ...


class Routes:
    """Which convention decodes a topic: the first, in the configured order, whose `owns` says
    so. Only the conventions whose `roots` include the topic's first level (or that accept any)
    are asked, so a message costs a dict lookup and an `owns` or two, however many conventions
    are enabled and idle."""

    __slots__ = ("_anywhere", "_by_root")

    def __init__(self, conventions: Sequence[Convention]) -> None:
        roots = [(c, c.roots()) for c in conventions]
        self._anywhere = tuple(c for c, r in roots if r is None)
        levels = {level for _, r in roots if r is not None for level in r}
        self._by_root = {
            level: tuple(c for c, r in roots if r is None or level in r) for level in levels
        }

    def owner(self, topic: str) -> Convention | None:
        for convention in self._by_root.get(topic.partition("/")[0], self._anywhere):
            if convention.owns(topic):
                return convention
        return None


class PrefixConvention:
    """A convention owning every topic under one configured prefix (Zigbee2MQTT's and Homie's
    base topic, Home Assistant's discovery prefix): the prefix and its config key, the owner
    check, the shared meta cache and the commands awaiting their echo."""

    name: ClassVar[str]
    #: The tag its device ids start with (`z2m` in `z2m.lamp`; "" for the native convention).
    tag: ClassVar[str]
    #: The config key of the prefix in the convention's section.
    prefix_key: ClassVar[str] = "base_topic"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._prefix = prefix + "/"
        self.namespace = Namespace((self._prefix + "#",))
        self._shapes: ShapeCache | None = None
        self._echoes = Echoes()

    @classmethod
    def from_config(cls, section: Any) -> Self:
        return cls(cls.prefix_from(section))

    @classmethod
    def prefix_from(cls, section: Any) -> str:
        """The configured prefix, checked (ConfigError naming the key)."""
        path = f"conventions.{cls.name}.{cls.prefix_key}"
        return base_topic(getattr(section, cls.prefix_key), path)

    def bind(self, surroundings: Surroundings) -> None:
        self.namespace = self.namespace.excluding(surroundings.foreign_topics)
        self._shapes = surroundings.shapes

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        return self._echoes.arm(device, command_id, before)

    def forget(self, device: str) -> list[DeviceEvent]:
        self._echoes.forget(device)
        return []

    def subscriptions(self) -> list[str]:
        return [self._prefix + "#"]

    def owns(self, topic: str) -> bool:
        return topic.startswith(self._prefix)

    def roots(self) -> frozenset[str] | None:
        return frozenset({self.prefix.partition("/")[0]})
