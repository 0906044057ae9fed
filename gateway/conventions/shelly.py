"""Shelly Gen2+ devices over MQTT (https://shelly-api-docs.shelly.cloud/gen2/).

shellyplus1pm-a8032ab636ec/online           true | false                 (retained; the last will)
shellyplus1pm-a8032ab636ec/status/switch:0  {"id": 0, "output": true, "apower": 8.9, …}
shellyplus1pm-a8032ab636ec/events/rpc       {"src": "shellyplus1pm-a8032ab636ec",
                                             "method": "NotifyStatus",
                                             "params": {"ts": 1764090000.5,
                                                        "switch:0": {"apower": 9.1}}}
shellyplus1pm-a8032ab636ec/rpc              {"id": 7, "src": "iotgw-shelly",
                                             "method": "Switch.Set",
                                             "params": {"id": 0, "on": true}}  (from the gateway)
iotgw-shelly/rpc                            {"id": 7, "src": "shellyplus1pm-a8032ab636ec",
                                             "dst": "iotgw-shelly", "result": {"was_on": false}}

A device is its MQTT topic prefix (Shelly's default is its id, `<model>-<mac>`); only prefixes
starting with `conventions.shelly.id_prefix` are read. Components (`switch:0`, `cover:0`,
`light:0`, `em:0`, `temperature:0`, virtual `number:200`, …) become dotted metrics
(`switch:0.output`, `switch:0.aenergy.total`). Commands are JSON-RPC requests on `<prefix>/rpc`,
answered on `<rpc_src>/rpc` with the request's `id`: a real answer, matched to the command by
that id and to the device by the answer's `src`.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from gateway.conventions.base import Surroundings
from gateway.conventions.common import (
    MAX_DEPTH,
    MAX_DEVICES,
    MAX_STRING_VALUE,
    Namespace,
    changed_meta,
    is_finite_number,
    is_value,
    load_json_object,
    not_its_own,
    sample,
    scoped_id,
)
from gateway.conventions.common import base_topic as checked_base
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.meta import ShapeCache
from gateway.models import (
    CommandResult,
    DeviceEvent,
    DeviceMeta,
    Rejected,
    Removed,
    Sample,
    StatusChange,
    Telemetry,
    Value,
)
from gateway.names import is_metric_name

TAG = "shelly"
#: Metrics (and so meta entries) one device may have.
MAX_METRICS = 256
#: Requests awaiting their answer, across devices (the router times them out on its own).
MAX_PENDING = 4096
#: An instance component: `switch:0`, `em:0`, `number:200`. System components (`sys`, `wifi`,
#: `cloud`, `mqtt`, `ble`, …) are diagnostics, not readings.
_COMPONENT = re.compile(r"([a-z][a-z0-9]{0,31}):(\d{1,4})")
#: Keys of a component's status that are no readings (its own id, why it last changed, lists).
SKIPPED_KEYS = frozenset({"id", "source", "errors", "flags", "by_minute", "minute_ts"})
#: Units of status keys, by their last dotted part (Shelly's documented units).
UNITS = {
    "apower": "W",
    "act_power": "W",
    "aprt_power": "VA",
    "voltage": "V",
    "current": "A",
    "freq": "Hz",
    "total": "Wh",
    "tC": "°C",
    "tF": "°F",
    "rh": "%",
    "percent": "%",
    "brightness": "%",
    "current_pos": "%",
    "target_pos": "%",
    "V": "V",
}
UNIT_SUFFIXES = (("_act_power", "W"), ("_aprt_power", "VA"), ("_voltage", "V"), ("_current", "A"),
                 ("_act_energy", "Wh"), ("_freq", "Hz"))  # fmt: skip
#: Commands by component type: name suffix -> (RPC method, params spec, fixed RPC params).
COMMANDS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "switch": {
        "set": ("Switch.Set", {"on": {"type": "boolean"}}),
        "toggle": ("Switch.Toggle", {}),
    },
    "light": {
        "set": (
            "Light.Set",
            {
                "on": {"type": "boolean", "optional": True},
                "brightness": {"type": "integer", "min": 0, "max": 100, "optional": True},
            },
        ),
        "toggle": ("Light.Toggle", {}),
    },
    "cover": {
        "open": ("Cover.Open", {}),
        "close": ("Cover.Close", {}),
        "stop": ("Cover.Stop", {}),
        "go_to_position": (
            "Cover.GoToPosition",
            {"pos": {"type": "integer", "min": 0, "max": 100}},
        ),
    },
    # Virtual components (firmware 1.4+): a value the device's scripts or UI use.
    "boolean": {"set": ("Boolean.Set", {"value": {"type": "boolean"}})},
    "number": {"set": ("Number.Set", {"value": {"type": "number"}})},
    "enum": {"set": ("Enum.Set", {"value": {"type": "string"}})},
    "text": {"set": ("Text.Set", {"value": {"type": "string"}})},
}


@dataclass(slots=True)
class ShellyDevice:
    id: str
    prefix: str  # the device's MQTT topic prefix
    src: str  # what its RPC frames carry as `src` (its id; the prefix until it says)
    components: dict[str, None] = field(default_factory=dict)  # seen, in order
    units: dict[str, str] = field(default_factory=dict)
    meta_raw: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Request:
    device: str
    command_id: str


class ShellyConvention:
    name: ClassVar[str] = "shelly"
    tag: ClassVar[str] = TAG

    def __init__(
        self, id_prefix: str = "shelly", rpc_src: str = "iotgw-shelly", base_topic: str = ""
    ) -> None:
        if not id_prefix or any(c in id_prefix for c in "/+#*$\x00"):
            raise ConfigError("conventions.shelly.id_prefix", "must be a non-empty topic level")
        if not rpc_src or rpc_src.startswith(id_prefix) or any(c in rpc_src for c in "/+#$\x00"):
            raise ConfigError(
                "conventions.shelly.rpc_src", "must be one topic level not starting with id_prefix"
            )
        if base_topic:
            base_topic = checked_base(base_topic, "conventions.shelly.base_topic")
        self.id_prefix = id_prefix
        self.rpc_src = rpc_src
        self.base_topic = base_topic
        self._base = f"{base_topic}/" if base_topic else ""
        self._answers = f"{rpc_src}/rpc"
        # Under a base topic every device level is a Shelly's; at the top, only the first levels
        # starting with id_prefix (`shelly*`: a namespace-only pattern, see common.Filters).
        device = f"{self._base}+" if base_topic else f"{id_prefix}*"
        own = [f"{device}/{leaf}" for leaf in ("online", "events/rpc", "status/+", "rpc")]
        self.namespace = Namespace([*own, self._answers])
        self._devices: dict[str, ShellyDevice] = {}  # by gateway device id
        self._pending: OrderedDict[int, Request] = OrderedDict()
        self._next_id = 1
        self._shapes: ShapeCache | None = None

    @classmethod
    def from_config(cls, section: Any) -> ShellyConvention:
        return cls(section.id_prefix, section.rpc_src, section.base_topic)

    def bind(self, surroundings: Surroundings) -> None:
        self.namespace = self.namespace.excluding(surroundings.foreign_topics)
        self._shapes = surroundings.shapes

    def subscriptions(self) -> list[str]:
        # MQTT has no "starts with" filter: the broker sends every `+/online`, and `owns` keeps
        # the ones whose device level is a Shelly's.
        leaves = ("online", "events/rpc", "status/+")
        return [*(f"{self._base}+/{leaf}" for leaf in leaves), self._answers]

    def roots(self) -> frozenset[str] | None:
        if self.base_topic:
            return frozenset({self.base_topic.partition("/")[0], self.rpc_src})
        return None  # the first level is the device's id

    def owns(self, topic: str) -> bool:
        if topic == self._answers:
            return True
        if not topic.startswith(self._base):
            return False
        first, _, rest = topic[len(self._base) :].partition("/")
        if not first.startswith(self.id_prefix):
            return False
        if rest in ("online", "events/rpc"):
            return True
        component = rest.removeprefix("status/")
        return component != rest and bool(component) and "/" not in component

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        if topic == self._answers:
            return self._answer(payload)
        name, _, rest = topic[len(self._base) :].partition("/")
        if rest == "online":
            return self._online(name, payload)
        device = self._device(name)
        if rest == "events/rpc":
            return self._notification(device, load_json_object(payload, "events/rpc"), received_at)
        component = rest[len("status/") :]
        if not _COMPONENT.fullmatch(component):
            return []  # sys, wifi, cloud, mqtt, ble, …: diagnostics
        status = load_json_object(payload, component)
        return self._readings(device, {component: status}, received_at)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        known = self._devices.get(device)
        component, _, action = command.rpartition(".")
        kind, _, index = component.rpartition("_")
        spec = COMMANDS.get(kind, {}).get(action)
        if known is None or spec is None or f"{kind}:{index}" not in known.components:
            raise CommandError("not_found", f"{device} has no {command!r:.80}")
        topic = self._request_topic(known)
        if not self.namespace.allows(topic):
            raise not_its_own(device, topic)
        request_id = self._next_id
        self._next_id += 1
        if len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)  # the oldest has long timed out
        self._pending[request_id] = Request(device, command_id)
        method, _ = spec
        frame = {
            "id": request_id,
            "src": self.rpc_src,
            "method": method,
            "params": {"id": int(index), **params},
        }
        return topic, orjson.dumps(frame)

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        return True  # the device answers the request itself, naming its id

    def owns_command_topic(self, device: str, topic: str) -> bool:
        known = self._devices.get(device)
        return (
            known is not None
            and topic == self._request_topic(known)
            and self.namespace.allows(topic)
        )

    def forget(self, device: str) -> list[DeviceEvent]:
        self._devices.pop(device, None)
        for request_id in [i for i, r in self._pending.items() if r.device == device]:
            del self._pending[request_id]
        return []

    # --- decoding -------------------------------------------------------------------------

    def _request_topic(self, device: ShellyDevice) -> str:
        return f"{self._base}{device.prefix}/rpc"

    def _device(self, prefix: str) -> ShellyDevice:
        """The device whose topic prefix (below the base topic) is `prefix`."""
        device_id = scoped_id(TAG, prefix)
        device = self._devices.get(device_id)
        if device is None:
            device = ShellyDevice(device_id, prefix, prefix)
            if len(self._devices) < MAX_DEVICES:  # past the cap: decoded, not remembered
                self._devices[device_id] = device
        return device

    def _online(self, prefix: str, payload: bytes) -> list[DeviceEvent]:
        text = payload.strip().lower()
        device_id = scoped_id(TAG, prefix)
        if not text:
            # The retained will cleared: the device was removed.
            self.forget(device_id)
            return [Removed(device_id)]
        if text not in (b"true", b"false"):
            raise DecodeError("bad_status", repr(payload[:40]))
        device = self._device(prefix)
        meta = self._meta_events(device) if device.meta_raw is None else []
        return [StatusChange(device.id, text == b"true"), *meta]

    def _notification(
        self, device: ShellyDevice, frame: dict[str, Any], received_at: float
    ) -> list[DeviceEvent]:
        method, params = frame.get("method"), frame.get("params")
        if not isinstance(params, dict):
            raise DecodeError("bad_payload", "a notification needs params")
        src = frame.get("src")
        if isinstance(src, str) and 0 < len(src) <= 128 and src != device.src:
            device.src = src  # its RPC answers will carry this (and its model names its type)
            device.meta_raw = None
        ts = params.get("ts")
        when = float(ts) if is_finite_number(ts) else received_at
        if method in ("NotifyStatus", "NotifyFullStatus"):
            components = {k: v for k, v in params.items() if _COMPONENT.fullmatch(k)}
            return self._readings(device, components, when)
        if method == "NotifyEvent":
            return self._events(device, params.get("events"), when)
        return []  # other notifications (NotifyScriptStatus, …) carry no readings

    def _readings(
        self, device: ShellyDevice, components: dict[str, Any], when: float
    ) -> list[DeviceEvent]:
        samples: list[Sample] = []
        events: list[DeviceEvent] = []
        changed = device.meta_raw is None
        for component, status in components.items():
            if not isinstance(status, dict):
                events.append(Rejected("bad_payload", f"{component[:40]}: {sample(status)}"))
                continue
            _flatten(status, f"{component}.", when, samples, events)
            if component not in device.components and len(device.components) < MAX_METRICS:
                device.components[component] = None
                changed = True
        for metric, _, _ in samples:
            if metric in device.units or (unit := _unit(metric)) is None:
                continue
            if len(device.units) >= MAX_METRICS:
                events.append(Rejected("too_many_metrics", device.id))
                break
            device.units[metric] = unit
            changed = True
        if changed:  # the meta is rebuilt only when the device showed something new
            events = self._meta_events(device) + events
        return [Telemetry(device.id, samples), *events] if samples else events

    def _events(self, device: ShellyDevice, raw: object, when: float) -> list[DeviceEvent]:
        """NotifyEvent: `input:0` single_push, … as the reading `<component>.event`."""
        samples: list[Sample] = []
        for event in raw if isinstance(raw, list) else ():
            if not isinstance(event, dict):
                continue
            component, name = event.get("component"), event.get("event")
            known = isinstance(component, str) and _COMPONENT.fullmatch(component)
            if known and isinstance(name, str) and len(name) <= MAX_STRING_VALUE:
                samples.append((f"{component}.event", when, name))
        return [Telemetry(device.id, samples)] if samples else []

    def _answer(self, payload: bytes) -> list[DeviceEvent]:
        """A response frame on the gateway's own topic: matched by id, and only from the device
        the request went to (`src`)."""
        frame = load_json_object(payload, "rpc response")
        request_id = frame.get("id")
        request = self._pending.get(request_id) if isinstance(request_id, int) else None
        device = self._devices.get(request.device) if request is not None else None
        if request is None or device is None or frame.get("src") != device.src:
            raise DecodeError("unmatched_result", sample(request_id))
        del self._pending[request_id]  # type: ignore[arg-type]  # an int, checked above
        error = frame.get("error")
        if isinstance(error, dict):
            message = f"{error.get('code')}: {error.get('message')}"
            return [CommandResult(device.id, request.command_id, "error", None, message[:256])]
        result = frame.get("result")
        return [CommandResult(device.id, request.command_id, "ok", result)]

    def _meta_events(self, device: ShellyDevice) -> list[DeviceEvent]:
        commands: dict[str, Any] = {}
        for component in device.components:
            kind, _, index = component.partition(":")
            for action, (_, params) in COMMANDS.get(kind, {}).items():
                commands[f"{kind}_{index}.{action}"] = {"params": params}
        # Shelly ids are `<model>-<mac>` (shellyplus1pm-a8032ab636ec): the model is the type.
        model, dash, _ = device.src.partition("-")
        raw = {
            "type": model if dash and model else "shelly",
            "name": device.prefix,
            "metrics": {m: {"unit": u} for m, u in sorted(device.units.items())},
            "commands": commands,
        }
        found = changed_meta(device, device.id, raw, self._shapes)
        return [found] if found is not None else []


def _flatten(
    node: dict[str, Any],
    prefix: str,
    when: float,
    samples: list[Sample],
    events: list[DeviceEvent],
    depth: int = 0,
) -> None:
    """A component's status as dotted metrics; lists (per-minute energy) and nulls (a cover's
    `target_pos` when still) are skipped, not refused."""
    for key, value in node.items():
        if key in SKIPPED_KEYS or value is None or isinstance(value, list):
            continue
        metric = f"{prefix}{key}"
        if isinstance(value, dict):
            if depth < MAX_DEPTH:
                _flatten(value, metric + ".", when, samples, events, depth + 1)
        elif not is_metric_name(metric):
            events.append(Rejected("bad_metric_name", metric[:80]))
        elif is_value(value):
            samples.append((metric, when, value))
        else:
            events.append(Rejected("bad_value", f"{metric[:80]}={sample(value)}"))


def _unit(metric: str) -> str | None:
    last = metric.rpartition(".")[2]
    if last in UNITS:
        return UNITS[last]
    return next((unit for suffix, unit in UNIT_SUFFIXES if last.endswith(suffix)), None)
