"""Installed library versions against the ranges a compatibility fence was verified with."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

#: Distribution name -> (lowest verified version, first version not verified).
Supported = dict[str, tuple[tuple[int, ...], tuple[int, ...]]]


def version_of(distribution: str) -> tuple[int, ...]:
    """The installed version's leading numbers, e.g. (2, 5, 1) for 2.5.1 or 2.5.1rc1."""
    numbers: list[int] = []
    for part in importlib.metadata.version(distribution).split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        numbers.append(int(digits))
        if digits != part:
            break
    return tuple(numbers)


def unsupported_versions(
    supported: Supported, version: Callable[[str], tuple[int, ...]] = version_of
) -> str | None:
    """Which installed distribution is outside its verified range (and how), or None."""
    for distribution, (lowest, beyond) in supported.items():
        installed = version(distribution)
        if not lowest <= installed < beyond:
            shown = ".".join(map(str, installed))
            low, high = ".".join(map(str, lowest)), ".".join(map(str, beyond))
            return f"{distribution} {shown} is not in the verified range >={low},<{high}"
    return None
