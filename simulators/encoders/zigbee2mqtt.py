"""Zigbee2MQTT (https://www.zigbee2mqtt.io/guide/usage/mqtt_topics_and_messages.html), as a bridge.

zigbee2mqtt/bridge/devices                     [{"friendly_name": "Kitchen/Thermostat",
                                                 "definition": {"exposes": […]}, …}, …] (retained)
zigbee2mqtt/Kitchen/Thermostat                 {"local_temperature": 20.4,
                                                 "occupied_heating_setpoint": 21, …}
zigbee2mqtt/Kitchen/Thermostat/availability    {"state": "online"}                    (retained)
zigbee2mqtt/Kitchen/Thermostat/set             {"occupied_heating_setpoint": 22}  (from the gateway)

The whole fleet is one bridge: `bridge/devices` lists every device with exposes describing its
properties, settable ones with access bit 2. A `/set` takes effect at once and shows in the state
message published right after it, which is Zigbee2MQTT's only answer to a command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from gateway.conventions.common import load_json_object
from gateway.errors import DecodeError
from gateway.models import Value
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

# Exposes access bits (https://www.zigbee2mqtt.io/guide/usage/exposes.html#access).
STATE, SET, GET = 1, 2, 4
ONLINE = orjson.dumps({"state": "online"})
OFFLINE = orjson.dumps({"state": "offline"})
ACTIONS = {"heating": "heat", "cooling": "cool", "idle": "idle"}  # running_state's values


def _same(value: Value) -> Value:
    return value


@dataclass(frozen=True, slots=True)
class Prop:
    """One model metric as a Zigbee2MQTT property: its expose, and the value both ways."""

    metric: str
    expose: dict[str, Any]
    to_wire: Callable[[Value], Value] = _same
    from_wire: Callable[[Value], Value] = _same

    @property
    def name(self) -> str:
        return str(self.expose["property"])


def numeric(name: str, unit: str, access: int = STATE, **extra: Any) -> dict[str, Any]:
    return {
        "type": "numeric",
        "name": name,
        "property": name,
        "unit": unit,
        "access": access,
        **extra,
    }


def enum(name: str, values: list[str], access: int = STATE) -> dict[str, Any]:
    return {"type": "enum", "name": name, "property": name, "values": values, "access": access}


@dataclass(frozen=True, slots=True)
class Model:
    """A Zigbee device definition the simulator presents for one device type."""

    model: str
    vendor: str
    description: str
    props: tuple[Prop, ...]
    power_source: str = "Mains (single phase)"
    #: a specific expose (`climate`, `switch`) grouping these properties, as real definitions do
    group: str = ""
    by_name: dict[str, Prop] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_name.update({p.name: p for p in self.props})

    def exposes(self) -> list[dict[str, Any]]:
        grouped = [p.expose for p in self.props if p.expose["access"] & SET]
        rest = [p.expose for p in self.props if not p.expose["access"] & SET]
        if not self.group or not grouped:
            return [*grouped, *rest]
        return [{"type": self.group, "features": grouped}, *rest]


STATE_EXPOSE = {
    "type": "binary",
    "name": "state",
    "property": "state",
    "value_on": "ON",
    "value_off": "OFF",
    "value_toggle": "TOGGLE",
    "access": STATE | SET | GET,
}
MODELS: dict[str, Model] = {
    "thermostat": Model(
        "SPZB0001",
        "Eurotronic",
        "Spirit Zigbee wireless heater thermostat",
        (
            Prop("temperature", numeric("local_temperature", "°C")),
            Prop(
                "target",
                numeric(
                    "occupied_heating_setpoint",
                    "°C",
                    STATE | SET | GET,
                    value_min=5,
                    value_max=30,
                    value_step=0.5,
                ),
            ),
            Prop("mode", enum("system_mode", ["off", "heat", "cool", "auto"], STATE | SET | GET)),
            Prop(
                "action",
                enum("running_state", ["idle", "heat", "cool"]),
                lambda v: ACTIONS.get(str(v), v),
            ),
        ),
        power_source="Battery",
        group="climate",
    ),
    "switch": Model(
        "SP 120",
        "Innr",
        "Smart plug",
        (
            Prop("on", STATE_EXPOSE, on_off, lambda v: {"ON": True, "OFF": False}.get(str(v), v)),
            Prop("power", numeric("power", "W", STATE | GET)),
        ),
        group="switch",
    ),
    "environment": Model(
        "WSDCGQ11LM",
        "Aqara",
        "Temperature, humidity and pressure sensor",
        (
            Prop("temperature", numeric("temperature", "°C")),
            Prop("humidity", numeric("humidity", "%")),
            Prop("pressure", numeric("pressure", "hPa")),
            Prop("battery", numeric("battery", "%")),
        ),
        power_source="Battery",
    ),
    "meter": Model(
        "TS011F_plug_1",
        "TuYa",
        "Smart plug (with power monitoring)",
        (
            Prop("voltage", numeric("voltage", "V")),
            Prop("current", numeric("current", "A")),
            Prop("power", numeric("power", "W")),
            Prop("energy", numeric("energy", "kWh")),
        ),
    ),
    "tracker": Model(
        "iotgw-gps",
        "iotgw",
        "GPS tracker (no such Zigbee device exists: generic exposes)",
        (
            Prop("lat", numeric("latitude", "°")),
            Prop("lon", numeric("longitude", "°")),
            Prop("speed", numeric("speed", "km/h")),
            Prop("heading", numeric("heading", "°")),
        ),
        power_source="Battery",
    ),
}


class Zigbee2MqttSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.spec = MODELS[self.model.kind]
        self.friendly_name = member.friendly_name or self.model.name
        self.topic = f"{base}/{self.friendly_name}"

    def will(self) -> Message:
        # Zigbee2MQTT itself publishes a device's availability; a device with a connection of
        # its own lets the broker say it on its behalf, so an abrupt loss still shows.
        return Message(f"{self.topic}/availability", OFFLINE, retain=True)

    def announce(self) -> list[Message]:
        return []  # the bridge announces every device at once

    def online(self) -> list[Message]:
        return [Message(f"{self.topic}/availability", ONLINE, retain=True)]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return [f"{self.topic}/set"]

    def parse(self, topic: str, payload: bytes) -> Request | None:
        if topic != f"{self.topic}/set":
            return None
        try:
            body = load_json_object(payload, "set")
        except DecodeError as exc:
            raise BadCommand(exc.detail) from None
        actions = []
        for key, value in body.items():
            prop = self.spec.by_name.get(key)
            if prop is None or not prop.expose["access"] & SET:
                continue  # Zigbee2MQTT logs "No converter available" and carries on
            toggle = prop.expose.get("value_toggle")
            if toggle is not None and value == toggle:
                actions.append(Action("toggle", key=key))
            else:
                write = (prop.metric, prop.from_wire(value))
                actions.append(Action(f"set_{key}", key=key, write=write))
        return Request(tuple(actions))

    def state(self, values: dict[str, Value]) -> bytes:
        return orjson.dumps({p.name: p.to_wire(values[p.metric]) for p in self.spec.props})

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        return [Message(self.topic, self.state(values))]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        # The state right after the set is the echo the gateway matches; a refused value simply
        # does not show in it (Zigbee2MQTT reports failures only in its log).
        return [Message(self.topic, self.state(values))]

    def bridge_entry(self) -> dict[str, Any]:
        digest = hashlib.sha1(self.member.device_id.encode()).hexdigest()
        battery = self.spec.power_source == "Battery"
        return {
            "ieee_address": f"0x{digest[:16]}",
            "network_address": int(digest[16:20], 16),
            "type": "EndDevice" if battery else "Router",
            "friendly_name": self.friendly_name,
            "supported": True,
            "disabled": False,
            "interview_completed": True,
            "power_source": self.spec.power_source,
            "definition": {
                "model": self.spec.model,
                "vendor": self.spec.vendor,
                "description": self.spec.description,
                "exposes": self.spec.exposes(),
                "options": [],
            },
        }


def bridge(speakers: list[Speaker], base: str) -> list[Message]:
    """bridge/devices (the coordinator, then every device of the fleet) and bridge/state, both
    retained."""
    coordinator = {
        "ieee_address": "0x00124b0000000000",
        "type": "Coordinator",
        "friendly_name": "Coordinator",
        "network_address": 0,
        "definition": None,
    }
    entries = [s.bridge_entry() for s in speakers if isinstance(s, Zigbee2MqttSpeaker)]
    return [
        Message(f"{base}/bridge/devices", orjson.dumps([coordinator, *entries]), retain=True),
        Message(f"{base}/bridge/state", ONLINE, retain=True),
    ]


def gateway_settings(base: str) -> dict[str, Any]:
    return {"conventions.zigbee2mqtt.enabled": True, "conventions.zigbee2mqtt.base_topic": base}


ENCODER = Encoder("zigbee2mqtt", "zigbee2mqtt", Zigbee2MqttSpeaker, gateway_settings, bridge)
