"""Homie v4 (https://homieiot.github.io/specification/spec-core-v4_0_0/) and v5.

homie/super-car/$state                              ready | init | sleeping | disconnected | lost
homie/super-car/$nodes                              engine,lights                    (v4)
homie/super-car/engine/$properties                  speed,temperature                (v4)
homie/super-car/engine/temperature/$datatype        float                            (v4)
homie/super-car/engine/temperature/$unit            °C                               (v4)
homie/5/super-car/$description                      {"homie": "5.0", "nodes": {…}}   (v5)
homie/super-car/engine/temperature                  21.5
homie/5/dimmer/light/brightness/$target             100     (v5: metric light.brightness.target)
homie/kitchen-light/light/power/set                 true                 (published by the gateway)

Metrics are `<node>.<property>`; settable properties become `set_<node>_<property>` commands with
one typed `value` param. Homie's echo is the property's next value, which answers the command.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.conventions.base import PrefixConvention
from gateway.conventions.common import (
    MAX_DEVICES,
    Echo,
    is_finite_number,
    is_value,
    load_json_object,
    load_text,
    not_its_own,
    parse_scalar,
    scoped_id,
)
from gateway.errors import CommandError, DecodeError
from gateway.meta import parse_meta
from gateway.models import (
    DeviceEvent,
    DeviceMeta,
    MetaChange,
    Rejected,
    Removed,
    StatusChange,
    Telemetry,
    Value,
)
from gateway.names import is_command_name

TAG = "homie"
MAX_PROPERTIES = 512  # per device: a device's own announcements cannot grow memory without end
MAX_NODES = 128  # per device, likewise
# Homie ids are [a-z0-9-]; be lenient on case and `_` (v3 arrays, sloppy firmware), never on
# anything that could change a topic the gateway publishes to.
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# $state -> online: connected (ready, or initialising, or asking for attention) or not.
STATES = {
    "ready": True,
    "init": True,
    "alert": True,
    "sleeping": False,
    "disconnected": False,
    "lost": False,
}
PROPERTY_ATTRIBUTES = ("$name", "$datatype", "$unit", "$settable", "$format", "$retained")


@dataclass(slots=True)
class Property:
    name: str = ""
    datatype: str | None = None
    unit: str = ""
    settable: bool = False
    format: str = ""


@dataclass(slots=True)
class Node:
    name: str = ""
    properties: list[str] | None = None


@dataclass(slots=True)
class HomieDevice:
    id: str
    homie_id: str
    v5: bool
    name: str = ""
    state: str = ""
    nodes: list[str] | None = None
    node_info: dict[str, Node] = field(default_factory=dict)
    props: dict[tuple[str, str], Property] = field(default_factory=dict)
    setters: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: properties that have published a v5 `$target` (their `<node>.<property>.target` metric)
    targets: set[tuple[str, str]] = field(default_factory=set)
    meta_raw: dict[str, Any] | None = None


class HomieConvention(PrefixConvention):
    name = "homie"
    tag = TAG

    def __init__(self, base_topic: str = "homie") -> None:
        super().__init__(base_topic)
        self._devices: dict[str, HomieDevice] = {}

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        levels = topic[len(self._prefix) :].split("/")
        v5 = levels[0] == "5" and len(levels) > 2
        if v5:
            levels = levels[1:]
        if len(levels) < 2 or levels[0].startswith("$"):
            return []  # v5 $broadcast and other controller-wide topics
        if not _ID.fullmatch(levels[0]):
            raise DecodeError("bad_device_id", levels[0][:80])
        if not payload and scoped_id(TAG, levels[0]) not in self._devices:
            return []  # a removed device's retained topics being cleared: nothing to bring back
        device = self._device(levels[0], v5)
        text = load_text(payload)
        rest = levels[1:]
        if rest[0].startswith("$"):
            return self._device_attribute(device, rest, text)
        if not all(_ID.fullmatch(level) for level in rest[:2] if not level.startswith("$")):
            raise DecodeError("bad_id", topic[:120])  # they become metric names and topics
        if len(rest) == 2 and rest[1].startswith("$"):
            return self._node_attribute(device, rest[0], rest[1], text)
        if len(rest) == 2:
            return self._value(device, rest[0], rest[1], text, received_at)
        if len(rest) == 3 and rest[2] == "set":
            return []  # commands (the gateway's own included)
        if len(rest) == 3 and rest[2] == "$target":
            return self._target(device, rest[0], rest[1], text, received_at)
        if len(rest) == 3 and rest[2] in PROPERTY_ATTRIBUTES:
            return self._property_attribute(device, (rest[0], rest[1]), rest[2], text)
        raise DecodeError("unknown_topic", topic[:120])

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        known = self._devices.get(device)
        target = known.setters.get(command) if known is not None else None
        if known is None or target is None:
            raise CommandError("not_found", f"{device} has no settable {command!r:.80}")
        node, prop = target
        # Every level was announced by the device and checked against the id pattern.
        topic = self._set_topic(known, node, prop)
        if not self.namespace.allows(topic):
            raise not_its_own(device, topic)
        metric = f"{node}.{prop}"
        self._echoes.expect(device, Echo(command_id, metric, params["value"], metric=metric))
        return topic, _payload(params["value"]).encode()

    def forget(self, device: str) -> list[DeviceEvent]:
        self._devices.pop(device, None)
        return super().forget(device)

    def owns_command_topic(self, device: str, topic: str) -> bool:
        known = self._devices.get(device)
        return (
            known is not None
            and any(topic == self._set_topic(known, *target) for target in known.setters.values())
            and self.namespace.allows(topic)
        )

    def _set_topic(self, device: HomieDevice, node: str, prop: str) -> str:
        version = "5/" if device.v5 else ""
        return f"{self._prefix}{version}{device.homie_id}/{node}/{prop}/set"

    # --- attributes -----------------------------------------------------------------------

    def _device(self, homie_id: str, v5: bool) -> HomieDevice:
        device_id = scoped_id(TAG, homie_id)
        device = self._devices.get(device_id)
        if device is None:
            device = HomieDevice(device_id, homie_id, v5)
            if len(self._devices) < MAX_DEVICES:  # past the cap: decoded, not remembered
                self._devices[device_id] = device
        device.v5 = v5
        return device

    def _device_attribute(
        self, device: HomieDevice, rest: list[str], text: str
    ) -> list[DeviceEvent]:
        attribute = "/".join(rest)
        if attribute == "$state":
            return self._state(device, text.strip())
        if attribute == "$name":
            device.name = text[:256]
        elif attribute == "$nodes":
            device.nodes = _ids(text)[:MAX_NODES]
        elif attribute == "$description":
            if not text.strip():
                return self._forget(device)
            self._description(device, load_json_object(text.encode(), "$description"))
        else:
            return []  # $homie, $extensions, $implementation, $fw/…, $stats/…, $log, $alert/…
        return self._meta_events(device)

    def _node_attribute(
        self, device: HomieDevice, node: str, attribute: str, text: str
    ) -> list[DeviceEvent]:
        info = device.node_info.get(node)
        if info is None:
            if len(device.node_info) >= MAX_NODES:
                return [Rejected("too_many_nodes", device.id)]
            info = device.node_info[node] = Node()
        if attribute == "$name":
            info.name = text[:256]
        elif attribute == "$properties":
            info.properties = _ids(text)
        else:
            return []  # $type, v3 $array
        return self._meta_events(device)

    def _property_attribute(
        self, device: HomieDevice, key: tuple[str, str], attribute: str, text: str
    ) -> list[DeviceEvent]:
        prop = device.props.get(key)
        if prop is None:
            if len(device.props) >= MAX_PROPERTIES:
                return [Rejected("too_many_properties", device.id)]
            prop = device.props[key] = Property()
        value = text.strip()
        if attribute == "$datatype":
            prop.datatype = value or None
        elif attribute == "$unit":
            prop.unit = text[:32]
        elif attribute == "$settable":
            prop.settable = value == "true"
        elif attribute == "$format":
            prop.format = value[:1024]
        elif attribute == "$name":
            prop.name = text[:256]
        else:
            return []  # $retained
        return self._meta_events(device)

    def _description(self, device: HomieDevice, description: dict[str, Any]) -> None:
        """v5: the whole device in one JSON document. Nodes and properties are objects keyed
        by id (final v5); drafts used lists of objects with an `id` — both are read."""
        name = description.get("name")
        device.name = name[:256] if isinstance(name, str) else ""
        nodes = _keyed(description.get("nodes"))
        device.nodes = [n for n in nodes if _ID.fullmatch(n)][:MAX_NODES]
        device.node_info = {}
        device.props = {}
        for node_id in device.nodes:
            node = nodes[node_id]
            properties = _keyed(node.get("properties"))
            device.node_info[node_id] = Node(
                _text(node.get("name")), [p for p in properties if _ID.fullmatch(p)]
            )
            for prop_id in device.node_info[node_id].properties or ():
                if len(device.props) >= MAX_PROPERTIES:
                    break
                spec = properties[prop_id]
                device.props[(node_id, prop_id)] = Property(
                    name=_text(spec.get("name")),
                    datatype=_text(spec.get("datatype")) or None,
                    unit=_text(spec.get("unit"))[:32],
                    settable=spec.get("settable") is True,
                    format=_text(spec.get("format"))[:1024],
                )

    def _state(self, device: HomieDevice, state: str) -> list[DeviceEvent]:
        if not state:
            return self._forget(device)  # $state cleared: the device was removed
        if state not in STATES:
            raise DecodeError("bad_status", state[:40])
        device.state = state
        # Retained attributes arrive in any order; `ready` says they have all been published.
        return [
            StatusChange(device.id, STATES[state]),
            *self._meta_events(device, state == "ready"),
        ]

    def _forget(self, device: HomieDevice) -> list[DeviceEvent]:
        self._devices.pop(device.id, None)
        self._echoes.forget(device.id)
        return [Removed(device.id)]

    # --- meta and values ------------------------------------------------------------------

    def _meta_events(self, device: HomieDevice, ready: bool = False) -> list[DeviceEvent]:
        """Meta when the device says it is ready (with whatever it announced), or once its
        description is complete (retained attributes replay in any order), then on changes;
        never while it says it is still initialising."""
        announced = self._announced(device)
        complete = device.state != "init" and _complete(device, announced)
        if device.nodes is None or not (ready or complete):
            return []
        metrics: dict[str, Any] = {}
        commands: dict[str, Any] = {}
        setters: dict[str, tuple[str, str]] = {}
        for node, prop_id in announced:
            prop = device.props.get((node, prop_id), Property())
            metrics[f"{node}.{prop_id}"] = {"unit": prop.unit} if prop.unit else {}
            if (node, prop_id) in device.targets:
                metrics[f"{node}.{prop_id}.target"] = metrics[f"{node}.{prop_id}"]
            command = f"set_{node}_{prop_id}"
            if prop.settable and is_command_name(command) and command not in commands:
                commands[command] = {"params": {"value": _param(prop)}}
                setters[command] = (node, prop_id)
        raw = {"type": "homie", "name": device.name or device.homie_id, "metrics": metrics}
        raw["commands"] = commands
        if raw == device.meta_raw:
            return []
        device.meta_raw, device.setters = raw, setters
        try:
            return [MetaChange(device.id, parse_meta(raw, self._shapes))]
        except DecodeError as exc:
            device.setters = {}
            return [Rejected(exc.reason, exc.detail)]

    def _announced(self, device: HomieDevice) -> list[tuple[str, str]]:
        return [
            (node, prop)
            for node in device.nodes or ()
            for prop in (device.node_info.get(node) or Node()).properties or ()
        ]

    def _value(
        self, device: HomieDevice, node: str, prop_id: str, text: str, received_at: float
    ) -> list[DeviceEvent]:
        prop = device.props.get((node, prop_id))
        metric = f"{node}.{prop_id}"
        value = _typed_value(prop, metric, text)
        events: list[DeviceEvent] = [Telemetry(device.id, [(metric, received_at, value)])]
        events += self._echoes.answer(device.id, metric, value, {metric: value})
        return events

    def _target(
        self, device: HomieDevice, node: str, prop_id: str, text: str, received_at: float
    ) -> list[DeviceEvent]:
        """v5 `$target`: the value a property is moving to (a dimmer fading to 100 %), shown as
        the metric `<node>.<property>.target` beside the property's own value."""
        if not text:
            return []  # the target was cleared (the move ended): the property's value says it
        key = (node, prop_id)
        metric = f"{node}.{prop_id}.target"
        value = _typed_value(device.props.get(key), metric, text)
        events: list[DeviceEvent] = [Telemetry(device.id, [(metric, received_at, value)])]
        if key in device.props and key not in device.targets:
            device.targets.add(key)  # bounded by the properties, themselves capped
            events += self._meta_events(device)
        return events


