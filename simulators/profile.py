"""Fleet profiles: a TOML file describing a mix of device types, rates and faults.

Keys mirror FleetConfig and the CLI flags; flags given on the command line win over the file.
The file is read by the gateway's own config loader (gateway.config.build), so unknown keys and
wrong types are errors worded as the gateway's are, naming the key's path
(`devices[1].cnt: unknown key (known: …)`): a typo never silently does nothing.
See simulators/fleet.example.toml for every key.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from gateway.config import build, read_toml
from gateway.errors import ConfigError
from simulators.config import DeviceGroup
from simulators.faults import FaultConfig


class DelayRange(NamedTuple):
    """How long a device waits before answering a command, in seconds: uniform in [low, high]."""

    low: float
    high: float

    @classmethod
    def from_toml(cls, value: object) -> DelayRange:
        """A profile's `result_delay_ms`: milliseconds, `30` or `[20, 80]`."""
        pair = value if isinstance(value, list) else [value, value]
        numbers = [v for v in pair if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(pair) != 2 or len(numbers) != 2:
            raise ValueError("expected milliseconds: a number or [low, high]")
        low, high = float(numbers[0]), float(numbers[1])
        if not 0 <= low <= high:
            raise ValueError("expected 0 <= low <= high")
        return cls(low / 1000.0, high / 1000.0)


@dataclass(frozen=True, slots=True)
class DeviceTable:
    """One `[[devices]]` table: a DeviceGroup as a profile writes it."""

    type: str = ""
    count: int = 1
    rate: float | None = None  # None: the fleet's rate
    stem: str | None = None  # None: the type's own
    names: list[str] = field(default_factory=list)

    def group(self, where: str) -> DeviceGroup:
        """The DeviceGroup; ConfigError naming the key under `where` (`devices[0]`)."""
        if not self.type:
            raise ConfigError(f"{where}.type", "is required")
        try:
            return DeviceGroup(self.type, self.count, self.rate, self.stem, tuple(self.names))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc.path.removeprefix('device.')}", exc.reason) from None


@dataclass(frozen=True, slots=True)
class Profile:
    """The keys a profile file may set. None: not in the file, so FleetConfig's default (or the
    flag given) holds."""

    broker: str | None = None
    convention: str | None = None
    prefix: str | None = None
    rate: float | None = None
    jitter: float | None = None
    seed: int | None = None
    connections: int | None = None
    qos: int | None = None
    stop_mode: str | None = None
    result_delay_ms: DelayRange | None = None
    devices: list[DeviceTable] | None = None
    faults: FaultConfig | None = None


def load_profile(path: str | Path) -> dict[str, Any]:
    """FleetConfig keyword arguments from a profile file; raise ConfigError naming a bad key."""
    return parse_profile(read_toml(path))


def parse_profile(raw: dict[str, Any]) -> dict[str, Any]:
    """FleetConfig keyword arguments for the keys `raw` (a profile's TOML table) sets."""
    profile = build(Profile, raw, "")
    given = {f.name: getattr(profile, f.name) for f in fields(Profile)}
    out: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    if "result_delay_ms" in out:
        out["result_delay_s"] = tuple(out.pop("result_delay_ms"))
    if "devices" in out:
        tables = out.pop("devices")
        out["groups"] = tuple(table.group(f"devices[{i}]") for i, table in enumerate(tables))
    return out
