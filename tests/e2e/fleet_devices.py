"""Devices whose values are wide, many or moving: what the fleet table, the track view and the
accessibility audit are tried on (stand-ins publishing the metric names real devices use)."""

from __future__ import annotations

from typing import Any

from tests.e2e.stack import set_status
from tests.support.devices import AddDevice

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


async def add_mixed_fleet(add_device: AddDevice) -> None:
    """Four devices, by name: Living room (thermo-1, a thermostat), Main feed (meter-1, a meter
    gone offline), Upstairs landing radiator valve (trv-1, six values) and Van 3 (van-3, a
    tracker that has moved once)."""
    valve = await add_device("trv-1", VALVE)
    await valve.telemetry(VALVE_VALUES)
    meter = await add_device("meter-1", METER)
    await meter.telemetry(METER_VALUES)
    await set_status(meter, "offline")
    tracker = await add_device("van-3", TRACKER)
    await tracker.telemetry({"latitude": 51.5074, "longitude": -0.1278, "speed": 31.0})
    await tracker.telemetry({"latitude": 51.5076, "longitude": -0.1270, "speed": 33.0})
    thermostat = await add_device("thermo-1")
    await thermostat.telemetry({"temperature": 20.5, "heating": True, "mode": "heat"})
