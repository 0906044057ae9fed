"""Device metadata: parse what a device announces, and check command parameters against it.

Meta comes from devices, so it is untrusted: anything malformed is refused with a DecodeError
rather than half-applied, and command names must pass the allow-list because they become topics.
"""

from __future__ import annotations

import math

from gateway.errors import CommandError, DecodeError
from gateway.models import CommandSpec, DeviceMeta, ParamSpec, Value
from gateway.names import is_command_name, is_metric_name

_PARAM_TYPES = ("number", "integer", "boolean", "string")
MAX_TEXT = 256


def parse_meta(raw: object) -> DeviceMeta:
    """Build a DeviceMeta from the JSON a device published on its meta topic."""
    if not isinstance(raw, dict):
        raise DecodeError("bad_meta", "meta must be a JSON object")
    units: dict[str, str] = {}
    metrics = raw.get("metrics", {})
    if not isinstance(metrics, dict):
        raise DecodeError("bad_meta", "metrics must be an object")
    for metric, info in metrics.items():
        if not is_metric_name(metric):
            raise DecodeError("bad_meta", f"bad metric name {metric!r:.80}")
        unit = info.get("unit") if isinstance(info, dict) else None
        if isinstance(unit, str):
            units[metric] = unit[:32]
    commands_raw = raw.get("commands", {})
    if not isinstance(commands_raw, dict):
        raise DecodeError("bad_meta", "commands must be an object")
    commands = {name: _parse_command(name, spec) for name, spec in commands_raw.items()}
    return DeviceMeta(
        type=_text(raw.get("type")),
        name=_text(raw.get("name")),
        units=units,
        commands=commands,
        raw=raw,
    )


def _text(value: object) -> str:
    return value[:MAX_TEXT] if isinstance(value, str) else ""


def _parse_command(name: str, spec: object) -> CommandSpec:
    if not is_command_name(name):
        raise DecodeError("bad_meta", f"bad command name {name!r:.80}")
    params_raw = spec.get("params", {}) if isinstance(spec, dict) else None
    if not isinstance(params_raw, dict):
        raise DecodeError("bad_meta", f"command {name}: params must be an object")
    return CommandSpec({p: _parse_param(name, p, s) for p, s in params_raw.items()})


def _parse_param(command: str, name: str, spec: object) -> ParamSpec:
    where = f"command {command}, param {name}"
    if not isinstance(spec, dict) or spec.get("type") not in _PARAM_TYPES:
        raise DecodeError("bad_meta", f"{where}: type must be one of {', '.join(_PARAM_TYPES)}")
    bounds = [spec.get("min"), spec.get("max")]
    if any(b is not None and not _is_number(b) for b in bounds):
        raise DecodeError("bad_meta", f"{where}: min and max must be numbers")
    if None not in bounds and bounds[0] > bounds[1]:
        raise DecodeError("bad_meta", f"{where}: min is above max")
    enum = spec.get("enum")
    if enum is not None and not (isinstance(enum, list) and enum):
        raise DecodeError("bad_meta", f"{where}: enum must be a non-empty list")
    if enum is not None and not all(_type_ok(spec["type"], value) for value in enum):
        raise DecodeError("bad_meta", f"{where}: enum values must be of type {spec['type']}")
    return ParamSpec(
        type=spec["type"],
        min=bounds[0],
        max=bounds[1],
        enum=tuple(enum) if enum is not None else None,
        optional=spec.get("optional") is True,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _type_ok(kind: str, value: object) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str) and len(value) <= MAX_TEXT
    if kind == "integer":
        return _is_number(value) and float(value).is_integer()  # type: ignore[arg-type]
    return _is_number(value)


def validate_params(command: str, spec: CommandSpec, params: object) -> dict[str, Value]:
    """Return the params if they fit the spec; raise CommandError(bad_params) naming the problem."""
    if not isinstance(params, dict):
        raise CommandError("bad_params", "params must be an object")
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise CommandError("bad_params", f"{command}: unknown param {unknown[0]!r:.80}")
    for name, p in spec.params.items():
        if name not in params:
            if not p.optional:
                raise CommandError("bad_params", f"{command}: missing param {name!r}")
            continue
        value = params[name]
        if not _type_ok(p.type, value):
            raise CommandError("bad_params", f"{command}: {name} must be a {p.type}")
        if p.enum is not None and value not in p.enum:
            allowed = ", ".join(map(str, p.enum))
            raise CommandError("bad_params", f"{command}: {name} must be one of {allowed}")
        if p.type not in ("number", "integer"):
            continue  # min and max bound numbers only; a device may declare them on anything
        if p.min is not None and value < p.min:
            raise CommandError("bad_params", f"{command}: {name} must be ≥ {p.min}")
        if p.max is not None and value > p.max:
            raise CommandError("bad_params", f"{command}: {name} must be ≤ {p.max}")
    return params
