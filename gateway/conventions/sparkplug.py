"""Sparkplug B (Eclipse Sparkplug 3.0, https://sparkplug.eclipse.org/specification/): protobuf
payloads decoded with Eclipse Tahu's sparkplug_b.proto (gateway/conventions/tahu).

spBv1.0/Plant1/NBIRTH/Edge01          seq 0; metrics bdSeq, Node Control/Rebirth, Temperature
                                      (name, alias 1, datatype Float), …
spBv1.0/Plant1/NDATA/Edge01           seq 1; metric alias 1 = 21.5   (by alias: named in the birth)
spBv1.0/Plant1/DBIRTH/Edge01/PLC1     seq 2; the device's metrics
spBv1.0/Plant1/DDATA/Edge01/PLC1      seq 3; …
spBv1.0/Plant1/NDEATH/Edge01          bdSeq = the NBIRTH's   (the edge node's will: it and its
                                                               devices go offline)
spBv1.0/Plant1/NCMD/Edge01            Node Control/Rebirth = true, or a write (from the gateway)

The edge node is the device `spb.<group>:<node>`, each of its devices `spb.<group>:<node>:<device>`.
Births define the metrics (names, aliases, datatypes, `engUnit`/`readOnly` properties) that DATA
messages refer to by alias. Every message but NBIRTH and NDEATH carries the next `seq` (mod 256):
a gap, a DATA before its BIRTH, or an alias no birth named is counted and answered with a
rebirth request (NCMD `Node Control/Rebirth`), at most one per edge node every
`rebirth_interval_s`. Metrics declared writable (`readOnly` false) become commands, written by
NCMD/DCMD; the next DATA showing the written value confirms them.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from google.protobuf.message import DecodeError as ProtobufDecodeError

from gateway.conventions.base import Surroundings
from gateway.conventions.common import (
    MAX_DEVICES,
    MAX_STRING_VALUE,
    Echo,
    Echoes,
    Namespace,
    changed_meta,
    is_value,
    not_its_own,
    scoped_id,
)
from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.meta import ShapeCache
from gateway.models import (
    DeviceEvent,
    DeviceMeta,
    Publish,
    Rejected,
    Sample,
    StatusChange,
    Telemetry,
    Value,
)
from gateway.names import is_command_name, is_metric_name

TAG = "spb"
NAMESPACE = "spBv1.0"
#: Metrics one edge node or device may define in its birth.
MAX_METRICS = 512
#: Devices one edge node may have.
MAX_NODE_DEVICES = 256
REBIRTH = "Node Control/Rebirth"
BD_SEQ = "bdSeq"
#: Metrics that steer the session, not readings.
CONTROL_PREFIXES = ("Node Control/", "Device Control/")
NODE_TYPES = frozenset({"NBIRTH", "NDATA", "NDEATH", "NCMD"})
DEVICE_TYPES = frozenset({"DBIRTH", "DDATA", "DDEATH", "DCMD"})

# Sparkplug B datatypes (the comment in sparkplug_b.proto; spec §6.4.16).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
UNSIGNED_BITS = {UINT8: 8, UINT16: 16, UINT32: 32, UINT64: 64}
TEXT_TYPES = frozenset({STRING, TEXT, UUID})
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(slots=True)
class MetricDef:
    """One metric as its birth defined it."""

    name: str
    datatype: int
    alias: int | None = None
    unit: str = ""
    writable: bool = False


@dataclass(slots=True)
class Thing:
    """What a birth defines: an edge node or one of its devices."""

    id: str
    label: str  # `Plant1/Edge01[/PLC1]`, the meta name
    born: bool = False
    by_name: dict[str, MetricDef] = field(default_factory=dict)
    by_alias: dict[int, MetricDef] = field(default_factory=dict)
    commands: dict[str, MetricDef] = field(default_factory=dict)
    meta_raw: dict[str, Any] | None = None


@dataclass(slots=True)
class EdgeNode(Thing):
    group: str = ""
    node: str = ""
    bd_seq: int | None = None
    seq: int | None = None  # the last seq received
    last_rebirth: float = -math.inf  # when the last rebirth was requested (receive time)
    devices: dict[str, Thing] = field(default_factory=dict)  # by Sparkplug device id


class SparkplugConvention:
    name: ClassVar[str] = "sparkplug"
    tag: ClassVar[str] = TAG

    def __init__(
        self, rebirth_interval_s: float = 10.0, clock: Callable[[], float] = time.time
    ) -> None:
        if not rebirth_interval_s >= 0:
            raise ConfigError("conventions.sparkplug.rebirth_interval_s", "must be ≥ 0")
        self.rebirth_interval_s = rebirth_interval_s
        # NCMD and DCMD must carry the time they were sent (spec §4.2.2.4, §4.2.3.5): the one
        # clock reading a convention does, injectable for tests.
        self._clock = clock
        self._prefix = f"{NAMESPACE}/"
        self.namespace = Namespace((f"{NAMESPACE}/#",))
        self._nodes: dict[str, EdgeNode] = {}  # by gateway device id
        self._owners: dict[str, tuple[EdgeNode, Thing]] = {}  # gateway device id -> its thing
        self._echoes = Echoes()
        self._shapes: ShapeCache | None = None

    @classmethod
    def from_config(cls, section: Any) -> SparkplugConvention:
        return cls(section.rebirth_interval_s)

    def bind(self, surroundings: Surroundings) -> None:
        self.namespace = self.namespace.excluding(surroundings.foreign_topics)
        self._shapes = surroundings.shapes

    def subscriptions(self) -> list[str]:
        return [f"{NAMESPACE}/#"]

    def roots(self) -> frozenset[str]:
        return frozenset({NAMESPACE})

    def owns(self, topic: str) -> bool:
        return topic.startswith(self._prefix)

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        levels = topic[len(self._prefix) :].split("/")
        if len(levels) == 2 and levels[0] == "STATE":
            return []  # a host application's state (3.0)
        if len(levels) not in (3, 4) or not all(levels):
            raise DecodeError("unknown_topic", topic[:120])
        group, kind, node_id = levels[:3]
        if kind in ("NCMD", "DCMD"):
            return []  # commands, the gateway's own among them
        device_id = levels[3] if len(levels) == 4 else None
        if (kind in NODE_TYPES) == (device_id is not None) or kind not in NODE_TYPES | DEVICE_TYPES:
            raise DecodeError("unknown_topic", topic[:120])
        try:
            message = Payload.FromString(payload)
        except ProtobufDecodeError:
            raise DecodeError("bad_payload", "not a Sparkplug B payload") from None
        node = self._node(group, node_id)
        if kind == "NBIRTH":
            return self._node_birth(node, message, received_at)
        if kind == "NDEATH":
            return self._node_death(node, message)
        events = self._sequence(node, message, received_at)
        if not node.born:
            return events  # counted, and a rebirth asked for: nothing of it can be placed
        if kind == "NDATA":
            return events + self._data(node, node, message, received_at)
        assert device_id is not None  # DBIRTH, DDATA, DDEATH
        if kind == "DBIRTH":
            return events + self._device_birth(node, device_id, message, received_at)
        thing = node.devices.get(device_id)
        if thing is None or not thing.born:
            events.append(Rejected("data_before_birth", f"{topic[:100]}"))
            return events + self._rebirth(node, received_at)
        if kind == "DDEATH":
            thing.born = False
            return [*events, StatusChange(thing.id, False)]
        return events + self._data(node, thing, message, received_at)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        owner = self._owners.get(device)
        metric = owner[1].commands.get(command) if owner is not None else None
        if owner is None or metric is None:
            raise CommandError("not_found", f"{device} declared no writable {command!r:.80}")
        node, thing = owner
        topic = self._command_topic(node, thing)
        if not self.namespace.allows(topic):
            raise not_its_own(device, topic)
        write = Payload(timestamp=int(self._clock() * 1000))
        entry = write.metrics.add(name=metric.name, datatype=metric.datatype)
        if metric.alias is not None:
            entry.alias = metric.alias
        value = params["value"]
        _set_value(entry, metric.datatype, value)
        self._echoes.expect(device, Echo(command_id, metric.name, value, metric=metric.name))
        return topic, write.SerializeToString()

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        return self._echoes.arm(device, command_id, before)

    def owns_command_topic(self, device: str, topic: str) -> bool:
        owner = self._owners.get(device)
        return (
            owner is not None
            and topic == self._command_topic(*owner)
            and self.namespace.allows(topic)
        )

    def forget(self, device: str) -> list[DeviceEvent]:
        owner = self._owners.pop(device, None)
        self._echoes.forget(device)
        if owner is not None:
            node, thing = owner
            if thing is node:
                for child in node.devices.values():
                    self._owners.pop(child.id, None)
                    self._echoes.forget(child.id)
                self._nodes.pop(node.id, None)
            else:
                node.devices = {k: v for k, v in node.devices.items() if v is not thing}
        return []

    # --- sessions -------------------------------------------------------------------------

    def _node(self, group: str, node_id: str) -> EdgeNode:
        device_id = _scoped(group, node_id)
        node = self._nodes.get(device_id)
        if node is None:
            node = EdgeNode(device_id, f"{group}/{node_id}", group=group, node=node_id)
            if len(self._nodes) < MAX_DEVICES:  # past the cap: decoded, not remembered
                self._nodes[device_id] = node
                self._owners[device_id] = (node, node)
        return node

    def _command_topic(self, node: EdgeNode, thing: Thing) -> str:
        if thing is node:
            return f"{self._prefix}{node.group}/NCMD/{node.node}"
        name = next(k for k, v in node.devices.items() if v is thing)
        return f"{self._prefix}{node.group}/DCMD/{node.node}/{name}"

    def _sequence(self, node: EdgeNode, message: Payload, received_at: float) -> list[DeviceEvent]:
        """Every message after the NBIRTH carries the next seq (mod 256): a gap (or no session
        at all) means something was lost, and only a rebirth brings back a true picture."""
        seq = message.seq if message.HasField("seq") else None
        expected = (node.seq + 1) % 256 if node.seq is not None else None
        node.seq = seq
        if not node.born:
            return [Rejected("data_before_birth", node.id), *self._rebirth(node, received_at)]
        if seq is None or seq != expected:
            return [Rejected("seq_gap", f"{node.id}: {expected} expected, {seq} received"),
                    *self._rebirth(node, received_at)]  # fmt: skip
        return []

    def _rebirth(self, node: EdgeNode, received_at: float) -> list[DeviceEvent]:
        """An NCMD asking for a new NBIRTH (and DBIRTHs), at most once per rebirth_interval_s."""
        if received_at - node.last_rebirth < self.rebirth_interval_s:
            return []
        node.last_rebirth = received_at
        request = Payload(timestamp=int(received_at * 1000))
        request.metrics.add(name=REBIRTH, datatype=BOOLEAN, boolean_value=True)
        topic = f"{self._prefix}{node.group}/NCMD/{node.node}"
        return [Publish(topic, request.SerializeToString())]

    def _node_birth(
        self, node: EdgeNode, message: Payload, received_at: float
    ) -> list[DeviceEvent]:
        bd_seq = next((m for m in message.metrics if m.name == BD_SEQ), None)
        node.bd_seq = _integer(bd_seq) if bd_seq is not None else None
        node.seq = message.seq if message.HasField("seq") else 0
        node.born = True
        for device in node.devices.values():
            device.born = False  # stale until their new DBIRTH (spec §4.2.2.1)
        events: list[DeviceEvent] = []
        samples = self._define(node, message, received_at, events)
        events = [StatusChange(node.id, True), *self._meta_events(node), *events]
        return [Telemetry(node.id, samples), *events] if samples else events

    def _node_death(self, node: EdgeNode, message: Payload) -> list[DeviceEvent]:
        """The edge node's will: it and its devices go offline, unless its bdSeq says it is
        the will of an older session (a new NBIRTH has already been seen)."""
        bd_seq = next((m for m in message.metrics if m.name == BD_SEQ), None)
        if bd_seq is not None and node.bd_seq is not None and _integer(bd_seq) != node.bd_seq:
            return []
        node.born = False
        node.seq = None
        events: list[DeviceEvent] = [StatusChange(node.id, False)]
        for device in node.devices.values():
            device.born = False
            events.append(StatusChange(device.id, False))
        return events

    def _device_birth(
        self, node: EdgeNode, name: str, message: Payload, received_at: float
    ) -> list[DeviceEvent]:
        thing = node.devices.get(name)
        if thing is None:
            if len(node.devices) >= MAX_NODE_DEVICES:
                return [Rejected("too_many_devices", node.id)]
            label = f"{node.group}/{node.node}/{name}"
            thing = node.devices[name] = Thing(_scoped(node.group, node.node, name), label)
            self._owners[thing.id] = (node, thing)
        thing.born = True
        events: list[DeviceEvent] = []
        samples = self._define(thing, message, received_at, events)
        events = [StatusChange(thing.id, True), *self._meta_events(thing), *events]
        return [Telemetry(thing.id, samples), *events] if samples else events

    # --- metrics --------------------------------------------------------------------------

    def _define(
        self, thing: Thing, message: Payload, received_at: float, events: list[DeviceEvent]
    ) -> list[Sample]:
        """A birth: the metrics it defines replace the earlier ones; their values are readings."""
        thing.by_name, thing.by_alias, thing.commands = {}, {}, {}
        samples: list[Sample] = []
        default_ts = _seconds(message, None, received_at)
        for metric in message.metrics:
            name = metric.name
            if not name or name == BD_SEQ or name.startswith(CONTROL_PREFIXES):
                continue
            if len(thing.by_name) >= MAX_METRICS:
                events.append(Rejected("too_many_metrics", thing.id))
                break
            if not is_metric_name(name):
                events.append(Rejected("bad_metric_name", name[:80]))
                continue
            definition = MetricDef(name, metric.datatype, unit=_property(metric, "engUnit") or "")
            definition.writable = _property(metric, "readOnly") is False
            if metric.HasField("alias"):
                definition.alias = metric.alias
                thing.by_alias[metric.alias] = definition
            thing.by_name[name] = definition
            command = _command_name(name)
            writable = definition.writable and _param(metric.datatype) is not None
            if writable and is_command_name(command) and command not in thing.commands:
                thing.commands[command] = definition
            self._sample(definition, metric, default_ts, samples, events)
        return samples

    def _data(
        self, node: EdgeNode, thing: Thing, message: Payload, received_at: float
    ) -> list[DeviceEvent]:
        samples: list[Sample] = []
        events: list[DeviceEvent] = []
        default_ts = _seconds(message, None, received_at)
        unknown = False
        for metric in message.metrics:
            definition = (
                thing.by_alias.get(metric.alias) if metric.HasField("alias") and not metric.name
                else thing.by_name.get(metric.name)
            )  # fmt: skip
            if definition is None:
                unknown = True
                continue
            self._sample(definition, metric, default_ts, samples, events)
        if unknown:
            # A metric no birth defined: this host's picture is out of date.
            events.append(Rejected("unknown_alias", thing.id))
            events += self._rebirth(node, received_at)
        for metric_name, _, value in samples:
            events += self._echoes.answer(thing.id, metric_name, value, {metric_name: value})
        return [Telemetry(thing.id, samples), *events] if samples else events

    def _sample(
        self,
        definition: MetricDef,
        metric: Payload.Metric,
        default_ts: float,
        samples: list[Sample],
        events: list[DeviceEvent],
    ) -> None:
        if metric.is_null or metric.is_historical:
            return  # no value, or a late reading that must not show as the current one
        value = _value(metric, definition.datatype)
        if value is None:
            return  # a kind of value the gateway does not show (DataSet, Template, bytes)
        if not is_value(value):
            events.append(Rejected("bad_value", definition.name[:80]))
            return
        samples.append((definition.name, _seconds(None, metric, default_ts), value))

    def _meta_events(self, thing: Thing) -> list[DeviceEvent]:
        metrics = {
            name: {"unit": d.unit, "datatype": d.datatype} if d.unit else {"datatype": d.datatype}
            for name, d in thing.by_name.items()
        }
        commands = {
            command: {"params": {"value": _param(d.datatype)}}
            for command, d in thing.commands.items()
        }
        kind = "edge node" if isinstance(thing, EdgeNode) else "device"
        raw = {"type": f"sparkplug {kind}", "name": thing.label, "metrics": metrics}
        raw["commands"] = commands
        found = changed_meta(thing, thing.id, raw, self._shapes)
        if isinstance(found, Rejected):
            thing.commands = {}  # nothing a refused meta declares may be commanded
        return [found] if found is not None else []


def _scoped(*parts: str) -> str:
    """`spb.Plant1:Edge01[:PLC1]`; parts holding `:` are hashed apart (common.scoped_id)."""
    joined = ":".join(parts)
    return scoped_id(TAG, joined if not any(":" in p for p in parts) else "/".join(parts))


def _command_name(metric: str) -> str:
    return f"set_{_UNSAFE.sub('_', metric).strip('_')}"[:64]


def _seconds(message: Payload | None, metric: Payload.Metric | None, default: float) -> float:
    """A Sparkplug timestamp (ms since the epoch) in seconds, else `default`."""
    source = metric if metric is not None else message
    if source is not None and source.HasField("timestamp") and source.timestamp > 0:
        return source.timestamp / 1000.0
    return default


def _property(metric: Payload.Metric, key: str) -> Any:
    """A metric's property by key (`engUnit`, `readOnly`), as a Python value."""
    if not metric.HasField("properties"):
        return None
    props = metric.properties
    for name, value in zip(props.keys, props.values, strict=False):
        if name != key or value.is_null:
            continue
        kind = value.WhichOneof("value")
        if kind == "boolean_value":
            return value.boolean_value
        if kind == "string_value":
            return value.string_value[:32]
    return None


