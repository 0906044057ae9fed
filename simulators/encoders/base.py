"""What every convention encoder provides: one device's voice on the wire, and the fleet's.

A `Speaker` turns one device's events (its announcement, a reading, a command's outcome) into the
MQTT messages its convention prescribes, and incoming command messages back into model commands.
It does no I/O and keeps no state but its names: the agent and the link publish what it returns,
so reconnects, faults and multiplexing work the same in every convention.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.models import Value
from simulators.devices import CommandRejected, DeviceModel
from simulators.wire import BadCommand

__all__ = ["BadCommand", "Encoder", "Message", "Outcome", "Request", "Speaker", "apply", "join"]

if TYPE_CHECKING:  # the roster imports the config, which validates names against the registry
    from simulators.roster import Member


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT publish. Announcements, status and answers default to QoS 1 so none is lost."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1


@dataclass(frozen=True, slots=True)
class Action:
    """One model command a wire command asks for; `key` is the wire's own name for it."""

    command: str
    params: object = field(default_factory=dict)
    key: str = ""
    write: tuple[str, Value] | None = None  # (metric, value): a property write, via model.write


@dataclass(frozen=True, slots=True)
class Request:
    """A decoded command message: what to do, and the id to answer with (native, Shelly)."""

    actions: tuple[Action, ...] = ()
    id: str = ""
    reply_to: str = ""  # where the answer goes (Shelly's `src`: answered on `<src>/rpc`)
    key: str = ""  # what a request without actions is about (Tasmota's query: an empty payload)
    refused: str = ""  # why the message asks for nothing the device can do (answered as error)


@dataclass(frozen=True, slots=True)
class Outcome:
    action: Action
    result: dict[str, Value] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def apply(model: DeviceModel, action: Action) -> Outcome:
    """Carry out one action on the model; a refusal becomes an error outcome, not an exception."""
    try:
        if action.write is not None:
            result = model.write(*action.write)
        else:
            result = model.handle(action.command, action.params)
    except CommandRejected as exc:
        return Outcome(action, error=str(exc))
    return Outcome(action, result)


class Speaker(ABC):
    """One device in one convention: the messages it publishes and the commands it reads."""

    def __init__(self, member: Member, base: str) -> None:
        self.member = member
        self.model = member.model
        self.base = base

    def connecting(self) -> None:
        """A new connection begins (before `will`): conventions that number their sessions
        (Sparkplug's bdSeq) start the next one."""
        return  # most conventions have no sessions to number

    @abstractmethod
    def will(self) -> Message | None:
        """The last will the broker publishes if the device vanishes (own connection only)."""

    @abstractmethod
    def announce(self) -> list[Message]:
        """Meta, discovery or attributes: published on every connect, before subscribing."""

    @abstractmethod
    def online(self) -> list[Message]:
        """Published once the command subscription is in place: the device is ready."""

    @abstractmethod
    def offline(self) -> list[Message]:
        """The goodbye of a clean stop (the same status the will would have given)."""

    @abstractmethod
    def command_filters(self) -> list[str]:
        """Topic filters the device subscribes to for its commands."""

    @abstractmethod
    def parse(self, topic: str, payload: bytes) -> Request | None:
        """The request a message on `topic` makes; None if the topic is not this device's.

        Raise BadCommand for a message that is this device's but unreadable.
        """

    @abstractmethod
    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        """One reading of every metric, published at the fleet's telemetry QoS; the first
        message is the one the malformed fault corrupts."""

    @abstractmethod
    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        """The convention's answer to a request, given the outcomes and the state after them."""


SpeakerFactory = Callable[["Member", str], Speaker]


@dataclass(frozen=True, slots=True)
class Encoder:
    """A convention as the simulator speaks it; registered by name in simulators.encoders."""

    name: str
    #: the convention's default base topic (`zigbee2mqtt`, `homie`, …); "" when it has none
    default_base: str
    speaker: SpeakerFactory
    #: gateway config overrides that make the gateway decode a fleet under `base`
    gateway_settings: Callable[[str], dict[str, Any]]
    #: fleet-wide messages (Zigbee2MQTT's bridge/devices), published by the first connection
    bridge: Callable[[list[Speaker], str], list[Message]] | None = None
    #: the start every topic of a fleet under `base` has (None: `<base>/`); Sparkplug's topics
    #: all start with its namespace, the base being a group id
    root: Callable[[str], str] | None = None


def on_off(value: Value) -> Value:
    """A boolean as the `ON` / `OFF` most conventions use for relays; anything else as is."""
    if isinstance(value, bool):
        return "ON" if value else "OFF"
    return value


def join(*levels: str) -> str:
    """A topic from levels, skipping an empty base (Tasmota's default layout has none)."""
    return "/".join(level for level in levels if level)
