"""Devices whose values are wide, many or moving: what the fleet table, the track view and the
accessibility audit are tried on (stand-ins publishing the metric names real devices use)."""

from __future__ import annotations

from typing import Any

#: A Zigbee2MQTT-style radiator valve: long metric names, six values.
VALVE: dict[str, Any] = {
    "type": "radiator valve",
    "name": "Upstairs landing radiator valve",
    "metrics": {
        "local_temperature": {"unit": "°C"},
        "occupied_heating_setpoint": {"unit": "°C"},
        "running_state": {},
        "pi_heating_demand": {"unit": "%"},
        "battery": {"unit": "%"},
        "linkquality": {"unit": "lqi"},
    },
    "commands": {},
}
VALVE_VALUES: dict[str, Any] = {
    "local_temperature": 21.45,
    "occupied_heating_setpoint": 21.5,
    "running_state": "heat",
    "pi_heating_demand": 34,
    "battery": 87,
    "linkquality": 142,
}

#: A three-phase meter: large numbers with decimals.
METER: dict[str, Any] = {
    "type": "energy meter",
    "name": "Main feed",
    "metrics": {
        "energy": {"unit": "kWh"},
        "power": {"unit": "W"},
        "voltage": {"unit": "V"},
        "current": {"unit": "A"},
    },
    "commands": {},
}
METER_VALUES: dict[str, Any] = {
    "energy": 123456.78,
    "power": 12843.7,
    "voltage": 230.4,
    "current": 55.125,
}

#: A GPS tracker as Zigbee2MQTT or Home Assistant would name its metrics.
TRACKER: dict[str, Any] = {
    "type": "tracker",
    "name": "Van 3",
    "metrics": {
        "latitude": {"unit": "°"},
        "longitude": {"unit": "°"},
        "speed": {"unit": "km/h"},
        "heading": {"unit": "°"},
    },
    "commands": {},
}