def _integer(metric: Payload.Metric) -> int | None:
    kind = metric.WhichOneof("value")
    if kind == "long_value":
        return metric.long_value
    if kind == "int_value":
        return metric.int_value
    return None


def _value(metric: Payload.Metric, datatype: int) -> Value | None:
    """The metric's value as its datatype says (signed integers travel as two's complement in
    the unsigned fields, spec §6.4.16); None for kinds the gateway does not show."""
    kind = metric.WhichOneof("value")
    if kind is None:
        return None
    if datatype in SIGNED_BITS or datatype in UNSIGNED_BITS:
        raw = metric.long_value if kind == "long_value" else metric.int_value
        bits = SIGNED_BITS.get(datatype)
        if bits is not None:
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return raw
    if datatype == FLOAT:
        # A 32-bit float: 21.4 travels as 21.399999618…; its 7 significant digits are the value.
        return float(f"{metric.float_value:.7g}")
    if datatype == DOUBLE:
        return metric.double_value
    if datatype == BOOLEAN:
        return metric.boolean_value
    if datatype in TEXT_TYPES:
        return metric.string_value[: MAX_STRING_VALUE + 1]  # longer: refused as bad_value
    if datatype == DATETIME:
        return metric.long_value  # ms since the epoch
    return None  # DataSet, Bytes, File, Template, arrays


