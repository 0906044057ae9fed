"""Fleet-wide counters, and the live one-line rate display on the terminal."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from typing import TextIO


@dataclass(slots=True)
class FleetStats:
    """Counters since the fleet started; plain ints, updated from the one event loop."""

    devices: int = 0
    links: int = 0
    links_up: int = 0  # gauge: connections currently connected
    messages: int = 0  # telemetry publishes, including malformed ones and bursts
    bytes: int = 0
    malformed: int = 0
    commands_received: int = 0
    commands_ok: int = 0
    commands_error: int = 0
    commands_ignored: int = 0  # by devices with the ignore-commands fault
    commands_unreadable: int = 0  # no id: nobody to answer
    connects: int = 0
    connect_failures: int = 0
    drops: int = 0  # abrupt disconnects done on purpose (fault flag or Fleet.drop)

    @property
    def commands_answered(self) -> int:
        return self.commands_ok + self.commands_error

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "commands_answered": self.commands_answered}


def rate_line(stats: FleetStats, messages_per_s: float) -> str:
    return (
        f"{stats.devices} devices · {stats.links_up}/{stats.links} connected · "
        f"{messages_per_s:,.0f} msg/s · {stats.messages:,} sent · "
        f"{stats.commands_answered} commands answered ({stats.commands_error} refused)"
    )


class RateReporter:
    """Rewrites one terminal line with the fleet-wide rate every `interval_s` until told to stop."""

    def __init__(self, stats: FleetStats, stream: TextIO, *, interval_s: float = 1.0) -> None:
        self._stats = stats
        self._stream = stream
        self._interval_s = interval_s
        # On a terminal the line is redrawn in place; elsewhere (a log file) one line per tick.
        self._in_place = stream.isatty()

    async def run(self, stop: asyncio.Event) -> None:
        last_count, last_time = self._stats.messages, time.monotonic()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await stop.wait()
            if stop.is_set():
                break  # a partial interval would show a misleading rate
            now = time.monotonic()
            rate = (self._stats.messages - last_count) / max(now - last_time, 1e-9)
            last_count, last_time = self._stats.messages, now
            self._write(rate_line(self._stats, rate))
        if self._in_place:
            self._stream.write("\n")
            self._stream.flush()

    def _write(self, line: str) -> None:
        if self._in_place:
            self._stream.write(f"\r\x1b[2K{line}")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()
