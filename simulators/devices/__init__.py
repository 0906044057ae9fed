"""The device types the simulator can run, by the name used in `--types` and profiles."""

from __future__ import annotations

from simulators.devices.base import CommandRejected, DeviceModel
from simulators.devices.environment import EnvironmentSensor
from simulators.devices.meter import PowerMeter
from simulators.devices.switch import SmartSwitch
from simulators.devices.thermostat import Thermostat
from simulators.devices.tracker import GpsTracker

DEVICE_TYPES: dict[str, type[DeviceModel]] = {
    cls.kind: cls for cls in (EnvironmentSensor, Thermostat, SmartSwitch, PowerMeter, GpsTracker)
}

__all__ = [
    "DEVICE_TYPES",
    "CommandRejected",
    "DeviceModel",
    "EnvironmentSensor",
    "GpsTracker",
    "PowerMeter",
    "SmartSwitch",
    "Thermostat",
]
