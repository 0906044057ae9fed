"""Strict JSON: what every frame and response the gateway sends must parse as.

Python's json module accepts NaN, Infinity and duplicate keys by default; browsers' JSON.parse
and most other parsers do not. `strict_loads` refuses all three.
"""

from __future__ import annotations

import json
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def strict_loads(data: str | bytes) -> Any:
    """Parse `data` as RFC 8259 JSON in UTF-8; raise ValueError for anything beyond it."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
