"""Params that fit a parsed command spec, for tests that must reach encode_command."""

from __future__ import annotations

from typing import Any

from gateway.models import CommandSpec, Value


def fitting_params(spec: CommandSpec) -> dict[str, Value]:
    """Params that pass validate_params for `spec`: an enum's first value, else a plain value of
    the type, inside the bounds."""
    params: dict[str, Value] = {}
    for name, p in spec.params.items():
        if p.enum:
            params[name] = p.enum[0]
        elif p.type == "boolean":
            params[name] = True
        elif p.type == "string":
            params[name] = "x"
        else:
            value: Any = p.min if p.min is not None else (p.max if p.max is not None else 0)
            params[name] = int(value) if p.type == "integer" else value
    return params
