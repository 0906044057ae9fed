"""Device metadata: parse what a device announces, and check command parameters against it.

Meta comes from devices, so it is untrusted: anything malformed is refused with a DecodeError
rather than half-applied, and command names must pass the allow-list because they become topics.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.errors import CommandError, DecodeError
from gateway.models import CommandSpec, DeviceMeta, ParamSpec, Value
from gateway.names import is_command_name, is_metric_name

_PARAM_TYPES = ("number", "integer", "boolean", "string")
MAX_TEXT = 256


#: The bytes of canonical JSON a ShapeCache keeps before it starts over.
MAX_SHAPE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class _Shape:
    metrics: Any  # the declaration as JSON, owned here (shared by every DeviceMeta.raw using it)
    commands_raw: Any
    units: dict[str, str]
    commands: dict[str, CommandSpec]


class ShapeCache:
    """Metrics and commands declared identically by many devices (a fleet of one model), parsed
    and kept once: at 50,000 devices that is most of a device's memory (docs/performance.md, S6).

    Keyed by their canonical JSON; bounded in bytes, and simply emptied when full (devices keep
    theirs; sharing starts over). The registry owns one; conventions parse meta through it.
    """

    __slots__ = ("_bytes", "_shapes", "max_bytes")

    def __init__(self, max_bytes: int = MAX_SHAPE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._shapes: dict[bytes, _Shape] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._shapes)

    @property
    def bytes(self) -> int:
        """The size of the keys held, which is what the bound counts."""
        return self._bytes

    def shape(self, metrics: object, commands_raw: object) -> _Shape:
        try:
            key = orjson.dumps([metrics, commands_raw], option=orjson.OPT_SORT_KEYS)
        except TypeError:  # not JSON (a convention's own dict with odd keys): parsed, not shared
            return _new_shape(metrics, commands_raw, copy=False)
        shape = self._shapes.get(key)
        if shape is None:
            shape = _new_shape(metrics, commands_raw, copy=True)
            if self._bytes + len(key) > self.max_bytes:
                self._shapes.clear()
                self._bytes = 0
            self._shapes[key] = shape
            self._bytes += len(key)
        return shape


def parse_meta(raw: object, shapes: ShapeCache | None = None) -> DeviceMeta:
    """Build a DeviceMeta from the JSON a device published on its meta topic.

    With `shapes` (the registry's), declarations many devices share are parsed and kept once.
    """
    if not isinstance(raw, dict):
        raise DecodeError("bad_meta", "meta must be a JSON object")
    # Without a cache of its own the caller gets a fresh one: parsed and copied, never shared.
    cache = shapes if shapes is not None else ShapeCache()
    shape = cache.shape(raw.get("metrics", {}), raw.get("commands", {}))
    shared = dict(raw)  # the caller's dict stays the caller's (conventions may keep it)
    if "metrics" in raw:
        shared["metrics"] = shape.metrics
    if "commands" in raw:
        shared["commands"] = shape.commands_raw
    kind = _text(raw.get("type"))
    if kind and kind is raw["type"]:
        # Few distinct types, one per device: keep one string each (interned strings are freed
        # when no device uses them any more).
        kind = shared["type"] = sys.intern(kind)
    return DeviceMeta(
        type=kind,
        name=_text(raw.get("name")),
        units=shape.units,
        commands=shape.commands,
        raw=shared,
    )


def _new_shape(metrics: object, commands_raw: object, *, copy: bool) -> _Shape:
    units, commands = _parse_shape(metrics, commands_raw)
    if copy:
        # A deep copy owned by the cache: a convention may still change the dicts it passed in.
        metrics, commands_raw = orjson.loads(orjson.dumps([metrics, commands_raw]))
    return _Shape(metrics, commands_raw, units, commands)


def _parse_shape(
    metrics: object, commands_raw: object
) -> tuple[dict[str, str], dict[str, CommandSpec]]:
    units: dict[str, str] = {}
    if not isinstance(metrics, dict):
        raise DecodeError("bad_meta", "metrics must be an object")
    for metric, info in metrics.items():
        if not is_metric_name(metric):
            raise DecodeError("bad_meta", f"bad metric name {metric!r:.80}")
        unit = info.get("unit") if isinstance(info, dict) else None
        if isinstance(unit, str):
            units[metric] = unit[:32]
    if not isinstance(commands_raw, dict):
        raise DecodeError("bad_meta", "commands must be an object")
    return units, {name: _parse_command(name, spec) for name, spec in commands_raw.items()}


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
    low, high = spec.get("min"), spec.get("max")
    if any(b is not None and not _is_number(b) for b in (low, high)):
        raise DecodeError("bad_meta", f"{where}: min and max must be numbers")
    if low is not None and high is not None and low > high:
        raise DecodeError("bad_meta", f"{where}: min is above max")
    enum = spec.get("enum")
    if enum is not None and not (isinstance(enum, list) and enum):
        raise DecodeError("bad_meta", f"{where}: enum must be a non-empty list")
    if enum is not None and not all(_type_ok(spec["type"], value) for value in enum):
        raise DecodeError("bad_meta", f"{where}: enum values must be of type {spec['type']}")
    return ParamSpec(
        type=spec["type"],
        min=low,
        max=high,
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
