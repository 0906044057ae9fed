"""Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery).

homeassistant/sensor/thermo-1/temperature/config
    {"state_topic": "homeassistant/sensor/thermo-1/state", "unit_of_measurement": "°C",
     "value_template": "{{ value_json.temperature }}", "device": {"identifiers": ["thermo-1"], …}}
homeassistant/number/thermo-1/target/config
    {"~": "homeassistant/number/thermo-1/target", "cmd_t": "~/set", "min": 5, "max": 30,
     "stat_t": "homeassistant/sensor/thermo-1/state", "val_tpl": "{{value_json['target']}}", …}
homeassistant/sensor/thermo-1/state          {"temperature": 20.4, "target": 21.0, …}
homeassistant/sensor/thermo-1/availability   online | offline              (retained; the last will)
homeassistant/number/thermo-1/target/set     22                                 (from the gateway)

One entity per metric, all reading one shared JSON state topic through `{{ value_json.x }}`
templates, as the documentation's own examples do; entities that take commands (switch, number,
select) use abbreviated keys and `~`, plain sensors the long keys, so both forms are exercised.
A command takes effect at once and is answered by the next state message, Home Assistant's echo.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.models import Value
from simulators.devices.thermostat import MODES, TARGET_MAX, TARGET_MIN
from simulators.encoders.base import (
    Action,
    BadCommand,
    Encoder,
    Message,
    Outcome,
    Request,
    Speaker,
    on_off,
)

if TYPE_CHECKING:
    from simulators.roster import Member

ONLINE, OFFLINE = b"online", b"offline"
MANUFACTURER = "iotgw simulators"
_NODE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # Home Assistant's node_id and object_id alphabet


@dataclass(frozen=True, slots=True)
class Entity:
    """One metric as a discovery entity: its component and the keys its config adds."""

    component: str
    metric: str
    extra: tuple[tuple[str, Any], ...] = ()


def sensor(metric: str, device_class: str = "", **extra: Any) -> Entity:
    keys = {"device_class": device_class} if device_class else {}
    return Entity("sensor", metric, tuple({**keys, **extra}.items()))


ENTITIES: dict[str, list[Entity]] = {
    "thermostat": [
        sensor("temperature", "temperature"),
        Entity("number", "target", (("min", TARGET_MIN), ("max", TARGET_MAX), ("step", 0.5))),
        Entity("select", "mode", (("ops", list(MODES)),)),
        sensor("action"),
    ],
    "switch": [Entity("switch", "on"), sensor("power", "power")],
    "environment": [
        sensor("temperature", "temperature"),
        sensor("humidity", "humidity"),
        sensor("pressure", "pressure"),
        sensor("battery", "battery"),
    ],
    "meter": [
        sensor("voltage", "voltage"),
        sensor("current", "current"),
        sensor("power", "power"),
        sensor("energy", "energy", state_class="total_increasing"),
    ],
    "tracker": [sensor("lat"), sensor("lon"), sensor("speed", "speed"), sensor("heading")],
}


class HomeAssistantSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.node = _NODE_UNSAFE.sub("_", member.device_id)
        self.state_topic = f"{base}/sensor/{self.node}/state"
        self.availability = f"{base}/sensor/{self.node}/availability"
        self.entities = ENTITIES[self.model.kind]
        self.commands = {self.root(e) + "/set": e for e in self.entities if e.component != "sensor"}

    def root(self, entity: Entity) -> str:
        return f"{self.base}/{entity.component}/{self.node}/{entity.metric}"

    def will(self) -> Message:
        return Message(self.availability, OFFLINE, retain=True)

    def announce(self) -> list[Message]:
        return [
            Message(self.root(e) + "/config", orjson.dumps(self.config(e)), retain=True)
            for e in self.entities
        ]

    def config(self, entity: Entity) -> dict[str, Any]:
        model = self.model
        unit = model.metrics.get(entity.metric, "")
        unique = f"{self.member.device_id}_{entity.metric}"
        if entity.component == "sensor":
            config: dict[str, Any] = {
                "name": entity.metric.capitalize(),
                "unique_id": unique,
                "state_topic": self.state_topic,
                "value_template": f"{{{{ value_json.{entity.metric} }}}}",
                "availability_topic": self.availability,
                "device": {
                    "identifiers": [model.device_id],
                    "name": model.name,
                    "model": model.kind,
                    "manufacturer": MANUFACTURER,
                },
            }
            if unit:
                config["unit_of_measurement"] = unit
        else:
            # The abbreviated form, with `~` for the entity's own topics.
            config = {
                "~": self.root(entity),
                "name": entity.metric.capitalize(),
                "uniq_id": unique,
                "cmd_t": "~/set",
                "stat_t": self.state_topic,
                "val_tpl": f"{{{{value_json['{entity.metric}']}}}}",
                "avty_t": self.availability,
                "dev": {
                    "ids": [model.device_id],
                    "name": model.name,
                    "mdl": model.kind,
                    "mf": MANUFACTURER,
                },
            }
            if unit:
                config["unit_of_meas"] = unit
        return {**config, **dict(entity.extra)}

    def online(self) -> list[Message]:
        return [Message(self.availability, ONLINE, retain=True)]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return list(self.commands)

    def parse(self, topic: str, payload: bytes) -> Request | None:
        entity = self.commands.get(topic)
        if entity is None:
            return None
        try:
            text = payload.decode().strip()
        except UnicodeDecodeError:
            raise BadCommand("not UTF-8") from None
        value: Value = text
        if entity.component == "switch":
            value = {"ON": True, "OFF": False}.get(text, text)
        elif entity.component == "number":
            try:
                value = float(text)
            except ValueError:
                return Request(refused=f"{text!r:.40} is not a number")
        return Request((Action(f"set_{entity.metric}", write=(entity.metric, value)),))

    def state(self, values: dict[str, Value]) -> bytes:
        return orjson.dumps({metric: on_off(value) for metric, value in values.items()})

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [Message(self.state_topic, self.state(values))]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        # Home Assistant learns a command's effect only from the state topic; a refused one
        # leaves the old state there, and the gateway's wait for the echo times out.
        return [Message(self.state_topic, self.state(values))]


def gateway_settings(base: str) -> dict[str, Any]:
    return {
        "conventions.homeassistant.enabled": True,
        "conventions.homeassistant.discovery_prefix": base,
    }


ENCODER = Encoder("homeassistant", "homeassistant", HomeAssistantSpeaker, gateway_settings)
