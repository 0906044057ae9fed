"""Helpers several conventions share: JSON loading, flattening, device ids, topics and the
namespace check, echoes.

Everything here treats its input as untrusted device data: nothing raises but DecodeError, and
every collection that device traffic can grow is bounded.
"""

from __future__ import annotations

import hashlib
import math
import reprlib
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import orjson
from paho.mqtt.matcher import MQTTMatcher

from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.meta import ShapeCache, parse_meta
from gateway.models import (
    CommandResult,
    DeviceEvent,
    MetaChange,
    Rejected,
    Sample,
    StatusChange,
    Value,
)
from gateway.names import DEVICE_ID_MAX, is_device_id, is_metric_name, slugify

MAX_STRING_VALUE = 256
MAX_DEPTH = 8
#: MQTT 3.1.1 §1.5.3: a topic name is a UTF-8 string of at most 65535 bytes.
MAX_TOPIC_BYTES = 65535
#: Devices a convention keeps state for; the registry has its own, usually lower, cap.
MAX_DEVICES = 65536


_SAMPLE = reprlib.Repr()
_SAMPLE.maxlevel = 2
_SAMPLE.maxstring = 40
_SAMPLE.maxother = 40


def sample(value: object) -> str:
    """A short repr of untrusted JSON for log lines: a plain repr of 1,000 nested lists recurses
    past Python's limit (RecursionError), and a large one floods the log."""
    return _SAMPLE.repr(value)[:60]


