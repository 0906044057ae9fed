"""Plain data shared by every layer: what devices say, decoded, and what they accept.

Readings travel as tuples, not objects: the hot path creates millions of them and a tuple is the
cheapest record Python has, encodes directly to a JSON array, and needs no per-reading dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Value = float | int | bool | str
#: (metric, ts, value) as decoded from one message of one device.
Sample = tuple[str, float, Value]
#: (device, metric, ts, value): the unit the hub batches and the wire carries.
Reading = tuple[str, str, float, Value]

Status = Literal["online", "offline", "stale", "unknown"]


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """One declared command parameter: a JSON type plus optional bounds or allowed values."""

    type: Literal["number", "integer", "boolean", "string"]
    min: float | None = None
    max: float | None = None
    enum: tuple[Value, ...] | None = None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class CommandSpec:
    params: dict[str, ParamSpec] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceMeta:
    """What a device says about itself. `raw` is the validated JSON-able form sent to clients."""

    type: str = ""
    name: str = ""
    units: dict[str, str] = field(default_factory=dict)
    commands: dict[str, CommandSpec] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


# --- Events a convention decodes from one MQTT message ------------------------------------------


@dataclass(frozen=True, slots=True)
class Telemetry:
    device: str
    samples: list[Sample]


@dataclass(frozen=True, slots=True)
class StatusChange:
    device: str
    online: bool | None  # None: the retained status was cleared (empty payload)


@dataclass(frozen=True, slots=True)
class MetaChange:
    device: str
    meta: DeviceMeta | None  # None: the retained meta was cleared


@dataclass(frozen=True, slots=True)
class CommandResult:
    device: str
    command_id: str
    status: Literal["ok", "error"]
    result: Any = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Part of a message that was refused while the rest was usable (one bad metric, say)."""

    reason: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The convention needs more topics (e.g. state topics named in a discovery message)."""

    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """The convention no longer needs topics it asked for (their discovery config is gone)."""

    topics: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Publish:
    """The convention needs a message sent on its own topics, at QoS 0 and not retained (a
    Sparkplug rebirth request): fire and forget, dropped (and counted) when it cannot go out."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Removed:
    """The device withdrew itself (its discovery data or retained announcements were cleared):
    the gateway forgets it."""

    device: str


DeviceEvent = (
    Telemetry
    | StatusChange
    | MetaChange
    | CommandResult
    | Rejected
    | Subscribe
    | Unsubscribe
    | Publish
    | Removed
)


# --- The command audit trail ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One command as the audit trail keeps it: who, from where, what, and how it ended.

    Never the token itself: a principal is known by its token's name.
    """

    ts: float  # when the command was submitted (wall clock, Unix seconds)
    principal: str
    remote: str  # the client's address as the HTTP layer saw it
    via: Literal["ws", "rest"]
    device: str
    command: str
    params: dict[str, Value]
    command_id: str  # "" when refused before an id was assigned
    # ok | error | timeout | unknown | unconfirmed (the outcome), or refused (nothing published)
    status: str
    rtt_ms: float | None = None
    error: str | None = None  # the device's message, or why it was refused
