"""Smart switch / relay: on or off, and the power the connected load draws while on."""

from __future__ import annotations

import random
from typing import Any, ClassVar

from gateway.models import Value
from simulators.devices.base import CommandHandler, DeviceModel, wander

#: Typical loads behind a smart plug, in watts: phone charger … kettle.
LOADS_W = (5.0, 9.0, 40.0, 60.0, 100.0, 450.0, 1200.0, 2000.0)


class SmartSwitch(DeviceModel):
    kind = "switch"
    id_stem = "switch"
    metrics: ClassVar[dict[str, str]] = {"on": "", "power": "W"}
    commands: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "turn_on": {},
        "turn_off": {},
        "toggle": {},
    }
    settable: ClassVar[tuple[str, ...]] = ("on",)

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        super().__init__(device_id, rng, name)
        self.on = rng.random() < 0.5
        self.rated_w = rng.choice(LOADS_W)
        self.load_w = self.rated_w

    def command_handlers(self) -> dict[str, CommandHandler]:
        return {
            "turn_on": lambda _: self._set(True),
            "turn_off": lambda _: self._set(False),
            "toggle": lambda _: self._set(not self.on),
        }

    def write(self, metric: str, value: object) -> dict[str, Value]:
        """`on` is written as a boolean; it maps onto turn_on / turn_off."""
        if metric != "on" or not isinstance(value, bool):
            return super().write(metric, value)
        return self.handle("turn_on" if value else "turn_off", {})

    def _set(self, on: bool) -> dict[str, Value]:
        self.on = on
        return {"on": on}

    def advance(self, now: float, dt: float) -> None:
        # The load itself fluctuates a few percent (mains voltage, thermostatic elements).
        self.load_w = max(
            wander(self.load_w, self.rated_w, dt, 30.0, 0.03 * self.rated_w, self.rng), 0.0
        )

    def readings(self) -> dict[str, Value]:
        return {"on": self.on, "power": round(self.load_w, 1) if self.on else 0.0}
