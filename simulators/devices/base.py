"""What every simulated device model shares: its announced meta, and commands checked against it.

A model is pure logic: it owns its physical state and a seeded `random.Random`, advances when
`step(now)` is called and never touches the clock or the network itself, so the same seed and the
same sequence of times give the same readings in tests and in the fleet.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from gateway.errors import CommandError
from gateway.meta import parse_meta, validate_params
from gateway.models import Value

#: Longest gap one `step` integrates over; a device that slept for a day should not jump a day.
MAX_STEP_S = 60.0
SECONDS_PER_DAY = 86_400.0

CommandHandler = Callable[[dict[str, Value]], dict[str, Value]]


class CommandRejected(Exception):
    """Raised when a device refuses a command; the message goes back in the result's `error`."""


class DeviceModel(ABC):
    """One simulated device: `meta()` to announce, `step(now)` for readings, `handle()` commands."""

    #: the `type` announced in meta, and the name used by --types and profiles
    kind: ClassVar[str]
    #: short stem for generated device ids (`thermo-3`)
    id_stem: ClassVar[str]
    #: metric → unit, as announced in meta
    metrics: ClassVar[dict[str, str]]
    #: command → params spec in the meta JSON shape of docs/conventions.md
    commands: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    #: metrics a property-writing convention (Zigbee2MQTT, Home Assistant, Homie) may set
    settable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, device_id: str, rng: random.Random, name: str = "") -> None:
        self.device_id = device_id
        self.name = name or device_id
        self.rng = rng
        self._last: float | None = None
        # A real device cannot trust the gateway: it checks commands against the very meta it
        # announces, with the gateway's own validator so both sides agree on what "valid" means.
        self._spec = parse_meta(self.meta())
        self._handlers: dict[str, CommandHandler] = self.command_handlers()

    def meta(self) -> dict[str, Any]:
        """The JSON object this device publishes, retained, on its meta topic."""
        return {
            "type": self.kind,
            "name": self.name,
            "metrics": {metric: {"unit": unit} for metric, unit in self.metrics.items()},
            "commands": {cmd: {"params": params} for cmd, params in self.commands.items()},
        }

    def step(self, now: float) -> dict[str, Value]:
        """Advance the physics to wall-clock `now` (epoch seconds); one reading per metric."""
        dt = 0.0 if self._last is None else min(max(now - self._last, 0.0), MAX_STEP_S)
        self._last = now
        self.advance(now, dt)
        return self.readings()

    @abstractmethod
    def advance(self, now: float, dt: float) -> None:
        """Integrate the state over `dt` seconds ending at `now`."""

    @abstractmethod
    def readings(self) -> dict[str, Value]:
        """The current values, as the device reports them (rounded like real firmware would)."""

    def command_handlers(self) -> dict[str, CommandHandler]:
        """Command name → handler taking validated params; one entry per declared command."""
        return {}

    def handle(self, command: str, params: object) -> dict[str, Value]:
        """Validate and apply one command; the change shows in the next `step`'s readings."""
        spec = self._spec.commands.get(command)
        handler = self._handlers.get(command)
        if spec is None or handler is None:
            raise CommandRejected(f"unknown command {command!r:.80}")
        try:
            valid = validate_params(command, spec, params)
        except CommandError as exc:
            raise CommandRejected(exc.message) from None
        return handler(valid)

    def write(self, metric: str, value: object) -> dict[str, Value]:
        """Set one metric the way a property-writing convention asks, through its own command
        (`set_<metric>` with one param named like the metric), so validation stays in one place."""
        if metric not in self.settable:
            raise CommandRejected(f"{metric!r:.80} is not settable")
        return self.handle(f"set_{metric}", {metric: value})


def relax(value: float, target: float, dt: float, tau: float) -> float:
    """Exact first-order approach of `value` toward `target` with time constant `tau` seconds."""
    return target + (value - target) * math.exp(-dt / tau)


def wander(
    value: float, mean: float, dt: float, tau: float, sigma: float, rng: random.Random
) -> float:
    """One Ornstein-Uhlenbeck step: a smooth random walk pulled back toward `mean`.

    `sigma` is the long-run standard deviation around the mean, so it reads as "± this much"
    regardless of how often the device is stepped.
    """
    if dt <= 0.0:
        return value
    decay = math.exp(-dt / tau)
    return mean + (value - mean) * decay + sigma * math.sqrt(1.0 - decay * decay) * rng.gauss(0, 1)


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)


def daily_wave(now: float, peak_hour: float) -> float:
    """-1..1 over a (UTC) day, 1 at `peak_hour`: the slow drift of temperatures and loads."""
    phase = (now % SECONDS_PER_DAY) / 3600.0 - peak_hour
    return math.cos(2.0 * math.pi * phase / 24.0)
