"""Fleet profiles: a TOML file describing a mix of device types, rates and faults.

Keys mirror FleetConfig and the CLI flags; flags given on the command line win over the file.
Unknown keys are errors that name the key's path, so a typo never silently does nothing.
See simulators/fleet.example.toml for every key.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError
from simulators.config import DeviceGroup
from simulators.faults import FaultConfig, Share

_TOP = {"broker", "convention", "prefix", "rate", "jitter", "seed", "connections", "qos",
        "stop_mode", "result_delay_ms", "devices", "faults"}  # fmt: skip
_GROUP = {"type", "count", "rate", "stem", "names"}
_FAULTS = {f.name: f for f in dataclasses.fields(FaultConfig)}


def load_profile(path: str | Path) -> dict[str, Any]:
    """FleetConfig keyword arguments from a profile file; raise ConfigError naming a bad key."""
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), exc.strerror or str(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return parse_profile(raw)


def parse_profile(raw: dict[str, Any]) -> dict[str, Any]:
    _no_unknown(raw, _TOP, "")
    out: dict[str, Any] = {k: v for k, v in raw.items() if k not in ("devices", "faults")}
    if "result_delay_ms" in out:
        out["result_delay_s"] = _delay(out.pop("result_delay_ms"))
    if "devices" in raw:
        groups = raw["devices"]
        if not isinstance(groups, list):
            raise ConfigError("devices", "must be an array of tables ([[devices]])")
        out["groups"] = tuple(_group(g, f"devices[{i}]") for i, g in enumerate(groups))
    if "faults" in raw:
        out["faults"] = parse_faults(raw["faults"], "faults")
    return out


def parse_faults(raw: object, where: str = "faults") -> FaultConfig:
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table")
    _no_unknown(raw, set(_FAULTS), where + ".")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _FAULTS[key].type
        try:
            values[key] = Share.parse(value) if kind == "Share" else _number(value, kind)
        except ValueError as exc:
            raise ConfigError(f"{where}.{key}", str(exc)) from None
    return FaultConfig(**values)


def _group(raw: object, where: str) -> DeviceGroup:
    if not isinstance(raw, dict):
        raise ConfigError(where, "must be a table")
    _no_unknown(raw, _GROUP, where + ".")
    if "type" not in raw:
        raise ConfigError(f"{where}.type", "is required")
    names = raw.get("names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{where}.names", "must be a list of strings")
    try:
        return DeviceGroup(
            type=raw["type"],
            count=int(raw.get("count", 1)),
            rate=float(raw["rate"]) if "rate" in raw else None,
            stem=raw.get("stem"),
            names=tuple(names),
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.path.removeprefix('device.')}", exc.reason) from None


def _delay(value: object) -> tuple[float, float]:
    """`30` or `[20, 80]` milliseconds → (low, high) seconds."""
    pair: list[Any] = value if isinstance(value, list) else [value, value]
    if len(pair) != 2 or not all(isinstance(v, int | float) for v in pair):
        raise ConfigError("result_delay_ms", "must be a number or [low, high]")
    return float(pair[0]) / 1000.0, float(pair[1]) / 1000.0


def _number(value: object, kind: object) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {value!r}")
    return int(value) if kind == "int" else float(value)


def _no_unknown(raw: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(where + unknown[0], f"unknown key; known: {', '.join(sorted(allowed))}")