def load_json(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN, Infinity, 1e400, invalid UTF-8 and nesting deeper than 1024.
        raise DecodeError("invalid_json", str(exc)[:120]) from None


def load_json_object(payload: bytes, what: str) -> dict[str, Any]:
    body = load_json(payload)
    if not isinstance(body, dict):
        raise DecodeError("bad_payload", f"{what} must be a JSON object")
    return body


def load_text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise DecodeError("bad_payload", "not UTF-8") from None


def flatten(
    node: dict[str, Any],
    prefix: str,
    ts: float,
    samples: list[Sample],
    rejected: list[DeviceEvent],
    depth: int = 0,
    *,
    skip_null: bool = False,
) -> None:
    """Nested objects become dotted metrics; bad names and values are refused one by one.

    `skip_null`: conventions whose devices publish `null` for "not known yet" (Zigbee2MQTT) drop
    those quietly instead of counting them as bad values.
    """
    for key, value in node.items():
        metric = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth >= MAX_DEPTH:
                rejected.append(Rejected("too_deep", metric[:80]))
            else:
                flatten(value, metric + ".", ts, samples, rejected, depth + 1, skip_null=skip_null)
        elif value is None and skip_null:
            continue
        elif not is_metric_name(metric):
            rejected.append(Rejected("bad_metric_name", metric[:80]))
        elif is_value(value):
            samples.append((metric, ts, value))
        else:
            rejected.append(Rejected("bad_value", f"{metric[:80]}={sample(value)}"))


def is_finite_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_value(value: object) -> TypeGuard[Value]:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        # Beyond 2^53 a JavaScript client would silently round it.
        return -(2**53) <= value <= 2**53
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and len(value) <= MAX_STRING_VALUE


def online_status(device: str, payload: bytes) -> StatusChange:
    """`online` / `offline` in any case (native status, Tasmota LWT); empty: the retained status
    was cleared."""
    text = payload.strip().lower()
    if text == b"online":
        return StatusChange(device, True)
    if text == b"offline":
        return StatusChange(device, False)
    if not text:
        return StatusChange(device, None)
    raise DecodeError("bad_status", repr(payload[:40]))


def parse_scalar(text: str) -> Value:
    """A plain-text payload as a number when it is one, else the text itself."""
    stripped = text.strip()
    try:
        number = int(stripped)
    except ValueError:
        try:
            number_f = float(stripped)
        except ValueError:
            return text
        # "nan", "inf" and "1e400" parse as floats but are no readings.
        return number_f if math.isfinite(number_f) else text
    return number if is_value(number) else text


def scoped_id(tag: str, name: str) -> str:
    """A stable device id for a convention's own device name, unique per convention.

    A name that is already a valid id keeps its spelling (`z2m.my_plug`). Any other name (spaces,
    `/`, accents, too long) becomes a slug plus a hash of the original, so two names that slug
    alike (`kitchen/lamp`, `kitchen lamp`) still get different ids, in any arrival order.
    """
    plain = f"{tag}.{name}"
    if is_device_id(plain):
        return plain
    digest = hashlib.sha1(name.encode(errors="surrogatepass")).hexdigest()[:8]
    room = DEVICE_ID_MAX - len(tag) - len(digest) - 2
    return f"{tag}.{slugify(name, room)}-{digest}"


def is_publish_topic(topic: object) -> TypeGuard[str]:
    """True for a topic the gateway may publish to or subscribe to as a plain name.

    Wildcards would widen a publish or subscription beyond the device, and a NUL makes Mosquitto
    drop the gateway's whole connection (MQTT 3.1.1 §1.5.3, §4.7.1).
    """
    return (
        isinstance(topic, str)
        and 0 < len(topic.encode(errors="replace")) <= MAX_TOPIC_BYTES
        and not any(c in topic for c in "+#\x00")
    )


def is_topic_filter(value: object) -> TypeGuard[str]:
    """True for a valid MQTT topic filter: `+` only as a whole level, `#` only as the whole last
    level (MQTT 3.1.1 §4.7.1), no NUL, not empty."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    if len(value.encode(errors="replace")) > MAX_TOPIC_BYTES:
        return False
    levels = value.split("/")
    last = len(levels) - 1
    return all(
        ("+" not in level or level == "+") and ("#" not in level or (level == "#" and i == last))
        for i, level in enumerate(levels)
    )


class Filters:
    """A set of MQTT topic filters, asked whether any of them matches a topic.

    Matched by paho's topic trie, which follows MQTT's rules (a `#` also matches its parent level;
    wildcards at the first level never match a `$` topic, MQTT 3.1.1 §4.7.2). One extension, for
    namespaces only (never sent to a broker): a first level ending in `*` matches every first
    level that starts with what precedes it (`shelly*/online`: Shelly devices' own topics, whose
    first level is the device's id).
    """

    __slots__ = ("_matcher", "_starred", "filters")

    def __init__(self, filters: Iterable[str]) -> None:
        self.filters = tuple(dict.fromkeys(filters))
        self._matcher = MQTTMatcher()  # type: ignore[no-untyped-call]  # paho's is unannotated
        starred: dict[str, list[str]] = {}
        for topic_filter in self.filters:
            first, _, rest = topic_filter.partition("/")
            if first.endswith("*") and len(first) > 1 and rest:
                starred.setdefault(first[:-1], []).append(rest)
            else:
                self._matcher[topic_filter] = True
        self._starred = tuple((head, Filters(tails)) for head, tails in starred.items())

    def match(self, topic: str) -> bool:
        matches = self._matcher.iter_match(topic)  # type: ignore[no-untyped-call]  # as above
        if next(matches, None) is not None:
            return True
        if self._starred:
            first, _, rest = topic.partition("/")
            return any(
                first.startswith(head) and tails.match(rest) for head, tails in self._starred
            )
        return False


class Namespace:
    """The topics a convention may subscribe or publish to when device data names them
    (docs/security.md, rule 1).

    A topic is allowed when it is a plain topic (no wildcard, no NUL), not a `$` topic, inside
    the convention's own filters (or the ones it was allowed to borrow, Home Assistant's
    `allowed_topics`), and outside every filter owned by another enabled convention or by the
    gateway itself. Only `own` counts as this convention's when the others' are worked out.
    """

    __slots__ = ("_foreign", "_inside", "borrowed", "foreign", "own")

    def __init__(
        self, own: Iterable[str], borrowed: Iterable[str] = (), foreign: Iterable[str] = ()
    ) -> None:
        self.own = tuple(own)
        self.borrowed = tuple(borrowed)
        self.foreign = Filters(foreign)
        self._inside = Filters((*self.own, *self.borrowed))

    def excluding(self, foreign: Iterable[str]) -> Namespace:
        """The same namespace, minus the topics of its neighbours."""
        return Namespace(self.own, self.borrowed, foreign)

    def refusal(self, topic: object) -> str | None:
        """Why `topic` may not be used, or None when it may."""
        if not is_publish_topic(topic):
            return "not a plain topic (empty, wildcards, NUL or too long)"
        if topic.startswith("$"):
            return "a $ topic"
        if not self._inside.match(topic):
            return "outside the convention's namespace"
        if self.foreign.match(topic):
            return "owned by another convention or by the gateway"
        return None

    def allows(self, topic: object) -> TypeGuard[str]:
        return self.refusal(topic) is None


def not_its_own(device: str, topic: str) -> CommandError:
    """The refusal of a command whose topic is not the device's own (as the command service
    words it when its own check at publish time says so)."""
    return CommandError(
        "forbidden", f"the command topic {topic!r:.120} is not {device}'s own", reason="bad_topic"
    )


def same_value(a: object, b: object) -> bool:
    """Equality as a device echo means it: 254 == 254.0, but True is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