def _typed_value(prop: Property | None, metric: str, text: str) -> Value:
    value = _typed(prop.datatype if prop else None, text)
    if value is None or not is_value(value):
        raise DecodeError("bad_value", f"{metric[:80]}={text[:40]!r}")
    return value


def _complete(device: HomieDevice, announced: list[tuple[str, str]]) -> bool:
    nodes_listed = all(
        (device.node_info.get(n) or Node()).properties is not None for n in device.nodes or ()
    )
    typed = all(
        (p := device.props.get(key)) is not None and p.datatype is not None for key in announced
    )
    return nodes_listed and typed


def _ids(text: str) -> list[str]:
    """A v4 `$nodes` / `$properties` list; ids that could not be topic levels are dropped."""
    # v3 node arrays are announced as `lights[]`: the gateway reads the array node itself only.
    ids = [part.strip().removesuffix("[]") for part in text.split(",") if part.strip()]
    return [i for i in ids if _ID.fullmatch(i)][:MAX_PROPERTIES]


def _keyed(value: object) -> dict[str, dict[str, Any]]:
    if isinstance(value, dict):
        return {k: v for k, v in value.items() if isinstance(v, dict)}
    if isinstance(value, list):
        return {v["id"]: v for v in value if isinstance(v, dict) and isinstance(v.get("id"), str)}
    return {}