def _param(datatype: int) -> dict[str, Any] | None:
    """The command param a writable metric of this datatype takes; None: not writable here."""
    if datatype in SIGNED_BITS:
        bits = min(SIGNED_BITS[datatype], 54)  # JSON clients: ±2^53
        return {"type": "integer", "min": -(2 ** (bits - 1)), "max": 2 ** (bits - 1) - 1}
    if datatype in UNSIGNED_BITS:
        return {"type": "integer", "min": 0, "max": 2 ** min(UNSIGNED_BITS[datatype], 53) - 1}
    if datatype in (FLOAT, DOUBLE):
        return {"type": "number"}
    if datatype == BOOLEAN:
        return {"type": "boolean"}
    if datatype in (STRING, TEXT):
        return {"type": "string"}
    return None


def _set_value(metric: Payload.Metric, datatype: int, value: Value) -> None:
    if datatype in SIGNED_BITS or datatype in UNSIGNED_BITS:
        number = int(value)
        bits = SIGNED_BITS.get(datatype) or UNSIGNED_BITS[datatype]
        encoded = number & ((1 << bits) - 1)  # two's complement for negatives
        if bits == 64:
            metric.long_value = encoded
        else:
            metric.int_value = encoded
    elif datatype == FLOAT:
        metric.float_value = float(value)
    elif datatype == DOUBLE:
        metric.double_value = float(value)
    elif datatype == BOOLEAN:
        metric.boolean_value = bool(value)
    else:
        metric.string_value = str(value)
