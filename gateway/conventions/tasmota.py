"""Tasmota (https://tasmota.github.io/docs/MQTT/), with the default FullTopic `%prefix%/%topic%/`.

tele/plug-7/LWT      Online | Offline                                   (retained; the last will)
tele/plug-7/STATE    {"Time": "…", "UptimeSec": 312, "POWER": "ON", "Wifi": {"RSSI": 100}}
tele/plug-7/SENSOR   {"Time": "…", "ENERGY": {"Power": 12, "Total": 0.1}, "AM2301": {…}}
stat/plug-7/RESULT   {"POWER": "ON"}                                    (a command's answer)
stat/plug-7/POWER    ON
cmnd/plug-7/POWER    ON | OFF | TOGGLE                                  (published by the gateway)

Tasmota announces no command list, so the commands offered are those its state shows it has:
`POWER`/`POWERn` for each relay, `Dimmer` and `CT` for lights. A command's result is the device's
own answer on stat/…/RESULT (SetOption4 0, the default) or stat/…/<COMMAND> (SetOption4 1).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.conventions.base import Surroundings
from gateway.conventions.common import (
    MAX_DEVICES,
    Echo,
    Echoes,
    Namespace,
    changed_meta,
    flatten,
    is_publish_topic,
    load_json_object,
    load_text,
    not_its_own,
    online_status,
    scoped_id,
)
from gateway.errors import CommandError, ConfigError, DecodeError
from gateway.meta import ShapeCache
from gateway.models import (
    DeviceEvent,
    DeviceMeta,
    Rejected,
    Removed,
    Sample,
    Telemetry,
    Value,
)

TAG = "tasmota"
#: Metrics with units, and state keys, kept per device (what its messages show, bounded).
MAX_KEYS = 256
PREFIX = "%prefix%"
TOPIC = "%topic%"
_POWER = re.compile(r"POWER\d{0,2}")
# Keys that describe a message rather than measure anything.
NOT_READINGS = frozenset({"Time", "TempUnit", "PressureUnit", "SpeedUnit"})
# Leaves whose content the gateway does not use (firmware info, margins, HA discovery state).
IGNORED_TELE = frozenset({"INFO2", "INFO3", "UPTIME", "MARGINS", "HASS_STATE", "LOGGING"})
ENERGY_UNITS = {
    "Total": "kWh",
    "Yesterday": "kWh",
    "Today": "kWh",
    "Power": "W",
    "ApparentPower": "VA",
    "ReactivePower": "var",
    "Voltage": "V",
    "Current": "A",
    "Frequency": "Hz",
}
POWER_PARAMS = {"state": {"type": "string", "enum": ["ON", "OFF", "TOGGLE"]}}
# Tasmota's ranges for Dimmer (0..100 %) and CT (153..500 mired).
LIGHT_COMMANDS = {
    "Dimmer": {"value": {"type": "integer", "min": 0, "max": 100}},
    "CT": {"value": {"type": "integer", "min": 153, "max": 500}},
}


@dataclass(slots=True)
class TasmotaDevice:
    id: str
    topic: str
    module: str = ""
    commands: set[str] = field(default_factory=set)
    state_keys: dict[str, None] = field(default_factory=dict)  # keys tele/STATE has shown
    units: dict[str, str] = field(default_factory=dict)
    meta_raw: dict[str, Any] | None = None


class TasmotaConvention:
    name = "tasmota"
    tag = TAG

    def __init__(
        self,
        full_topic: str = "%prefix%/%topic%/",
        prefix_tele: str = "tele",
        prefix_stat: str = "stat",
        prefix_cmnd: str = "cmnd",
    ) -> None:
        self._levels = _full_topic_levels(full_topic)
        for key, prefix in (("tele", prefix_tele), ("stat", prefix_stat), ("cmnd", prefix_cmnd)):
            if not is_publish_topic(prefix) or "/" in prefix:
                raise ConfigError(f"conventions.tasmota.prefix_{key}", "must be one topic level")
        self._tele, self._stat, self._cmnd = prefix_tele, prefix_stat, prefix_cmnd
        self._at_prefix = self._levels.index(PREFIX)
        self._at_topic = self._levels.index(TOPIC)
        self._devices: dict[str, TasmotaDevice] = {}  # by gateway device id
        self._echoes = Echoes()
        self._shapes: ShapeCache | None = None
        prefixes = (self._tele, self._stat, self._cmnd)
        self.namespace = Namespace(self._topic(prefix, "+", "+") for prefix in prefixes)

    @classmethod
    def from_config(cls, section: Any) -> TasmotaConvention:
        return cls(
            section.full_topic, section.prefix_tele, section.prefix_stat, section.prefix_cmnd
        )

    def bind(self, surroundings: Surroundings) -> None:
        self.namespace = self.namespace.excluding(surroundings.foreign_topics)
        self._shapes = surroundings.shapes

    def subscriptions(self) -> list[str]:
        return [self._topic(prefix, "+", "+") for prefix in (self._tele, self._stat)]

    def owns(self, topic: str) -> bool:
        return self._match(topic) is not None

    def roots(self) -> frozenset[str] | None:
        first = self._levels[0]
        if first == TOPIC:
            return None  # `%topic%/%prefix%/`: the device's own topic comes first
        return frozenset({self._tele, self._stat}) if first == PREFIX else frozenset({first})

    def decode(self, topic: str, payload: bytes, received_at: float) -> list[DeviceEvent]:
        match = self._match(topic)
        if match is None:
            raise DecodeError("unknown_topic", topic)
        prefix, name, leaf = match
        if prefix == self._tele and leaf == "LWT" and not payload.strip():
            # The retained last will cleared: the device was removed.
            device_id = scoped_id(TAG, name)
            self.forget(device_id)
            return [Removed(device_id)]
        device = self._device(name)
        if prefix == self._tele:
            return self._tele_message(device, leaf, payload, received_at)
        return self._stat_message(device, leaf, payload, received_at)

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        known = self._devices.get(device)
        if known is None or command not in known.commands:
            raise CommandError("not_found", f"{device} has not shown a {command!r:.80}")
        # The topic level is the one the device publishes on, never client text.
        topic = self._topic(self._cmnd, known.topic, command)
        if not self.namespace.allows(topic):
            raise not_its_own(device, topic)
        value = params["state"] if _POWER.fullmatch(command) else params["value"]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # "50", not "50.0": Tasmota parses integers
        self._echoes.expect(device, Echo(command_id, _echo_key(command)))
        return topic, str(value).encode()

    def arm(self, device: str, command_id: str, before: Mapping[str, tuple[float, Value]]) -> bool:
        return self._echoes.arm(device, command_id, before)

    def forget(self, device: str) -> list[DeviceEvent]:
        self._devices.pop(device, None)
        self._echoes.forget(device)
        return []

    def owns_command_topic(self, device: str, topic: str) -> bool:
        known = self._devices.get(device)
        command = topic.rpartition("/")[2]
        return (
            known is not None
            and command in known.commands
            and topic == self._topic(self._cmnd, known.topic, command)
            and self.namespace.allows(topic)
        )

    # --- topics ---------------------------------------------------------------------------

    def _topic(self, prefix: str, device_topic: str, leaf: str) -> str:
        levels = [
            prefix if level == PREFIX else device_topic if level == TOPIC else level
            for level in self._levels
        ]
        return "/".join([*levels, leaf])

    def _match(self, topic: str) -> tuple[str, str, str] | None:
        parts = topic.split("/")
        if len(parts) != len(self._levels) + 1:
            return None
        for part, level in zip(parts, self._levels, strict=False):
            if level not in (PREFIX, TOPIC) and part != level:
                return None
        prefix, name, leaf = parts[self._at_prefix], parts[self._at_topic], parts[-1]
        if prefix not in (self._tele, self._stat) or not name or not leaf:
            return None
        return prefix, name, leaf

    def _device(self, name: str) -> TasmotaDevice:
        device_id = scoped_id(TAG, name)
        device = self._devices.get(device_id)
        if device is None:
            device = TasmotaDevice(device_id, name)
            # Past the cap a flood of topics still decodes, but leaves no state behind.
            if len(self._devices) < MAX_DEVICES:
                self._devices[device_id] = device
        return device

    # --- messages -------------------------------------------------------------------------

    def _tele_message(
        self, device: TasmotaDevice, leaf: str, payload: bytes, received_at: float
    ) -> list[DeviceEvent]:
        if leaf == "LWT":
            return [online_status(device.id, payload)]
        if leaf == "SENSOR":
            return self._sensor(device, load_json_object(payload, "SENSOR"), received_at)
        if leaf == "STATE":
            return self._state(device, load_json_object(payload, "STATE"), received_at)
        if leaf == "RESULT":
            return self._result(device, load_json_object(payload, "RESULT"), received_at, False)
        if leaf == "INFO1":
            info = load_json_object(payload, "INFO1")
            inner = info.get("Info1", info)
            module = inner.get("Module") if isinstance(inner, dict) else None
            if isinstance(module, str):
                device.module = module[:64]
            return self._meta_events(device)
        if leaf in IGNORED_TELE:
            return []
        raise DecodeError("unknown_topic", f"tele/…/{leaf[:40]}")

    def _stat_message(
        self, device: TasmotaDevice, leaf: str, payload: bytes, received_at: float
    ) -> list[DeviceEvent]:
        if _POWER.fullmatch(leaf):
            text = load_text(payload).strip().upper()
            if text not in ("ON", "OFF"):
                raise DecodeError("bad_value", f"{leaf}={payload[:40]!r}")
            return self._result(device, {leaf: text}, received_at, True)
        body = load_json_object(payload, leaf[:40])
        if leaf.startswith("STATUS"):
            # Answers to Status: the sensor (8, 10) and state (11) parts hold readings.
            if isinstance(body.get("StatusSNS"), dict):
                return self._sensor(device, body["StatusSNS"], received_at)
            if isinstance(body.get("StatusSTS"), dict):
                return self._state(device, body["StatusSTS"], received_at)
            return []
        # RESULT, or with SetOption4 1 a leaf named after the command: both answer commands.
        return self._result(device, body, received_at, True)

    def _sensor(
        self, device: TasmotaDevice, body: dict[str, Any], received_at: float
    ) -> list[DeviceEvent]:
        events, samples = _readings(body, received_at)
        units = {metric: unit for metric, _, _ in samples if (unit := _unit(metric, body))}
        if _bounded_update(device.units, units):
            events.append(Rejected("too_many_metrics", device.id))
        events += self._meta_events(device)
        return _with_telemetry(device.id, samples, events)

    def _state(
        self, device: TasmotaDevice, body: dict[str, Any], received_at: float
    ) -> list[DeviceEvent]:
        events, samples = _readings(body, received_at)
        keys = dict.fromkeys(k for k in body if isinstance(k, str) and k not in NOT_READINGS)
        if _bounded_update(device.state_keys, keys):
            events.append(Rejected("too_many_metrics", device.id))
        self._learn_commands(device, body)
        events += self._meta_events(device)
        return _with_telemetry(device.id, samples, events)

    def _result(
        self, device: TasmotaDevice, body: dict[str, Any], received_at: float, answers: bool
    ) -> list[DeviceEvent]:
        """A command's answer: state keys become readings, and waiting commands are answered.

        Only state keys (power, dimmer, …) become readings: RESULT also carries settings
        (`{"SetOption19": "OFF"}`) that are no measurements.
        """
        state = {
            k: v
            for k, v in body.items()
            if isinstance(k, str) and (_POWER.fullmatch(k) or k in device.state_keys)
        }
        events, samples = _readings(state, received_at)
        self._learn_commands(device, body)
        events += self._meta_events(device)
        if answers:
            command = body.get("Command")
            if isinstance(command, str) and len(body) == 1:
                # {"Command": "Unknown"} / {"Command": "Error"}: the device refused the command.
                events += self._echoes.fail_oldest(device.id, f"Command {command}")
            for key, value in body.items():
                if isinstance(key, str):
                    events += self._echoes.answer(device.id, _echo_key(key), value, body)
        return _with_telemetry(device.id, samples, events)

    def _learn_commands(self, device: TasmotaDevice, body: dict[str, Any]) -> None:
        for key, value in body.items():
            relay = _POWER.fullmatch(key) is not None and value in ("ON", "OFF")
            if relay or key in LIGHT_COMMANDS:
                device.commands.add(key)

    def _meta_events(self, device: TasmotaDevice) -> list[DeviceEvent]:
        """A MetaChange when what the device has shown changes its meta, else nothing."""
        commands = {
            name: {"params": POWER_PARAMS if _POWER.fullmatch(name) else LIGHT_COMMANDS[name]}
            for name in sorted(device.commands)
        }
        raw = {
            "type": device.module or "tasmota",
            "name": device.topic,
            "metrics": {metric: {"unit": unit} for metric, unit in sorted(device.units.items())},
            "commands": commands,
        }
        found = changed_meta(device, device.id, raw, self._shapes)
        return [found] if found is not None else []


def _bounded_update(kept: dict[str, Any], new: dict[str, Any]) -> bool:
    """Update `kept` with `new`, adding no key past MAX_KEYS; True if some were left out."""
    left_out = False
    for key, value in new.items():
        if key in kept or len(kept) < MAX_KEYS:
            kept[key] = value
        else:
            left_out = True
    return left_out


def _full_topic_levels(full_topic: str) -> list[str]:
    """The configured FullTopic as levels; %prefix% and %topic% must each be a whole level."""
    levels = full_topic.removesuffix("/").split("/")
    problems = [
        f"needs {token} exactly once as a whole level"
        for token in (PREFIX, TOPIC)
        if levels.count(token) != 1
    ]
    if any(
        lvl not in (PREFIX, TOPIC) and ("%" in lvl or not is_publish_topic(lvl)) for lvl in levels
    ):
        problems.append("other levels must be literal (no %hostname%, %id%, wildcards or empty)")
    if problems:
        raise ConfigError("conventions.tasmota.full_topic", "; ".join(problems))
    return levels


def _echo_key(key: str) -> str:
    # POWER and POWER1 name the same relay; a one-relay device answers POWER1 with "POWER".
    key = key.upper()
    return "POWER1" if key == "POWER" else key


def _readings(body: dict[str, Any], received_at: float) -> tuple[list[DeviceEvent], list[Sample]]:
    """Flatten a Tasmota JSON payload; `Time` is the device's local time without a zone, so
    readings carry the receive time instead."""
    events: list[DeviceEvent] = []
    samples: list[Sample] = []
    readings = {k: _channels(v) for k, v in body.items() if k not in NOT_READINGS}
    flatten(readings, "", received_at, samples, events)
    return events, samples


def _channels(value: Any) -> Any:
    """Multi-channel meters (Shelly 2.5, PZEM-016 …) report `"Power": [12, 0]`: one reading per
    channel, numbered from 1 like Tasmota's own relays and channels (`ENERGY.Power.1`)."""
    if isinstance(value, dict):
        return {k: _channels(v) for k, v in value.items()}
    if isinstance(value, list) and 0 < len(value) <= 8:
        return {str(i): v for i, v in enumerate(value, 1)}
    return value


def _with_telemetry(
    device: str, samples: list[Sample], events: list[DeviceEvent]
) -> list[DeviceEvent]:
    return [Telemetry(device, samples), *events] if samples else events


def _unit(metric: str, body: dict[str, Any]) -> str | None:
    """The unit of a SENSOR metric, from Tasmota's fixed energy units and the *Unit keys."""
    sensor, _, quantity = metric.rpartition(".")
    if quantity.isdigit():  # a channel of a multi-channel reading: the quantity's unit
        sensor, _, quantity = sensor.rpartition(".")
    if sensor == "ENERGY":
        return ENERGY_UNITS.get(quantity)
    if quantity in ("Temperature", "DewPoint"):
        scale = body.get("TempUnit")
        return f"°{scale}" if scale in ("C", "F") else None
    if quantity == "Humidity":
        return "%"
    if quantity == "Pressure":
        unit = body.get("PressureUnit")
        return unit[:16] if isinstance(unit, str) else None
    return None
