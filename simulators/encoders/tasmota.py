"""Tasmota (https://tasmota.github.io/docs/MQTT/), FullTopic `%prefix%/%topic%/` under the base.

tele/switch-1/LWT       Online | Offline                                 (retained; the last will)
tele/switch-1/INFO1     {"Info1": {"Module": "Sonoff Pow R2", "Version": "13.4.0(tasmota)", …}}
tele/switch-1/STATE     {"Time": "2025-11-25T17:40:00", "POWER": "ON"}
tele/switch-1/SENSOR    {"Time": "…", "ENERGY": {"Power": 41.2}}
cmnd/switch-1/POWER     ON | OFF | TOGGLE | (empty: ask)                 (from the gateway)
stat/switch-1/RESULT    {"POWER": "ON"}
stat/switch-1/POWER     ON

The device's Tasmota topic is its device id. With a base topic `b` the FullTopic is
`b/%prefix%/%topic%/` (a layout Tasmota users configure), so tests can keep fleets apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from gateway.models import Value
from simulators.encoders.base import (
    Action,
    BadCommand,
    Encoder,
    Message,
    Outcome,
    Request,
    Speaker,
    join,
    on_off,
)

if TYPE_CHECKING:
    from simulators.roster import Member

ONLINE, OFFLINE = b"Online", b"Offline"
# Tasmota's Power command accepts these words and numbers (https://tasmota.github.io/docs/Commands/#power).
POWER_WORDS = {
    "0": "turn_off",
    "off": "turn_off",
    "false": "turn_off",
    "1": "turn_on",
    "on": "turn_on",
    "true": "turn_on",
    "2": "toggle",
    "toggle": "toggle",
}
MODULES = {
    "switch": "Sonoff Pow R2",
    "meter": "PZEM-004T",
    "environment": "Generic",
    "thermostat": "Generic",
    "tracker": "Generic",
}


def _sensor(kind: str, v: dict[str, Value]) -> dict[str, Any]:
    """The SENSOR body of one reading: nested objects per sensor chip, like the firmware."""
    if kind == "environment":
        chip = {
            "Temperature": v["temperature"],
            "Humidity": v["humidity"],
            "Pressure": v["pressure"],
        }
        return {"BME280": chip, "Battery": v["battery"], "PressureUnit": "hPa", "TempUnit": "C"}
    if kind == "thermostat":
        # Modelled on Tasmota's thermostat driver; the mode in the simulator's own words.
        control = {
            "TempTargetSet": v["target"],
            "ThermostatModeSet": v["mode"],
            "Action": v["action"],
        }
        return {
            "DS18B20": {"Temperature": v["temperature"]},
            "Thermostat0": control,
            "TempUnit": "C",
        }
    if kind == "switch":
        return {"ENERGY": {"Power": v["power"]}}
    if kind == "meter":
        return {
            "ENERGY": {
                "Total": v["energy"],
                "Power": v["power"],
                "Voltage": v["voltage"],
                "Current": v["current"],
            }
        }
    return {"GPS": {"lat": v["lat"], "lon": v["lon"], "speed": v["speed"], "heading": v["heading"]}}


@dataclass(frozen=True, slots=True)
class Command:
    """A Tasmota command a device type accepts: the key it answers with, and its action."""

    key: str
    metric: str
    action: Callable[[str], Action | None]  # None: a value the command does not take


def _power(text: str) -> Action | None:
    command = POWER_WORDS.get(text.strip().lower())
    return Action(command, key="POWER") if command else None


def _target(text: str) -> Action | None:
    try:
        return Action("set_target", key="TempTargetSet", write=("target", float(text)))
    except ValueError:
        return None


def _mode(text: str) -> Action:
    return Action("set_mode", key="ThermostatModeSet", write=("mode", text.strip().lower()))


# Tasmota command names are case-insensitive; POWER1 is the first (here the only) relay.
COMMANDS: dict[str, dict[str, Command]] = {
    "switch": {"POWER": Command("POWER", "on", _power), "POWER1": Command("POWER", "on", _power)},
    "thermostat": {
        "TEMPTARGETSET": Command("TempTargetSet", "target", _target),
        "THERMOSTATMODESET": Command("ThermostatModeSet", "mode", _mode),
    },
}


class TasmotaSpeaker(Speaker):
    def __init__(self, member: Member, base: str) -> None:
        super().__init__(member, base)
        self.name = member.device_id
        self.commands = COMMANDS.get(self.model.kind, {})

    def topic(self, prefix: str, leaf: str) -> str:
        return join(self.base, prefix, self.name, leaf)

    def will(self) -> Message:
        return Message(self.topic("tele", "LWT"), OFFLINE, retain=True)

    def announce(self) -> list[Message]:
        info = {
            "Module": MODULES[self.model.kind],
            "Version": "13.4.0(tasmota)",
            "FallbackTopic": f"cmnd/DVES_{self.name}_fb/",
            "GroupTopic": "cmnd/tasmotas/",
        }
        # Not retained, as in the firmware: a gateway started later sees no module name.
        return [Message(self.topic("tele", "INFO1"), orjson.dumps({"Info1": info}))]

    def online(self) -> list[Message]:
        return [Message(self.topic("tele", "LWT"), ONLINE, retain=True)]

    def offline(self) -> list[Message]:
        return [self.will()]

    def command_filters(self) -> list[str]:
        return [self.topic("cmnd", "+")]

    def parse(self, topic: str, payload: bytes) -> Request | None:
        prefix = join(self.base, "cmnd", self.name) + "/"
        if not topic.startswith(prefix) or "/" in topic[len(prefix) :]:
            return None
        leaf = topic[len(prefix) :]
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise BadCommand("not UTF-8") from None
        command = self.commands.get(leaf.upper())
        if command is None:
            return Request(refused="Unknown")
        if not text.strip():
            return Request(key=command.key)  # an empty payload asks for the current value
        action = command.action(text)
        return Request((action,)) if action else Request(key=command.key, refused="Error")

    def reading(self, values: dict[str, Value], ts: float) -> list[Message]:
        # Tasmota's Time is local time without a zone (so clock skew shows here too).
        stamp = {"Time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ts))}
        body = {**stamp, **_sensor(self.model.kind, values)}
        sensor = Message(self.topic("tele", "SENSOR"), orjson.dumps(body))
        if "on" not in values:
            return [sensor]
        # STATE before SENSOR, as the firmware does every TelePeriod.
        state = {**stamp, "POWER": on_off(values["on"])}
        return [Message(self.topic("tele", "STATE"), orjson.dumps(state)), sensor]

    def answer(
        self, request: Request, outcomes: list[Outcome], values: dict[str, Value]
    ) -> list[Message]:
        result = self.topic("stat", "RESULT")
        if request.refused or any(not o.ok for o in outcomes):
            body = {"Command": request.refused or "Error"}
            return [Message(result, orjson.dumps(body))]
        key = outcomes[0].action.key if outcomes else request.key
        metric = next(c.metric for c in self.commands.values() if c.key == key)
        value = on_off(values[metric])
        messages = [Message(result, orjson.dumps({key: value}))]
        if key == "POWER":
            messages.append(Message(self.topic("stat", "POWER"), str(value).encode()))
        return messages


def full_topic(base: str) -> str:
    return join(base, "%prefix%/%topic%/")


def gateway_settings(base: str) -> dict[str, Any]:
    return {"conventions.tasmota.enabled": True, "conventions.tasmota.full_topic": full_topic(base)}


ENCODER = Encoder("tasmota", "", TasmotaSpeaker, gateway_settings)
