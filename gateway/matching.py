"""Device and metric glob patterns, compiled once and memoised per name.

A client's interest is the union of its subscriptions. Interests are interned by the hub, so every
client with the same subscriptions shares one Interest, one match cache and one encoded batch.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_PATTERN_LENGTH = 128


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for a set of globs (`*`, `?`, `[ab]`), matched case-sensitively."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


@dataclass(frozen=True, slots=True)
class Selector:
    """One subscription's filter: device globs, metric globs (None: all metrics), and the scope
    of devices the client's token may read (None: all)."""

    devices: tuple[str, ...]
    metrics: tuple[str, ...] | None = None
    scope: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        devices: Iterable[str],
        metrics: Iterable[str] | None = None,
        scope: Iterable[str] | None = None,
    ) -> Selector:
        # Sorted and deduplicated so that equal filters compare and hash equal.
        return cls(_canonical(devices), _canonical_or_none(metrics), _canonical_or_none(scope))

    def device_regex(self) -> re.Pattern[str]:
        devices = compile_globs(self.devices).pattern
        if self.scope is None:
            return re.compile(devices)
        # Both must match: a lookahead applies the scope without building a product of globs.
        return re.compile(f"(?=(?:{compile_globs(self.scope).pattern})\\Z)(?:{devices})")


def _canonical(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(items)))


def _canonical_or_none(items: Iterable[str] | None) -> tuple[str, ...] | None:
    return None if items is None else _canonical(items)


@dataclass(eq=False, slots=True)
class Interest:
    """The union of a set of selectors, with memoised answers per device and per metric."""

    selectors: frozenset[Selector]
    _device_re: list[tuple[re.Pattern[str], re.Pattern[str] | None]] = field(init=False)
    _devices: dict[str, tuple[bool, re.Pattern[str] | bool | None]] = field(init=False)
    _metrics: dict[tuple[str, str], bool] = field(init=False)
    matches_all: bool = field(init=False)

    def __post_init__(self) -> None:
        self._device_re = [
            (s.device_regex(), None if s.metrics is None else compile_globs(s.metrics))
            for s in self.selectors
        ]
        self._devices = {}
        self._metrics = {}
        self.matches_all = any(
            s.devices == ("*",) and s.metrics is None and s.scope is None for s in self.selectors
        )

    def wants_device(self, device: str) -> bool:
        return self._device_entry(device)[0]

    def wants(self, device: str, metric: str) -> bool:
        """True if a reading of `metric` from `device` belongs to this interest."""
        matched, metric_rule = self._device_entry(device)
        if not matched or metric_rule is True:
            return matched
        key = (device, metric)
        answer = self._metrics.get(key)
        if answer is None:
            answer = any(
                d.fullmatch(device) is not None and (m is None or m.fullmatch(metric) is not None)
                for d, m in self._device_re
            )
            self._metrics[key] = answer
        return answer

    def _device_entry(self, device: str) -> tuple[bool, re.Pattern[str] | bool | None]:
        entry = self._devices.get(device)
        if entry is None:
            rules = [m for d, m in self._device_re if d.fullmatch(device) is not None]
            # True in the second slot: some matching selector takes every metric of this device.
            entry = (bool(rules), any(m is None for m in rules) or None)
            self._devices[device] = entry
        return entry

    def forget(self, device: str) -> None:
        """Drop cached answers for a device the registry no longer holds (keeps caches bounded)."""
        self._devices.pop(device, None)
        for key in [k for k in self._metrics if k[0] == device]:
            del self._metrics[key]