def _param(prop: Property) -> dict[str, Any]:
    """The command param a property's $datatype and $format allow."""
    if prop.datatype in ("integer", "float"):
        param: dict[str, Any] = {"type": "integer" if prop.datatype == "integer" else "number"}
        # `from:to`, v5 also `from:to:step` with either bound optional.
        bounds = prop.format.split(":")
        if len(bounds) in (2, 3):
            for key, text in zip(("min", "max"), bounds[:2], strict=True):
                number = parse_scalar(text)
                if text and is_finite_number(number):
                    param[key] = number
        return param
    if prop.datatype == "boolean":
        return {"type": "boolean"}
    if prop.datatype == "enum":
        values = [v for v in prop.format.split(",") if v]
        if values:
            return {"type": "string", "enum": values}
    return {"type": "string"}  # string, color, datetime, duration, or not announced


def _typed(datatype: str | None, text: str) -> Value | None:
    """A property payload as its datatype says; None when it is not one."""
    if datatype == "integer":
        try:
            return int(text.strip())
        except ValueError:
            return None
    if datatype == "float":
        try:
            number = float(text.strip())
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    if datatype == "boolean":
        return {"true": True, "false": False}.get(text.strip())
    if datatype is None:
        return {"true": True, "false": False}.get(text, parse_scalar(text)) if text else None
    return text


def _payload(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text(value: object) -> str:
    return value[:256] if isinstance(value, str) else ""
