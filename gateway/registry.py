"""Everything the gateway knows about devices: status, last seen, meta, latest values, history.

Bounded everywhere: a cap on devices, on metrics per device and on history points per metric;
what the caps refuse is counted, never silently grown. Staleness runs on the monotonic clock, so
a device whose clock is wrong (or a wall-clock jump) cannot make others look stale.

Each device belongs to the convention that created it, and ids tagged by a convention (`z2m.`,
`ha.`, ...) to that convention alone: a message of one convention never creates or touches
another's device (docs/security.md, rule 2). Devices can be forgotten (`forget`): when they
withdraw themselves, when silent past `forget_after_s`, or by an administrator.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.config import RegistryConfig
from gateway.history import HistoryRing
from gateway.meta import ShapeCache
from gateway.models import DeviceMeta, Reading, Sample, Status, Value
from gateway.stats import RegistryStats

#: (time, value), one point of a metric's history.
Point = tuple[float, Value]


@dataclass(slots=True)
class Device:
    id: str
    convention: str
    online: bool | None = None  # what the device last said about itself; None: nothing said
    stale: bool = False
    last_seen: float = 0.0  # wall clock, for display
    last_seen_mono: float = 0.0  # monotonic, for staleness
    meta: DeviceMeta | None = None
    values: dict[str, tuple[float, Value]] = field(default_factory=dict)
    history: dict[str, HistoryRing] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        if self.online is None:
            return "unknown"
        if not self.online:
            return "offline"
        return "stale" if self.stale else "online"

    def summary(self) -> dict[str, Any]:
        """The JSON shape of a device in `device` events."""
        meta = self.meta
        return {
            "id": self.id,
            "status": self.status,
            "last_seen": self.last_seen or None,
            "name": meta.name if meta and meta.name else self.id,
            "type": meta.type if meta else "",
            "meta": meta.raw if meta else None,
        }

    def snapshot(self) -> dict[str, Any]:
        """The JSON shape of a device in snapshots and the REST API: summary plus latest values."""
        entry = self.summary()
        entry["values"] = {metric: [ts, value] for metric, (ts, value) in self.values.items()}
        return entry


#: What `Registry.observe` did: found the device, created it, or why it refused it.
KNOWN: Final = ""
CREATED: Final = "created"
FULL: Final = "registry_full"
FOREIGN: Final = "foreign_device"


class Registry:
    def __init__(self, config: RegistryConfig, id_tags: Mapping[str, str] | None = None) -> None:
        """`id_tags`: device id tag -> the convention whose ids carry it (conventions.id_tags)."""
        self._config = config
        self._owners = dict(id_tags or {})
        self._devices: dict[str, Device] = {}
        self.stats = RegistryStats()
        #: Meta declarations many devices share, parsed and kept once (conventions parse
        #: through it: build_conventions is given it).
        self.shapes = ShapeCache()

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def get(self, device_id: str) -> Device | None:
        return self._devices.get(device_id)

    def matching(self, wants_device: Any) -> list[Device]:
        return [d for d in self._devices.values() if wants_device(d.id)]

    def observe(self, device_id: str, convention: str) -> tuple[Device | None, str]:
        """The record of `convention`'s device, created if there is room; the word says what
        happened: KNOWN, CREATED, or why there is none: FULL, or FOREIGN (the id is another
        convention's: its device, or its tag)."""
        device = self._devices.get(device_id)
        if device is not None:
            return (device, KNOWN) if device.convention == convention else (None, FOREIGN)
        owner = self._owners.get(device_id.partition(".")[0])
        if owner is not None and owner != convention:
            return None, FOREIGN
        if len(self._devices) >= self._config.max_devices:
            self.stats.devices_refused += 1
            return None, FULL
        # Silence (forget_after_s) counts from here for a device that never says anything more.
        device = Device(device_id, convention, last_seen_mono=time.monotonic())
        self._devices[device_id] = device
        return device, CREATED

    def forget(self, device_id: str) -> Device | None:
        """Remove a device and everything kept for it; return it (None: unknown)."""
        device = self._devices.pop(device_id, None)
        if device is not None:
            self.stats.devices_forgotten += 1
        return device

    def silent(self, now_mono: float | None = None) -> list[Device]:
        """Devices silent for longer than forget_after_s (none when it is 0: never forget)."""
        age = self._config.forget_after_s
        if age <= 0:
            return []
        deadline = (time.monotonic() if now_mono is None else now_mono) - age
        return [d for d in self._devices.values() if d.last_seen_mono < deadline]

    def apply_samples(self, device: Device, samples: Iterable[Sample], now: float) -> list[Reading]:
        """Store the samples; return the readings accepted (metrics past the cap are refused)."""
        accepted: list[Reading] = []
        values = device.values
        history = device.history
        cap = self._config.max_metrics_per_device
        device_id = device.id
        for metric, ts, value in samples:
            ring = history.get(metric)
            if ring is None:
                if len(history) >= cap:
                    self.stats.metrics_refused += 1
                    continue
                ring = history[metric] = HistoryRing(self._config.history_length)
            ring.append(ts, value)
            values[metric] = (ts, value)
            accepted.append((device_id, metric, ts, value))
        self.touch(device, now)
        return accepted

    def restore(self, device_id: str, convention: str, metric: str, points: list[Point]) -> bool:
        """Put back a series' recent points (oldest first) from the history store at start,
        within the same caps as live data; newer values already here win. False: refused."""
        if not points:
            return False
        device, _ = self.observe(device_id, convention)
        if device is None:
            return False
        ring = device.history.get(metric)
        if ring is None:
            if len(device.history) >= self._config.max_metrics_per_device:
                self.stats.metrics_refused += 1
                return False
            ring = device.history[metric] = HistoryRing(self._config.history_length)
        if not len(ring):  # a live point already here: the restored ones would come after it
            for t, value in points:
                ring.append(t, value)
        latest = points[-1]
        current = device.values.get(metric)
        if current is None or current[0] < latest[0]:
            device.values[metric] = latest
        device.last_seen = max(device.last_seen, latest[0])
        return True

    def touch(self, device: Device, now: float) -> bool:
        """Record a sign of life; True if that ended a stale period (the status changed)."""
        device.last_seen = now
        device.last_seen_mono = time.monotonic()
        if device.stale:
            device.stale = False
            return True
        return False

    def set_online(self, device: Device, online: bool | None) -> bool:
        """Apply what the device said about itself; True if its status changed."""
        before = device.status
        device.online = online
        device.stale = False
        # Saying "online" is a sign of life: staleness counts from here, not from the last reading.
        device.last_seen_mono = time.monotonic()
        return device.status != before

    def expire(self, now_mono: float | None = None) -> list[Device]:
        """Mark online devices whose readings stopped for longer than stale_after_s as stale;
        return them. A device that never sent a reading (a Zigbee2MQTT bridge, a button that only
        announces itself) has no telemetry to fall silent: its status is what it says (its will)."""
        deadline = (time.monotonic() if now_mono is None else now_mono) - self._config.stale_after_s
        changed = []
        for device in self._devices.values():
            if (
                device.online
                and not device.stale
                and device.values
                and device.last_seen_mono < deadline
            ):
                device.stale = True
                changed.append(device)
        return changed

    def history(
        self, device: Device, metric: str, since: float | None, limit: int
    ) -> list[tuple[float, Value]] | None:
        """Up to `limit` newest points at or after `since`, in arrival order; None: unknown metric.

        The whole ring is scanned: device timestamps may arrive out of order, so the first point
        older than `since` does not mean every earlier one is.
        """
        ring = device.history.get(metric)
        if ring is None:
            return None
        points = [p for p in ring if since is None or p[0] >= since]
        return points[-limit:]
