"""Simulated IoT devices speaking the gateway's native MQTT convention, from one to thousands.

The public API: `Fleet` and `FleetConfig` to run a fleet in-process, `DeviceGroup` and
`mixed_groups` to say which devices, `FaultConfig` and `Share` for fault injection, and
`simulators.cli` for the command line (`iotgw simulate`, `python -m simulators`).
"""

from simulators.config import Broker, DeviceGroup, FleetConfig, mixed_groups
from simulators.devices import DEVICE_TYPES, CommandRejected, DeviceModel
from simulators.faults import FaultConfig, Share
from simulators.fleet import Fleet
from simulators.stats import FleetStats

__all__ = [
    "DEVICE_TYPES",
    "Broker",
    "CommandRejected",
    "DeviceGroup",
    "DeviceModel",
    "FaultConfig",
    "Fleet",
    "FleetConfig",
    "FleetStats",
    "Share",
    "mixed_groups",
]
