"""The protocol's JSON Schemas (docs/schemas/), compiled once, and a strict frame check for tests.

`check_server_frame(text)` parses a frame the way a strict client would (no NaN or Infinity, no
duplicate keys) and validates it against docs/schemas/server-frame.json. A violation raises
SchemaViolation, which is deliberately not an AssertionError: tests that expect a closed socket
catch AssertionError from `WsClient.recv`, and a schema failure must never pass as one.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"


class SchemaViolation(Exception):
    """Raised when a frame is not strict JSON or does not match its schema."""


@functools.cache
def registry() -> Registry:
    """Every schema file under docs/schemas, keyed by its file URI (relative $refs resolve)."""
    resources = [
        (path.as_uri(), Resource.from_contents(json.loads(path.read_text())))
        for path in sorted(SCHEMAS.rglob("*.json"))
    ]
    return Registry().with_resources(resources)


def schema_path(name: str) -> Path:
    return SCHEMAS / name


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A compiled validator for docs/schemas/<name>: "server-frame.json", or a part of a file
    such as "common.json#/$defs/deviceWithValues"."""
    file, _, fragment = name.partition("#")
    uri = schema_path(file).as_uri()
    Draft202012Validator.check_schema(registry().contents(uri))
    return Draft202012Validator({"$ref": f"{uri}#{fragment}"}, registry=registry())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def strict_loads(text: str | bytes) -> Any:
    """json.loads that refuses NaN, Infinity and duplicate keys (RFC 8259, I-JSON)."""
    return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)


def _where(path: Any) -> str:
    return "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)


def violations(frame: Any, side: str) -> str | None:
    """None if `frame` is a valid `side` ("server" or "client") frame, else a one-line reason."""
    union = validator(f"{side}-frame.json")
    if union.is_valid(frame):
        return None
    kind = frame.get("type") if isinstance(frame, dict) else None
    specific = schema_path(f"{side}/{kind}.json") if isinstance(kind, str) else None
    if specific is None or not specific.is_file():
        known = ", ".join(sorted(p.stem for p in (SCHEMAS / side).glob("*.json")))
        return f"unknown {side} frame type {kind!r} (docs/schemas/{side}/ has: {known})"
    error = best_match(validator(f"{side}/{kind}.json").iter_errors(frame))
    assert error is not None  # the union refused it, so its own schema does too
    return f"docs/schemas/{side}/{kind}.json: at {_where(error.absolute_path)}: {error.message}"


def check_server_frame(text: str | bytes) -> Any:
    """Parse one server text frame strictly and validate it; raise SchemaViolation if bad."""
    try:
        frame = strict_loads(text)
    except ValueError as exc:
        raise SchemaViolation(f"server frame is not strict JSON ({exc}): {text[:300]!r}") from None
    reason = violations(frame, "server")
    if reason is not None:
        raise SchemaViolation(
            f"server frame breaks the protocol schema: {reason}; frame: {text[:500]!r}"
        )
    return frame
