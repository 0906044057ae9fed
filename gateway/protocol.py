"""The wire format: parse client frames into typed requests, build server frames as bytes.

Parsing raises ProtocolError with a stable code; nothing here touches sockets, so the parser can be
fuzzed on its own. Server frames are encoded with orjson, which refuses NaN (it writes null), so
every frame is strict JSON.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from gateway.errors import ProtocolError
from gateway.matching import MAX_PATTERN_LENGTH
from gateway.models import Value

PROTOCOL_VERSION = 2
MAX_PATTERNS = 64
#: The most points or buckets a ranged history request may ask for (and the default).
MAX_HISTORY_POINTS = 5000
DEFAULT_HISTORY_POINTS = 1000


class CloseCode(IntEnum):
    """Close codes; 4000-4499 mean reconnect with backoff, 4500-4999 do not reconnect."""

    GOING_AWAY = 1001
    MESSAGE_TOO_BIG = 1009
    SERVICE_RESTART = 1012  # a cluster member shutting down: reconnect now (RFC 6455 §7.4.2)
    SLOW_CONSUMER = 4000
    TOO_MANY_REQUESTS = 4001
    OUTBOX_OVERFLOW = 4002
    UNAUTHORIZED = 4500
    PROTOCOL_VIOLATION = 4501


class CloseReason:
    """Why the gateway closed a connection: the close frame's reason and a metric label, so a
    fixed vocabulary (details such as which limit go in the error frame before the close)."""

    SLOW_CONSUMER = "slow_consumer"
    SEND_TIMEOUT = "send_timeout"
    OUTBOX_OVERFLOW = "outbox_overflow"  # replies queued past ws.outbox_max_bytes (4002)
    REQUEST_RATE = "request_rate"  # history or subscribe requests past their rate limit (4001)
    PROTOCOL_ERRORS = "protocol_errors"
    REQUEST_BEFORE_AUTH = "request_before_auth"
    BAD_TOKEN = "bad_token"
    AUTH_TIMEOUT = "auth_timeout"
    CONNECTION_LIMIT = "connection_limit"
    SHUTDOWN = "shutdown"
    SERVICE_RESTART = "service_restart"  # a cluster member shutting down (1012)
    NO_PONG = "no_pong"  # a heartbeat went unanswered: the transport is cut (the peer sees 1006)


@dataclass(frozen=True, slots=True)
class Resume:
    """Where a reconnecting client's previous stream left off."""

    epoch: str
    session: str
    seq: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    id: Any
    devices: tuple[str, ...]
    metrics: tuple[str, ...] | None
    resume: Resume | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: Any
    subscription: str


@dataclass(frozen=True, slots=True)
class History:
    """Either the recent form (`since`, `limit`: the in-memory window) or the ranged form
    (`start`..`end` with at most `max_points`, from the history store); `ranged` tells which."""

    id: Any
    device: str
    metric: str
    since: float | None
    limit: int | None
    start: float | None = None  # the frame's `from`
    end: float | None = None  # the frame's `to`
    max_points: int | None = None

    @property
    def ranged(self) -> bool:
        return self.start is not None


@dataclass(frozen=True, slots=True)
class Command:
    id: Any
    device: str
    command: str
    params: dict[str, Value]
    timeout_ms: int | None


@dataclass(frozen=True, slots=True)
class Auth:
    id: Any
    token: str


@dataclass(frozen=True, slots=True)
class Ping:
    id: Any


Request = Subscribe | Unsubscribe | History | Command | Auth | Ping


def parse_request(frame: str | bytes) -> Request:
    """Parse one client text frame; raise ProtocolError(code, message, request_id)."""
    try:
        body = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_request", "frame is not valid JSON") from None
    return parse_object(body)


def parse_object(body: object) -> Request:
    """Parse an already decoded request."""
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "frame must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and not _is_valid_id(request_id):
        raise ProtocolError("bad_request", "id must be a string or a number", None)
    kind = body.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ProtocolError("unknown_type", f"unknown request type {kind!r:.40}", request_id)
    return parser(_Fields(body, request_id))


