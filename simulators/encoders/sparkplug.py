"""Sparkplug B (https://sparkplug.eclipse.org/specification/), each device an edge node.

spBv1.0/iotgw-sim/NBIRTH/thermo-1    seq 0, bdSeq, Node Control/Rebirth, every metric with its
                                     alias, datatype, engUnit and readOnly (false: settable)
spBv1.0/iotgw-sim/NDATA/thermo-1     seq n; every metric by alias
spBv1.0/iotgw-sim/NDEATH/thermo-1    bdSeq                              (the connection's will)
spBv1.0/iotgw-sim/NCMD/thermo-1      a write, or Node Control/Rebirth = true  (from the gateway)

The base topic is the Sparkplug group id (a `/` in it becomes `-`). Payloads are built with
Eclipse Tahu's schema, as the gateway reads them. Every new connection starts a session with
the next bdSeq; a write takes effect and the NDATA right after it shows it (Sparkplug has no
answer to a write); a rebirth request is answered with a fresh NBIRTH.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from google.protobuf.message import DecodeError

from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from gateway.models import Value
from simulators.encoders.base import Action, BadCommand, Encoder, Message, Outcome, Request, Speaker

if TYPE_CHECKING:
    from simulators.roster import Member

NAMESPACE = "spBv1.0"
INT64, DOUBLE, BOOLEAN, STRING = 4, 10, 11, 12
REBIRTH = "Node Control/Rebirth"


def group(base: str) -> str:
    return base.replace("/", "-") or "iotgw-sim"


def datatype(value: Value) -> int:
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    return DOUBLE if isinstance(value, float) else STRING


def put(metric: Payload.Metric, kind: int, value: Value) -> None:
    if kind == BOOLEAN:
        metric.boolean_value = bool(value)
    elif kind == INT64:
        metric.long_value = int(value) & 0xFFFFFFFFFFFFFFFF
    elif kind == DOUBLE:
        metric.double_value = float(value)
    else:
        metric.string_value = str(value)


def get(metric: Payload.Metric, kind: int) -> Value | None:
    field = metric.WhichOneof("value")
    if field is None:
        return None
    value: Value = getattr(metric, field)
    if kind == INT64 and isinstance(value, int) and value >= 1 << 63:
        value -= 1 << 64
    return value


class SparkplugSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.node = member.device_id
        self.topic = f"{NAMESPACE}/{group(base)}"
        # Datatypes from the model's own values: they never change type.
        start = self.model.readings()
        self.kinds = {metric: datatype(start[metric]) for metric in self.model.metrics}
        self.aliases = {metric: i for i, metric in enumerate(self.model.metrics, 1)}
        self.bd_seq = 0
        self.seq = 0

    def message(self, kind: str, payload: Payload) -> Message:
        return Message(f"{self.topic}/{kind}/{self.node}", payload.SerializeToString(), qos=0)

    def next_seq(self) -> int:
        self.seq = (self.seq + 1) % 256
        return self.seq

    def connecting(self) -> None:
        self.bd_seq = (self.bd_seq + 1) % 256  # spec: incremented on every new CONNECT

    def will(self) -> Message:
        death = Payload(timestamp=int(time.time() * 1000))
        death.metrics.add(name="bdSeq", datatype=INT64, long_value=self.bd_seq)
        return Message(f"{self.topic}/NDEATH/{self.node}", death.SerializeToString())

    def announce(self) -> list[Message]:
        return []  # the birth says everything once the device listens for commands

    def birth(self) -> Message:
        self.seq = 0
        birth = Payload(timestamp=int(time.time() * 1000), seq=0)
        birth.metrics.add(name="bdSeq", datatype=INT64, long_value=self.bd_seq)
        birth.metrics.add(name=REBIRTH, datatype=BOOLEAN, boolean_value=False)
        values = self.model.readings()
        for metric, kind in self.kinds.items():
            entry = birth.metrics.add(name=metric, alias=self.aliases[metric], datatype=kind)
            put(entry, kind, values[metric])
            props = {"readOnly": metric not in self.model.settable}
            unit = self.model.metrics[metric]
            keys = ["readOnly", *(["engUnit"] if unit else [])]
            entry.properties.keys.extend(keys)
            entry.properties.values.add(type=BOOLEAN, boolean_value=props["readOnly"])
            if unit:
                entry.properties.values.add(type=STRING, string_value=unit)
        return self.message("NBIRTH", birth)

    def online(self) -> list[Message]:
        return [self.birth()]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return [f"{self.topic}/NCMD/{self.node}"]

    def parse(self, topic: str, payload: bytes) -> Request | None:
        if topic != f"{self.topic}/NCMD/{self.node}":
            return None
        try:
            command = Payload.FromString(payload)
        except DecodeError:
            raise BadCommand("not a Sparkplug B payload") from None
        actions = []
        for metric in command.metrics:
            if metric.name == REBIRTH and metric.boolean_value:
                return Request(key="rebirth")
            name = metric.name or next(
                (
                    m
                    for m, a in self.aliases.items()
                    if metric.HasField("alias") and a == metric.alias
                ),
                "",
            )
            kind = self.kinds.get(name)
            value = get(metric, kind) if kind is not None else None
            if value is None:
                continue  # an unknown metric: Sparkplug edge nodes ignore it
            actions.append(Action(f"set_{name}", key=name, write=(name, value)))
        return Request(tuple(actions))

    def data(self, values: dict[str, Value]) -> Message:
        data = Payload(timestamp=int(time.time() * 1000), seq=self.next_seq())
        for metric, kind in self.kinds.items():
            put(data.metrics.add(alias=self.aliases[metric]), kind, values[metric])
        return self.message("NDATA", data)

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [self.data(values)]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        if request.key == "rebirth":
            return [self.birth()]
        # No answer channel: the new values in the next NDATA are all a host learns.
        return [self.data(values)]


def root(base: str) -> str:
    return f"{NAMESPACE}/{group(base)}/"


def gateway_settings(base: str) -> dict[str, Any]:
    return {"conventions.sparkplug.enabled": True}


ENCODER = Encoder("sparkplug", "iotgw-sim", SparkplugSpeaker, gateway_settings, root=root)
