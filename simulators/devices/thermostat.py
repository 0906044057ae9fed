"""Thermostat: a room whose temperature approaches the target while the thermostat acts on it.

Heating or cooling pulls the room toward the target with time constant `TAU_ACTIVE_S`; otherwise
the room relaxes toward the ambient temperature (outside plus a daily wave) with `TAU_IDLE_S`.
Constants are faster than a real house so a demo visibly responds within a minute.
"""

from __future__ import annotations

import random
from typing import Any, ClassVar

from gateway.models import Value
from simulators.devices.base import CommandHandler, DeviceModel, daily_wave, relax

MODES = ("off", "heat", "cool", "auto")
TARGET_MIN = 5
TARGET_MAX = 30
TAU_ACTIVE_S = 90.0
TAU_IDLE_S = 900.0


class Thermostat(DeviceModel):
    kind = "thermostat"
    id_stem = "thermo"
    metrics: ClassVar[dict[str, str]] = {
        "temperature": "°C",
        "target": "°C",
        "mode": "",
        "action": "",
    }
    commands: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "set_target": {"target": {"type": "number", "min": TARGET_MIN, "max": TARGET_MAX}},
        "set_mode": {"mode": {"type": "string", "enum": list(MODES)}},
    }
    settable: ClassVar[tuple[str, ...]] = ("target", "mode")

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        super().__init__(device_id, rng, name)
        self.target = rng.choice((19.0, 19.5, 20.0, 20.5, 21.0, 21.5, 22.0))
        self.mode = rng.choice(("heat", "auto"))
        self.base_ambient = rng.uniform(12.0, 20.0)
        self.ambient = self.base_ambient
        self.temperature = rng.uniform(16.0, 23.0)
        self.action = "idle"

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {"set_target": self._set_target, "set_mode": self._set_mode}

    def _set_target(self, params: dict[str, Value]) -> dict[str, Value]:
        self.target = float(params["target"])
        return {"target": self.target}

    def _set_mode(self, params: dict[str, Value]) -> dict[str, Value]:
        self.mode = str(params["mode"])
        return {"mode": self.mode}

    def decide(self) -> str:
        """heating, cooling or idle, given the mode and which side of the target the room is on."""
        if self.temperature < self.target and self.mode in ("heat", "auto"):
            return "heating"
        if self.temperature > self.target and self.mode in ("cool", "auto"):
            return "cooling"
        return "idle"

    def advance(self, now: float, dt: float) -> None:
        self.ambient = self.base_ambient + 3.0 * daily_wave(now, peak_hour=15.0)
        self.action = self.decide()
        if self.action == "idle":
            self.temperature = relax(self.temperature, self.ambient, dt, TAU_IDLE_S)
        else:
            # An exact exponential approach never overshoots the target, so one step cannot
            # flip heating into cooling in auto mode.
            self.temperature = relax(self.temperature, self.target, dt, TAU_ACTIVE_S)

    def readings(self) -> dict[str, Value]:
        return {
            "temperature": round(self.temperature + self.rng.gauss(0, 0.02), 2),
            "target": self.target,
            "mode": self.mode,
            "action": self.action,
        }