def _is_valid_id(value: object) -> bool:
    if isinstance(value, str):
        return len(value) <= 64
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Fields:
    """Typed access to a request's fields, raising bad_request that names the field."""

    def __init__(self, body: dict[str, Any], request_id: Any) -> None:
        self.body = body
        self.id = request_id

    def fail(self, message: str) -> ProtocolError:
        return ProtocolError("bad_request", message, self.id)

    def text(self, name: str, max_length: int = 128) -> str:
        value = self.body.get(name)
        if not isinstance(value, str) or not 0 < len(value) <= max_length:
            raise self.fail(f"{name} must be a non-empty string of at most {max_length} characters")
        return value

    def patterns(self, name: str, required: bool) -> tuple[str, ...] | None:
        value = self.body.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, list) or not 0 < len(value) <= MAX_PATTERNS:
            raise self.fail(f"{name} must be a list of 1 to {MAX_PATTERNS} patterns")
        for p in value:
            if not isinstance(p, str) or not 0 < len(p) <= MAX_PATTERN_LENGTH:
                raise self.fail(f"{name} entries must be non-empty strings")
        return tuple(value)

    def number(self, name: str) -> float | None:
        value = self.body.get(name)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(f"{name} must be a number")
        return float(value)

    def positive_int(self, name: str) -> int | None:
        value = self.body.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(f"{name} must be a positive integer")
        return value


def _subscribe(f: _Fields) -> Subscribe:
    devices = f.patterns("devices", required=True)
    assert devices is not None
    resume = f.body.get("resume")
    if resume is not None:
        if not isinstance(resume, dict):
            raise f.fail("resume must be an object with epoch, session and seq")
        inner = _Fields(resume, f.id)
        seq = resume.get("seq")
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise f.fail("resume.seq must be a non-negative integer")
        resume = Resume(inner.text("epoch", 64), inner.text("session", 64), seq)
    return Subscribe(f.id, devices, f.patterns("metrics", required=False), resume)


def _history(f: _Fields) -> History:
    device, metric = f.text("device"), f.text("metric")
    since, limit = f.number("since"), f.positive_int("limit")
    start, end, max_points = f.number("from"), f.number("to"), f.positive_int("max_points")
    if start is None:
        if end is not None or max_points is not None:
            raise f.fail("a ranged history request needs from (to and max_points are optional)")
        return History(f.id, device, metric, since, limit)
    if since is not None or limit is not None:
        raise f.fail("use from/to/max_points or since/limit, not both")
    if end is not None and end <= start:
        raise f.fail("to must be after from")
    if max_points is not None and max_points > MAX_HISTORY_POINTS:
        raise f.fail(f"max_points must be at most {MAX_HISTORY_POINTS}")
    return History(f.id, device, metric, None, None, start, end, max_points)


def _command(f: _Fields) -> Command:
    params, timeout_ms = _command_options(f)
    return Command(f.id, f.text("device"), f.text("command"), params, timeout_ms)


def parse_command_body(body: object) -> tuple[dict[str, Value], int | None]:
    """The params and timeout_ms of a REST command's decoded JSON body, by a command frame's
    rules; raise ProtocolError(bad_request)."""
    if not isinstance(body, dict):
        raise ProtocolError("bad_request", "body must be a JSON object")
    return _command_options(_Fields(body, None))


def _command_options(f: _Fields) -> tuple[dict[str, Value], int | None]:
    params = f.body.get("params", {})
    if not isinstance(params, dict):
        raise f.fail("params must be an object")
    return params, f.positive_int("timeout_ms")


_PARSERS: dict[str, Callable[[_Fields], Request]] = {
    "subscribe": _subscribe,
    "unsubscribe": lambda f: Unsubscribe(f.id, f.text("subscription", 32)),
    "history": _history,
    "command": _command,
    "auth": lambda f: Auth(f.id, f.text("token", 512)),
    "ping": lambda f: Ping(f.id),
}


# --- Server frames ------------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def error_frame(code: str, message: str, request_id: Any = None) -> bytes:
    return encode({"type": "error", "id": request_id, "code": code, "message": message})


#: The two kinds of sequenced frame (docs/protocol.md, "The stream").
READINGS = b"readings"
SNAPSHOT = b"snapshot"


def sequenced_frame(kind: bytes, seq: int, body: bytes) -> bytes:
    """A `readings` or `snapshot` frame: `body` is the rest of the object, encoded once and
    shared between the clients that get the same frame."""
    return b'{"type":"%b","seq":%d,%b}' % (kind, seq, body)


def batch_body(data: bytes, events: bytes | None) -> bytes:
    """The body of a `readings` frame: an encoded array of readings, and one of events if any."""
    if events is None:
        return b'"data":%b' % data
    return b'"data":%b,"events":%b' % (data, events)


def coalesced_body(dropped: int, data: bytes, events: bytes | None) -> bytes:
    """The body of a coalesced `readings` frame (a client that fell behind)."""
    return b'"coalesced":true,"dropped":%d,%b' % (dropped, batch_body(data, events))


def snapshot_body(subscription: str, devices: list[dict[str, Any]]) -> bytes:
    """The body of a `snapshot` frame."""
    return b'"subscription":%b,"devices":%b' % (orjson.dumps(subscription), orjson.dumps(devices))
