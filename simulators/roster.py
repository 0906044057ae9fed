"""Turn a FleetConfig into concrete devices (ids, names, models, faults) and connection groups.

Pure and deterministic: the same config and seed give the same devices, the same physics and the
same faulty devices, which makes a misbehaving run repeatable.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from simulators.config import FleetConfig
from simulators.devices import DEVICE_TYPES, DeviceModel
from simulators.faults import DeviceFaults, assign_faults

PLACES = ("Living room", "Kitchen", "Bedroom", "Office", "Hallway", "Garage", "Bathroom",
          "Attic", "Cellar", "Nursery", "Workshop", "Porch")  # fmt: skip
LABELS = {"environment": "sensor", "thermostat": "thermostat", "switch": "plug", "meter": "meter"}
VEHICLES = ("Van", "Truck", "Bike", "Scooter", "Car", "Bus")


@dataclass(slots=True)
class Member:
    """One device of the fleet: its model, its faults, its rate and its own random stream.

    `rng` drives timing and faults; the model has a separate stream, so switching a fault on
    does not change the physics a seed produces.
    """

    model: DeviceModel
    faults: DeviceFaults
    rate: float
    rng: random.Random
    #: `Living room/Thermostat`: the name as a Zigbee2MQTT user would give it, grouped by area
    #: (spaces and `/` included, which is what makes real names messy); an explicit name as is
    friendly_name: str = ""

    @property
    def device_id(self) -> str:
        return self.model.device_id


def _area_and_label(kind: str, index: int) -> tuple[str, str]:
    if kind == "tracker":
        return "Fleet", f"{VEHICLES[index % len(VEHICLES)]} {index // len(VEHICLES) + 1}"
    lap = index // len(PLACES)
    label = LABELS.get(kind, kind) + (f" {lap + 1}" if lap else "")
    return PLACES[index % len(PLACES)], label


def display_name(kind: str, index: int) -> str:
    """`Kitchen thermostat`, `Van 3`: readable on a dashboard, stable for a given index."""
    area, label = _area_and_label(kind, index)
    return label if kind == "tracker" else f"{area} {label}"


def friendly_name(kind: str, index: int) -> str:
    """`Kitchen/Thermostat`, `Fleet/Van 3`: the same device named by area, Zigbee2MQTT style."""
    area, label = _area_and_label(kind, index)
    return f"{area}/{label[:1].upper()}{label[1:]}"


def build_roster(config: FleetConfig, seed: int) -> list[Member]:
    """Every device of the fleet, in config order; ids are numbered per stem, so never clash."""
    numbers: Counter[str] = Counter()
    per_type: Counter[str] = Counter()
    members: list[Member] = []
    faults = assign_faults(config.faults, config.devices, random.Random(f"{seed}:faults"))
    for group in config.groups:
        cls = DEVICE_TYPES[group.type]
        stem = group.stem or cls.id_stem
        for i in range(group.count):
            numbers[stem] += 1
            device_id = f"{stem}-{numbers[stem]}"
            index = per_type[group.type]
            named = i < len(group.names)
            name = group.names[i] if named else display_name(group.type, index)
            friendly = group.names[i] if named else friendly_name(group.type, index)
            per_type[group.type] += 1
            model = cls(device_id, random.Random(f"{seed}:{device_id}:model"), name)
            rate = config.rate if group.rate is None else group.rate
            rng = random.Random(f"{seed}:{device_id}:agent")
            members.append(Member(model, faults[len(members)], rate, rng, friendly))
    return members


def plan_links(members: list[Member], connections: int) -> list[list[Member]]:
    """Which devices share an MQTT connection.

    0 connections (or at least one per device) → every device alone, with its own last will.
    Otherwise devices share `connections` links round-robin, except devices with the `drop`
    fault: dropping is a connection event, so they always get their own link and their will.
    """
    if connections <= 0 or connections >= len(members):
        return [[member] for member in members]
    alone = [[member] for member in members if member.faults.drop]
    shared_members = [member for member in members if not member.faults.drop]
    shared: list[list[Member]] = [[] for _ in range(min(connections, len(shared_members)))]
    for i, member in enumerate(shared_members):
        shared[i % len(shared)].append(member)
    return shared + alone
