"""Environmental sensor: temperature, humidity and pressure wandering smoothly, battery draining."""

from __future__ import annotations

import random
from typing import ClassVar

from gateway.models import Value
from simulators.devices.base import DeviceModel, clamp, daily_wave, wander

#: Battery percent lost per hour of running and per reading sent (the radio is the big consumer).
DRAIN_PER_HOUR = 0.05
DRAIN_PER_READING = 0.0005


class EnvironmentSensor(DeviceModel):
    kind = "environment"
    id_stem = "env"
    metrics: ClassVar[dict[str, str]] = {
        "temperature": "°C",
        "humidity": "%",
        "pressure": "hPa",
        "battery": "%",
    }

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        super().__init__(device_id, rng, name)
        self.base_temp = rng.uniform(12.0, 24.0)
        self.swing = rng.uniform(2.0, 6.0)  # half the day/night difference
        self.base_pressure = rng.uniform(995.0, 1030.0)
        self.temperature = self.base_temp
        self.humidity = rng.uniform(35.0, 65.0)
        self.pressure = self.base_pressure
        self.battery = rng.uniform(60.0, 100.0)

    def advance(self, now: float, dt: float) -> None:
        rng = self.rng
        mean_temp = self.base_temp + self.swing * daily_wave(now, peak_hour=15.0)
        self.temperature = wander(self.temperature, mean_temp, dt, 600.0, 0.4, rng)
        # Warmer air holds more water: relative humidity falls as the temperature rises.
        mean_humidity = clamp(55.0 - 1.8 * (self.temperature - self.base_temp), 5.0, 95.0)
        self.humidity = clamp(wander(self.humidity, mean_humidity, dt, 900.0, 2.0, rng), 0.0, 100.0)
        self.pressure = wander(self.pressure, self.base_pressure, dt, 7200.0, 3.0, rng)
        self.battery = max(self.battery - DRAIN_PER_HOUR * dt / 3600.0 - DRAIN_PER_READING, 0.0)

    def readings(self) -> dict[str, Value]:
        noise = self.rng.gauss
        return {
            "temperature": round(self.temperature + noise(0, 0.03), 2),
            "humidity": round(clamp(self.humidity + noise(0, 0.2), 0.0, 100.0), 1),
            "pressure": round(self.pressure + noise(0, 0.05), 1),
            # No noise: a fuel gauge that goes up again would be a bug, not realism.
            "battery": round(self.battery, 2),
        }
