"""Fault injection: which devices misbehave, how, and the malformed payloads they send.

Every fault picks its devices with the fleet's seeded random generator, so a seed reproduces the
same troublemakers. A share is a count ("3") or a fraction ("0.1", "10%") of the fleet.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import orjson

from gateway.errors import ConfigError
from gateway.models import Value

MALFORMED_KINDS = ("broken_json", "wrong_types", "nan", "oversize")


@dataclass(frozen=True, slots=True)
class Share:
    """How many devices a fault affects: `count` devices, or a `fraction` of the fleet."""

    count: int = 0
    fraction: float = 0.0

    @classmethod
    def parse(cls, text: str | int | float) -> Share:
        """`3` → three devices; `0.25` or `25%` → a quarter of them (rounded up)."""
        raw = str(text).strip()
        try:
            if raw.endswith("%"):
                value = float(raw[:-1]) / 100.0
                is_fraction = True
            else:
                value = float(raw)
                is_fraction = "." in raw or "e" in raw.lower()
        except ValueError:
            raise ValueError(f"{text!r} is not a count (3) or a fraction (0.1, 10%)") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{text!r} must be a non-negative count or fraction")
        if is_fraction:
            if value > 1:
                raise ValueError(f"{text!r}: a fraction must be at most 1 (or 100%)")
            return cls(fraction=value)
        return cls(count=int(value))

    @classmethod
    def from_toml(cls, value: object) -> Share:
        """A profile's value: `3`, `0.25` or `"25%"` (see `parse`)."""
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f'expected a count (3) or a fraction (0.1, "10%"), not {value!r}')
        return cls.parse(value)

    def size(self, fleet: int) -> int:
        if self.fraction:
            return min(fleet, math.ceil(self.fraction * fleet))
        return min(fleet, self.count)

    def __bool__(self) -> bool:
        return bool(self.count or self.fraction)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fleet-wide fault settings; each `Share` says how many devices get that fault."""

    drop: Share = field(default_factory=Share)
    drop_every_s: float = 30.0  # mean time online between abrupt drops
    drop_for_s: float = 5.0  # time offline before reconnecting
    malformed: Share = field(default_factory=Share)
    malformed_ratio: float = 0.2  # fraction of an affected device's messages that are malformed
    oversize_bytes: int = 300_000
    burst: Share = field(default_factory=Share)
    burst_size: int = 50
    burst_every_s: float = 10.0
    skew: Share = field(default_factory=Share)
    skew_s: float = 300.0
    ignore_commands: Share = field(default_factory=Share)

    def __post_init__(self) -> None:
        for key in ("drop_every_s", "burst_every_s"):
            if not getattr(self, key) > 0:
                raise ConfigError(f"faults.{key}", "must be > 0")
        if self.drop_for_s < 0 or self.oversize_bytes < 0:
            raise ConfigError("faults", "drop_for_s and oversize_bytes must be ≥ 0")
        if self.burst_size < 1:
            raise ConfigError("faults.burst_size", "must be ≥ 1")
        if not 0 <= self.malformed_ratio <= 1:
            raise ConfigError("faults.malformed_ratio", "must be in [0, 1]")


@dataclass(frozen=True, slots=True)
class DeviceFaults:
    """The faults one device has; the default is a well-behaved device."""

    drop: bool = False
    malformed: bool = False
    burst: bool = False
    skew_s: float = 0.0
    ignore_commands: bool = False

    @property
    def any(self) -> bool:
        return self != DeviceFaults()


def assign_faults(config: FaultConfig, devices: int, rng: random.Random) -> list[DeviceFaults]:
    """One DeviceFaults per device index; each fault picks its own devices independently."""

    def pick(share: Share) -> set[int]:
        return set(rng.sample(range(devices), share.size(devices)))

    drop, malformed, burst = pick(config.drop), pick(config.malformed), pick(config.burst)
    skewed = {i: rng.choice((-1.0, 1.0)) * config.skew_s for i in pick(config.skew)}
    ignore = pick(config.ignore_commands)
    return [
        DeviceFaults(i in drop, i in malformed, i in burst, skewed.get(i, 0.0), i in ignore)
        for i in range(devices)
    ]


def malformed_payload(
    kind: str, values: dict[str, Value], ts: float, rng: random.Random, oversize_bytes: int
) -> bytes:
    """A telemetry payload a careless firmware might send; `kind` is one of MALFORMED_KINDS."""
    metric = rng.choice(sorted(values)) if values else "value"
    if kind == "broken_json":
        good = orjson.dumps({**values, "ts": ts})
        return rng.choice((good[: max(len(good) // 2, 1)], b"{'single': 'quotes'}", b"\xff\xfe{"))
    if kind == "wrong_types":
        # Each of these is valid JSON the gateway must refuse in part or in whole.
        return orjson.dumps(
            rng.choice(
                (
                    [values.get(metric)],
                    {metric: [1, 2, 3], "ts": ts},
                    {metric: None, "ts": "yesterday"},
                    "telemetry",
                )
            )
        )
    if kind == "nan":
        # orjson refuses to write NaN, which is the point: it is what a C printf("%f") emits.
        return (
            f'{{"{metric}": {rng.choice(("NaN", "Infinity", "-Infinity"))}, "ts": {ts}}}'.encode()
        )
    if kind == "oversize":
        return orjson.dumps({**values, "ts": ts, "debug": "x" * oversize_bytes})
    raise ValueError(f"unknown malformed kind {kind!r}")
