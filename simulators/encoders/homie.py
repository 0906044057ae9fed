"""Homie 4.0 (https://homieiot.github.io/specification/spec-core-v4_0_0/).

homie/thermo-1/$state                         init, then ready             (retained; will: lost)
homie/thermo-1/$nodes                         thermostat
homie/thermo-1/thermostat/$properties         temperature,target,mode,action
homie/thermo-1/thermostat/target/$datatype    float          (and $name, $unit °C, $settable true,
homie/thermo-1/thermostat/target/$format      5:30            every attribute retained)
homie/thermo-1/thermostat/target              21.0                                   (retained)
homie/thermo-1/thermostat/target/set          22                               (from the gateway)

Every attribute is published under `$state init` and the device turns `ready` once it listens
for commands. A valid `/set` is answered the Homie way, by publishing the property's new value;
an invalid one changes nothing and is not answered (the spec has no error channel).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.models import Value
from simulators.devices.thermostat import MODES, TARGET_MAX, TARGET_MIN
from simulators.encoders.base import Action, Encoder, Message, Outcome, Request, Speaker

if TYPE_CHECKING:
    from simulators.roster import Member

_UNSAFE = re.compile(r"[^a-z0-9-]")  # Homie 4 ids are lower-case letters, digits and hyphens


@dataclass(frozen=True, slots=True)
class Prop:
    """One metric as a Homie property of a node."""

    node: str
    id: str
    metric: str
    datatype: str = "float"
    format: str = ""
    settable: bool = False


NODES: dict[str, tuple[Prop, ...]] = {
    "thermostat": (
        Prop("thermostat", "temperature", "temperature"),
        Prop("thermostat", "target", "target", format=f"{TARGET_MIN}:{TARGET_MAX}", settable=True),
        Prop("thermostat", "mode", "mode", "enum", ",".join(MODES), settable=True),
        Prop("thermostat", "action", "action", "enum", "heating,cooling,idle"),
    ),
    "switch": (
        Prop("switch", "on", "on", "boolean", settable=True),
        Prop("switch", "power", "power"),
    ),
    "environment": (
        Prop("climate", "temperature", "temperature"),
        Prop("climate", "humidity", "humidity"),
        Prop("climate", "pressure", "pressure"),
        Prop("battery", "level", "battery"),
    ),
    "meter": tuple(Prop("meter", m, m) for m in ("voltage", "current", "power", "energy")),
    "tracker": tuple(Prop("gps", m, m) for m in ("lat", "lon", "speed", "heading")),
}


def text(value: Value) -> str:
    """A value as its Homie payload: `true`/`false` for booleans, numbers as numbers."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class HomieSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.id = _UNSAFE.sub("-", member.device_id.lower())
        self.root = f"{base}/{self.id}"
        self.props = NODES[self.model.kind]
        self.settable = {f"{self.root}/{p.node}/{p.id}/set": p for p in self.props if p.settable}

    def _retained(self, leaf: str, payload: str) -> Message:
        return Message(f"{self.root}/{leaf}", payload.encode(), retain=True)

    def will(self) -> Message:
        return self._retained("$state", "lost")

    def announce(self) -> list[Message]:
        nodes = list(dict.fromkeys(p.node for p in self.props))
        messages = [
            self._retained("$state", "init"),
            self._retained("$homie", "4.0.0"),
            self._retained("$name", self.model.name),
            # `$extensions` is left out: with none to list its payload would be empty, and an
            # empty retained publish deletes the retained message (MQTT 3.1.1 §3.3.1.3).
            self._retained("$nodes", ",".join(nodes)),
        ]
        for node in nodes:
            props = [p for p in self.props if p.node == node]
            messages += [
                self._retained(f"{node}/$name", node.capitalize()),
                self._retained(f"{node}/$type", self.model.kind),
                self._retained(f"{node}/$properties", ",".join(p.id for p in props)),
            ]
            for p in props:
                attributes = {
                    "$name": p.id.capitalize(),
                    "$datatype": p.datatype,
                    "$settable": "true" if p.settable else "false",
                    "$unit": self.model.metrics[p.metric],
                    "$format": p.format,
                }
                messages += [
                    self._retained(f"{node}/{p.id}/{name}", value)
                    for name, value in attributes.items()
                    if value
                ]
        return messages

    def online(self) -> list[Message]:
        return [self._retained("$state", "ready")]

    def offline(self) -> list[Message]:
        return [self._retained("$state", "disconnected")]

    def command_filters(self) -> list[str]:
        return [f"{self.root}/+/+/set"]

    def parse(self, topic: str, payload: bytes) -> Request | None:
        prop = self.settable.get(topic)
        if prop is None:
            return None if not topic.startswith(self.root + "/") else Request(refused="read-only")
        raw = payload.decode(errors="replace").strip()
        value: Value | None = raw
        if prop.datatype == "float":
            try:
                value = float(raw)
            except ValueError:
                value = None
        elif prop.datatype == "boolean":
            value = {"true": True, "false": False}.get(raw)
        if value is None:
            return Request(refused=f"{raw!r:.40} is not a {prop.datatype}")
        return Request((Action(f"set_{prop.metric}", key=prop.metric, write=(prop.metric, value)),))

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [self._retained(f"{p.node}/{p.id}", text(values[p.metric])) for p in self.props]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        done = {o.action.key for o in outcomes if o.ok}
        return [
            self._retained(f"{p.node}/{p.id}", text(values[p.metric]))
            for p in self.props
            if p.metric in done
        ]


def gateway_settings(base: str) -> dict[str, Any]:
    return {"conventions.homie.enabled": True, "conventions.homie.base_topic": base}


ENCODER = Encoder("homie", "homie", HomieSpeaker, gateway_settings)