@dataclass(slots=True)
class Echo:
    """A command waiting for the device's report to show its effect (docs/security.md, rule 5).

    `key` is what the report must mention (a property, a metric, a Tasmota command); None:
    nothing the device reports can confirm this command (an entity without a state topic).
    With `metric`, the registry metric holding the device's value before the command, the
    report must show a change from that value: `expected`, or for a toggle (`expected` None)
    any other value. Without it the report is an answer in itself (Tasmota's stat/RESULT): any
    report of `key` confirms, showing `expected` if one is given.

    Armed only once the broker acknowledged the publish: a report that was already on its way
    proves nothing.
    """

    command_id: str
    key: str | None
    expected: Value | None = None
    metric: str | None = None
    armed: bool = False
    before: Value | None = None

    def confirmable(self) -> bool:
        """Whether some report can still confirm the command, given the value before it."""
        if self.key is None:
            return False
        if self.metric is None:
            return True  # the device answers
        if self.expected is None:
            return self.before is not None  # a toggle of a state never seen: nothing to compare
        # A value before that was never seen counts as different: the first report showing the
        # requested value after the acknowledgement is taken as the change.
        return self.before is None or not same_value(self.before, self.expected)

    def confirmed_by(self, value: Value) -> bool:
        if not self.armed:
            return False
        if self.metric is not None and self.expected is None:
            return not same_value(self.before, value)
        return self.expected is None or same_value(self.expected, value)


class Echoes:
    """Commands awaiting their echo, per device, bounded.

    The router times commands out on its own; an echo that never comes is simply pushed out by
    newer ones, and one that comes late is counted by the pipeline as an unmatched result.
    """

    def __init__(self, per_device: int = 16, max_devices: int = 4096) -> None:
        self._per_device = per_device
        self._max_devices = max_devices
        self._waiting: dict[str, deque[Echo]] = {}

    def __len__(self) -> int:
        return sum(len(q) for q in self._waiting.values())

    def expect(self, device: str, echo: Echo) -> None:
        """Register a command as it is encoded; it waits unarmed until `arm`."""
        queue = self._waiting.get(device)
        if queue is None:
            if len(self._waiting) >= self._max_devices:
                del self._waiting[next(iter(self._waiting))]  # the longest-waiting device
            queue = self._waiting[device] = deque(maxlen=self._per_device)
        queue.append(echo)

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        """The broker acknowledged the command: from now on a report may confirm it.

        `before` is the device's latest values as the registry held them when the command was
        prepared. False (and the echo dropped): nothing the device reports can confirm the
        command — no state to report it by, a set to the value the device already shows, a
        toggle of a state never seen, or an echo pushed out by newer commands.
        """
        queue = self._waiting.get(device)
        echo = next((e for e in queue or () if e.command_id == command_id), None)
        if echo is None:
            return False
        if echo.metric is not None:
            point = before.get(echo.metric)
            echo.before = point[1] if point is not None else None
        if not echo.confirmable():
            self._drop(device, echo)
            return False
        echo.armed = True
        return True

    def answer(self, device: str, key: str, value: Value, result: Any) -> list[DeviceEvent]:
        """Resolve the armed echoes the report `key` = `value` confirms, as `ok` results carrying
        `result`."""
        queue = self._waiting.get(device)
        if not queue:
            return []
        answered = [e for e in queue if e.key == key and e.confirmed_by(value)]
        for echo in answered:
            queue.remove(echo)
        if not queue:
            del self._waiting[device]
        return [CommandResult(device, e.command_id, "ok", result) for e in answered]

    def fail_oldest(self, device: str, error: str) -> list[DeviceEvent]:
        """Answer the oldest armed command of `device` with an error (a device's refusal)."""
        echo = next((e for e in self._waiting.get(device, ()) if e.armed), None)
        if echo is None:
            return []
        self._drop(device, echo)
        return [CommandResult(device, echo.command_id, "error", None, error[:MAX_STRING_VALUE])]

    def forget(self, device: str) -> None:
        self._waiting.pop(device, None)

    def _drop(self, device: str, echo: Echo) -> None:
        queue = self._waiting[device]
        queue.remove(echo)
        if not queue:
            del self._waiting[device]


class Described(Protocol):
    """What a convention keeps of a device's meta: the JSON it last announced."""

    meta_raw: dict[str, Any] | None


def changed_meta(
    device: Described, device_id: str, raw: dict[str, Any], shapes: ShapeCache | None
) -> MetaChange | Rejected | None:
    """The meta a convention built for a device: None when it is what was last announced, else a
    MetaChange, or the Rejected saying why it is unusable (one device's odd announcement must
    not cost the others theirs)."""
    if raw == device.meta_raw:
        return None
    device.meta_raw = raw
    try:
        return MetaChange(device_id, parse_meta(raw, shapes))
    except DecodeError as exc:
        return Rejected(exc.reason, exc.detail)


def base_topic(value: str, path: str) -> str:
    """Check a configured base topic (`zigbee2mqtt`, `homie`, ...); raise ConfigError naming it."""
    if not is_publish_topic(value) or value.startswith("/") or value.endswith("/"):
        raise ConfigError(path, "must be a topic without wildcards or a leading/trailing /")
    return value
