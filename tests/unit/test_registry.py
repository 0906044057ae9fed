"""The device registry: caps, history rings, staleness on the monotonic clock, status changes."""

from __future__ import annotations

import time

import pytest

from gateway.config import RegistryConfig
from gateway.registry import CREATED, FOREIGN, FULL, KNOWN, Registry


def registry(**settings) -> Registry:
    return Registry(RegistryConfig(**settings))


def test_observe_creates_once_and_refuses_past_max_devices():
    """Devices past max_devices are refused (None) and counted; known ones are still returned."""
    reg = registry(max_devices=2)
    assert reg.observe("a", "native")[1] == CREATED
    assert reg.observe("a", "native")[1] == KNOWN
    assert reg.observe("b", "native")[0] is not None
    assert reg.observe("c", "native") == (None, FULL)
    assert reg.observe("d", "native") == (None, FULL)
    assert reg.stats.devices_refused == 2
    assert len(reg) == 2
    assert reg.observe("a", "native")[0] is reg.get("a")


def test_metrics_past_the_per_device_cap_are_refused_and_counted():
    """Only max_metrics_per_device distinct metrics are stored per device; the rest are counted."""
    reg = registry(max_metrics_per_device=2)
    device, _ = reg.observe("d", "native")
    accepted = reg.apply_samples(device, [("m1", 1.0, 1), ("m2", 1.0, 2), ("m3", 1.0, 3)], 10.0)
    assert accepted == [("d", "m1", 1.0, 1), ("d", "m2", 1.0, 2)]
    assert reg.apply_samples(device, [("m1", 2.0, 5), ("m4", 2.0, 4)], 11.0) == [
        ("d", "m1", 2.0, 5)
    ]
    assert sorted(device.values) == ["m1", "m2"]
    assert reg.stats.metrics_refused == 2
    assert device.values["m1"] == (2.0, 5)
    assert device.last_seen == 11.0


def test_history_ring_keeps_the_newest_points():
    """The history ring holds history_length points; older ones fall out."""
    reg = registry(history_length=3)
    device, _ = reg.observe("d", "native")
    for i in range(5):
        reg.apply_samples(device, [("t", float(i), i)], 0.0)
    assert reg.history(device, "t", None, 100) == [(2.0, 2), (3.0, 3), (4.0, 4)]


@pytest.mark.parametrize(
    ("since", "limit", "expected"),
    [
        (None, 10, [1, 2, 3, 4, 5]),
        (None, 2, [4, 5]),
        (3.0, 10, [3, 4, 5]),
        (3.5, 10, [4, 5]),
        (3.0, 1, [5]),
        (9.0, 10, []),
    ],
)
def test_history_since_and_limit(since, limit, expected):
    """history(since, limit) gives the newest `limit` points at or after `since`, oldest first."""
    reg = registry()
    device, _ = reg.observe("d", "native")
    for i in range(1, 6):
        reg.apply_samples(device, [("t", float(i), i)], 0.0)
    assert [v for _, v in reg.history(device, "t", since, limit)] == expected


def test_history_of_unknown_metric_is_none():
    """An unknown metric's history is None (not an empty list)."""
    reg = registry()
    device, _ = reg.observe("d", "native")
    assert reg.history(device, "nope", None, 10) is None


def test_silent_online_device_goes_stale_on_the_monotonic_clock():
    """An online device silent for longer than stale_after_s is marked stale, once; a new
    sample ends the stale period."""
    reg = registry(stale_after_s=60)
    device, _ = reg.observe("d", "native")
    reg.set_online(device, True)
    reg.apply_samples(device, [("t", 1.0, 1)], 100.0)
    seen = device.last_seen_mono
    assert reg.expire(now_mono=seen + 59) == []
    assert reg.expire(now_mono=seen + 61) == [device]
    assert device.status == "stale"
    assert reg.expire(now_mono=seen + 120) == []  # already stale: not reported again
    assert reg.touch(device, 200.0) is True
    assert device.status == "online"


def test_offline_and_unknown_devices_never_go_stale():
    """Only online devices become stale."""
    reg = registry(stale_after_s=1)
    offline, _ = reg.observe("off", "native")
    reg.set_online(offline, False)
    unknown, _ = reg.observe("unk", "native")
    assert reg.expire(now_mono=time.monotonic() + 1000) == []
    assert (offline.status, unknown.status) == ("offline", "unknown")


def test_device_announcing_online_is_not_stale_right_away():
    """A device that just said `online` (a sign of life) is not stale at the next expiry pass,
    even if it has not sent telemetry yet."""
    reg = registry(stale_after_s=60)
    device, _ = reg.observe("d", "native")
    reg.set_online(device, True)
    assert reg.expire(now_mono=time.monotonic()) == []
    assert device.status == "online"


def test_online_device_without_readings_never_goes_stale():
    """A device that never sent a reading (a Zigbee2MQTT bridge) cannot fall silent: it stays
    online however long it is quiet, until its status (its will) says otherwise."""
    reg = registry(stale_after_s=1)
    bridge, _ = reg.observe("z2m.bridge", "zigbee2mqtt")
    reg.set_online(bridge, True)
    assert reg.expire(now_mono=time.monotonic() + 1000) == []
    assert bridge.status == "online"


@pytest.mark.parametrize(
    ("before", "after", "changed", "status"),
    [
        (None, True, True, "online"),
        (True, True, False, "online"),
        (True, False, True, "offline"),
        (False, None, True, "unknown"),
        (None, None, False, "unknown"),
    ],
)
def test_set_online_reports_status_changes(before, after, changed, status):
    """set_online returns True exactly when the visible status changed."""
    reg = registry()
    device, _ = reg.observe("d", "native")
    device.online = before
    assert reg.set_online(device, after) is changed
    assert device.status == status


def test_set_online_ends_a_stale_period():
    """A stale device saying online again is online (a status change)."""
    reg = registry()
    device, _ = reg.observe("d", "native")
    device.online, device.stale = True, True
    assert reg.set_online(device, True) is True
    assert device.status == "online"


def test_snapshot_shape():
    """snapshot() has id, status, last_seen, name (id without meta), type, meta and values."""
    reg = registry()
    device, _ = reg.observe("d", "native")
    reg.apply_samples(device, [("t", 5.0, 21.5)], 7.0)
    assert device.snapshot() == {
        "id": "d",
        "status": "unknown",
        "last_seen": 7.0,
        "name": "d",
        "type": "",
        "meta": None,
        "values": {"t": [5.0, 21.5]},
    }


def test_a_device_belongs_to_the_convention_that_created_it():
    """Another convention's message for a known id is refused (FOREIGN) and changes nothing; an
    id with a convention's tag is created by that convention only."""
    reg = Registry(RegistryConfig(), {"z2m": "zigbee2mqtt"})
    lamp, outcome = reg.observe("z2m.lamp", "zigbee2mqtt")
    assert outcome == CREATED
    assert reg.observe("z2m.lamp", "native") == (None, FOREIGN)
    assert reg.observe("z2m.other", "native") == (None, FOREIGN)
    assert reg.get("z2m.other") is None
    assert reg.observe("thermo-1", "native")[1] == CREATED
    assert reg.observe("thermo-1", "zigbee2mqtt") == (None, FOREIGN)
    assert reg.observe("z2m.lamp", "zigbee2mqtt") == (lamp, KNOWN)
    assert reg.stats.devices_refused == 0  # not the cap: counted by the pipeline as foreign
