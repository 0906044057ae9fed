"""The protocol's server frames as typed dataclasses (docs/protocol.md, v2), parsed from JSON.

Only the frame shapes are known here, never the gateway's internals: a frame that does not have
the shape the protocol documents raises FrameError, and fields the protocol may add later are
ignored (a client must not break on a newer gateway's extra limits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

#: The protocol version this client speaks (hello.protocol).
PROTOCOL = 2

#: A reading's value: what a device sent, as JSON gave it.
Value = float | int | str | bool | None


class FrameError(ValueError):
    """A server frame that is not what the protocol documents."""


@dataclass(frozen=True, slots=True)
class Limits:
    """hello.limits. The request limits default to the gateway's documented defaults when an
    older gateway does not announce them."""

    max_message_bytes: int = 65536
    max_subscriptions: int = 32
    history_length: int = 1000
    stale_after_s: float = 120.0
    history_rate: float = 20.0
    history_burst: int = 200
    history_in_flight: int = 4
    subscribe_rate: float = 5.0
    subscribe_burst: int = 64


@dataclass(frozen=True, slots=True)
class Hello:
    protocol: int
    server: str
    epoch: str
    session: str
    auth_required: bool
    broker: str
    time: float
    limits: Limits


@dataclass(frozen=True, slots=True)
class Authenticated:
    id: Any


@dataclass(frozen=True, slots=True)
class Subscribed:
    id: Any
    subscription: str
    recovered: bool | None  # None: the subscribe carried no resume


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    id: Any
    subscription: str


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device's whole state without values, as device events carry it."""

    id: str
    status: str
    last_seen: float | None
    name: str
    type: str
    meta: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Device:
    """A device with its latest value per metric, as snapshots and GET /api/devices carry it."""

    id: str
    status: str
    last_seen: float | None
    name: str
    type: str
    meta: dict[str, Any] | None
    values: dict[str, tuple[float, Value]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reading:
    device: str
    metric: str
    ts: float
    value: Value


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """`status` (new, or its status changed), `meta` (its meta changed) or `removed`."""

    event: str
    device: DeviceInfo


@dataclass(frozen=True, slots=True)
class Readings:
    """One batch of the sequenced stream: apply `events` first, then `data`."""

    seq: int
    data: tuple[Reading, ...]
    events: tuple[DeviceEvent, ...] = ()
    coalesced: bool = False
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotFrame:
    seq: int
    subscription: str
    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class GatewayState:
    broker: str
    since: float | None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    id: Any
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Bucket:
    """[start, start + bucket_s): min, max and average of `count` numeric points."""

    start: float
    min: float
    max: float
    avg: float
    count: int


@dataclass(frozen=True, slots=True)
class History:
    """A history reply: raw `points`, or `buckets` of `bucket_s` when the range held more than
    max_points. `from_`/`to` are None for the recent form (since/limit)."""

    id: Any
    device: str
    metric: str
    points: tuple[tuple[float, Value], ...] | None
    buckets: tuple[Bucket, ...] | None = None
    bucket_s: float | None = None
    from_: float | None = None
    to: float | None = None
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class CommandAccepted:
    id: Any
    command_id: str
    timeout_ms: int


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The one outcome of a command: `status` is ok, error, timeout, unknown or unconfirmed."""

    id: Any
    command_id: str
    status: str
    result: Any
    error: str | None
    rtt_ms: float | None


@dataclass(frozen=True, slots=True)
class Pong:
    id: Any


ServerFrame = (
    Hello
    | Authenticated
    | Subscribed
    | Unsubscribed
    | Readings
    | SnapshotFrame
    | GatewayState
    | ErrorFrame
    | History
    | CommandAccepted
    | CommandResult
    | Pong
)


def parse_frame(raw: str | bytes) -> ServerFrame:
    """One server text frame as its dataclass; FrameError when it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FrameError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FrameError("not a JSON object")
    kind = body.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise FrameError(f"unknown frame type {kind!r:.40}")
    try:
        return parser(body)
    except (KeyError, TypeError, ValueError) as exc:
        raise FrameError(f"malformed {kind} frame: {exc!r:.200}") from None


def _num(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"not a number: {value!r:.40}")
    return float(value)


def _opt_num(value: Any) -> float | None:
    return None if value is None else _num(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"not a string: {value!r:.40}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"not an integer: {value!r:.40}")
    return value


def _limits(raw: Any) -> Limits:
    if not isinstance(raw, dict):
        raise TypeError("limits is not an object")
    known = Limits.__dataclass_fields__
    return Limits(**{k: v for k, v in raw.items() if k in known})


def _hello(b: dict[str, Any]) -> Hello:
    return Hello(
        _int(b["protocol"]),
        _str(b["server"]),
        _str(b["epoch"]),
        _str(b["session"]),
        b["auth"] == "required",
        _str(b["broker"]),
        _num(b["time"]),
        _limits(b["limits"]),
    )


def device_info(raw: Any) -> DeviceInfo:
    if not isinstance(raw, dict):
        raise TypeError("device is not an object")
    meta = raw.get("meta")
    return DeviceInfo(
        _str(raw["id"]),
        _str(raw.get("status", "unknown")),
        _opt_num(raw.get("last_seen")),
        str(raw.get("name") or ""),
        str(raw.get("type") or ""),
        meta if isinstance(meta, dict) else None,
    )


def device(raw: Any) -> Device:
    """A device with values (snapshot entries, GET /api/devices)."""
    info = device_info(raw)
    values: dict[str, tuple[float, Value]] = {}
    for metric, pair in (raw.get("values") or {}).items():
        if isinstance(pair, list) and len(pair) == 2:
            values[metric] = (_num(pair[0]), pair[1])
    return Device(info.id, info.status, info.last_seen, info.name, info.type, info.meta, values)


def _reading(row: Any) -> Reading:
    if not isinstance(row, list) or len(row) != 4:
        raise TypeError("a reading is [device, metric, ts, value]")
    return Reading(_str(row[0]), _str(row[1]), _num(row[2]), row[3])


def _readings(b: dict[str, Any]) -> Readings:
    events = tuple(
        DeviceEvent(_str(e["event"]), device_info(e["device"])) for e in b.get("events") or ()
    )
    return Readings(
        _int(b["seq"]),
        tuple(_reading(row) for row in b["data"]),
        events,
        b.get("coalesced") is True,
        _int(b.get("dropped", 0)),
    )


def _bucket(x: Any) -> Bucket:
    return Bucket(_num(x[0]), _num(x[1]), _num(x[2]), _num(x[3]), _int(x[4]))


def _history(b: dict[str, Any]) -> History:
    points = b.get("points")
    buckets = b.get("buckets")
    return History(
        b.get("id"),
        _str(b["device"]),
        _str(b["metric"]),
        None if points is None else tuple((_num(p[0]), p[1]) for p in points),
        None
        if buckets is None
        else tuple(
            Bucket(_num(x[0]), _num(x[1]), _num(x[2]), _num(x[3]), _int(x[4])) for x in buckets
        ),
        _opt_num(b.get("bucket_s")),
        _opt_num(b.get("from")),
        _opt_num(b.get("to")),
        b.get("truncated") is True,
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], ServerFrame]] = {
    "hello": _hello,
    "authenticated": lambda b: Authenticated(b.get("id")),
    "subscribed": lambda b: Subscribed(
        b.get("id"), _str(b["subscription"]), b.get("recovered") if "recovered" in b else None
    ),
    "unsubscribed": lambda b: Unsubscribed(b.get("id"), _str(b["subscription"])),
    "readings": _readings,
    "snapshot": lambda b: SnapshotFrame(
        _int(b["seq"]), _str(b["subscription"]), tuple(device(d) for d in b["devices"])
    ),
    "gateway": lambda b: GatewayState(_str(b["broker"]), _opt_num(b.get("since"))),
    "error": lambda b: ErrorFrame(b.get("id"), _str(b["code"]), str(b.get("message") or "")),
    "history": _history,
    "command_accepted": lambda b: CommandAccepted(
        b.get("id"), _str(b["command_id"]), _int(b["timeout_ms"])
    ),
    "command_result": lambda b: CommandResult(
        b.get("id"),
        _str(b["command_id"]),
        _str(b["status"]),
        b.get("result"),
        b.get("error") if isinstance(b.get("error"), str) else None,
        _opt_num(b.get("rtt_ms")),
    ),
    "pong": lambda b: Pong(b.get("id")),
}
