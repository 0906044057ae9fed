"""Power meter: voltage, current, power and an energy register that only ever counts up."""

from __future__ import annotations

import random
from typing import ClassVar

from gateway.models import Value
from simulators.devices.base import DeviceModel, daily_wave, wander

POWER_FACTOR = 0.95


class PowerMeter(DeviceModel):
    kind = "meter"
    id_stem = "meter"
    metrics: ClassVar[dict[str, str]] = {
        "voltage": "V",
        "current": "A",
        "power": "W",
        "energy": "kWh",
    }

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        super().__init__(device_id, rng, name)
        self.nominal_v = rng.choice((230.0, 230.0, 120.0))
        self.base_a = rng.uniform(0.5, 4.0)
        self.voltage = self.nominal_v
        self.current = self.base_a
        self.energy_kwh = rng.uniform(100.0, 5000.0)

    @property
    def power_w(self) -> float:
        return self.voltage * self.current * POWER_FACTOR

    def advance(self, now: float, dt: float) -> None:
        self.voltage = wander(
            self.voltage, self.nominal_v, dt, 60.0, 0.01 * self.nominal_v, self.rng
        )
        # Household load peaks in the evening.
        mean_a = self.base_a * (1.0 + 0.6 * daily_wave(now, peak_hour=19.0))
        self.current = max(
            wander(self.current, mean_a, dt, 120.0, 0.2 * self.base_a, self.rng), 0.0
        )
        # Power is never negative, so the integrated energy register is monotonic.
        self.energy_kwh += self.power_w * dt / 3_600_000.0

    def readings(self) -> dict[str, Value]:
        return {
            "voltage": round(self.voltage, 1),
            "current": round(self.current, 3),
            "power": round(self.power_w, 1),
            # Rounding is monotonic too, so the reported register never goes backwards.
            "energy": round(self.energy_kwh, 4),
        }
