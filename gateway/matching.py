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
    """The union of a set of selectors. Answers are not memoised per device here: the hub's
    InterestIndex asks once per (device, interest) and keeps only the matches."""

    selectors: frozenset[Selector]
    # Compiled when first needed: an interest of exact device names is usually answered by the
    # index's name lookup alone, and every connection with its own subscriptions has one (S4).
    _rules: list[tuple[re.Pattern[str], re.Pattern[str] | None]] | None = field(init=False)
    _metrics: dict[tuple[str, str], bool] = field(init=False)
    matches_all: bool = field(init=False)
    filters_metrics: bool = field(init=False)  # some selector names metrics
    exact_devices: frozenset[str] | None = field(init=False)  # None: some pattern is a glob

    def __post_init__(self) -> None:
        self._rules = None
        self._metrics = {}
        self.matches_all = any(
            s.devices == ("*",) and s.metrics is None and s.scope is None for s in self.selectors
        )
        self.filters_metrics = any(s.metrics is not None for s in self.selectors)
        names = {d for s in self.selectors for d in s.devices}
        self.exact_devices = None if any(_is_glob(d) for d in names) else frozenset(names)

    def rules(self) -> list[tuple[re.Pattern[str], re.Pattern[str] | None]]:
        if self._rules is None:
            self._rules = [
                (s.device_regex(), None if s.metrics is None else compile_globs(s.metrics))
                for s in self.selectors
            ]
        return self._rules

    def wants_device(self, device: str) -> bool:
        return any(d.fullmatch(device) is not None for d, _ in self.rules())

    def wants(self, device: str, metric: str) -> bool:
        """True if a reading of `metric` from `device` belongs to this interest."""
        if not self.filters_metrics:
            return self.wants_device(device)
        key = (device, metric)
        answer = self._metrics.get(key)
        if answer is None:
            answer = any(
                d.fullmatch(device) is not None and (m is None or m.fullmatch(metric) is not None)
                for d, m in self.rules()
            )
            # Bounded: asked only for devices this interest matches (see InterestIndex).
            self._metrics[key] = answer
        return answer

    def forget(self, device: str) -> None:
        """Drop cached answers for a device (the registry removed it)."""
        for key in [k for k in self._metrics if k[0] == device]:
            del self._metrics[key]


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


class InterestIndex:
    """Which interests want which device, kept incrementally.

    A device's list is worked out once, when the device is first asked about, from the interests
    that name it exactly plus those with globs; a new interest is checked against known devices
    (only its named ones if it has no glob). So a burst of new devices costs O(devices * glob
    interests), not O(devices * interests), and memory holds matches only. Interests that match
    everything are kept apart: the hub serves them without asking per reading. Removing an
    interest touches only the devices it matched.
    """

    def __init__(self) -> None:
        self._by_device: dict[str, list[Interest]] = {}
        self._by_name: dict[str, set[Interest]] = {}
        # The devices each glob interest was found to want (exact ones know theirs by name).
        self._globbing: dict[Interest, set[str]] = {}
        self.everything: set[Interest] = set()

    def add(self, interest: Interest) -> None:
        if interest.matches_all:
            self.everything.add(interest)
            return
        if interest.exact_devices is None:
            wanted = self._globbing[interest] = set()
            for device, matched in self._by_device.items():
                if interest.wants_device(device):
                    matched.append(interest)
                    wanted.add(device)
            return
        for name in interest.exact_devices:
            self._by_name.setdefault(name, set()).add(interest)
            known = self._by_device.get(name)
            if known is not None and interest.wants_device(name):
                known.append(interest)

    def remove(self, interest: Interest) -> None:
        if interest.matches_all:
            self.everything.discard(interest)
            return
        wanted = self._globbing.pop(interest, None)
        if wanted is None:
            wanted = set(interest.exact_devices or ())
            for name in wanted:
                holders = self._by_name.get(name)
                if holders is not None:
                    holders.discard(interest)
                    if not holders:
                        del self._by_name[name]
        for device in wanted:
            matched = self._by_device.get(device)
            if matched is not None and interest in matched:
                matched.remove(interest)

    def for_device(self, device: str) -> list[Interest]:
        """The interests (other than match-all ones) that want `device`."""
        matched = self._by_device.get(device)
        if matched is None:
            found = [i for i in self._by_name.get(device, ()) if i.wants_device(device)]
            for interest, wanted in self._globbing.items():
                if interest.wants_device(device):
                    found.append(interest)
                    wanted.add(device)
            self._by_device[device] = matched = found
        return matched

    def forget(self, device: str) -> None:
        """The registry forgot `device`: drop what is cached about it (worked out again if it
        comes back)."""
        for interest in self._by_device.pop(device, ()):
            self._globbing.get(interest, set()).discard(device)
            if interest.filters_metrics:
                interest.forget(device)
