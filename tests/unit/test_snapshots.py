"""Snapshots for new subscriptions, and the ones held until the retained state is in."""

from __future__ import annotations

import orjson

from gateway.config import RegistryConfig, WsConfig
from gateway.hub import Hub
from gateway.matching import Selector
from gateway.protocol import CloseCode, CloseReason
from gateway.registry import Registry
from gateway.snapshots import HeldSnapshots, snapshot, subscribe
from tests.support.fakes import RecordingStream


def fleet(*ids: str) -> Registry:
    registry = Registry(RegistryConfig())
    for device_id in ids:
        device, _ = registry.observe(device_id, "native")
        assert device is not None
        registry.apply_samples(device, [("t", 1.0, 20.5), ("h", 1.0, 40)], 1.0)
    return registry


def held_session(hub: Hub, held: HeldSnapshots, name: str) -> RecordingStream:
    session = RecordingStream(name, hub._config)
    hub.add(session)
    subscription = session.new_subscription_id()
    session.subscriptions[subscription] = Selector.of(["*"])
    held.hold(session, subscription)
    return session


def test_snapshot_holds_the_matching_devices_and_only_the_wanted_metrics():
    """Devices are filtered by the selector's globs, values by its metric globs."""
    frame = orjson.loads(
        b"{%b}" % snapshot(fleet("a-1", "a-2", "b-1"), Selector.of(["a-*"], ["t"]), "s3")
    )
    assert frame["subscription"] == "s3"
    assert [d["id"] for d in frame["devices"]] == ["a-1", "a-2"]
    assert all(d["values"] == {"t": [1.0, 20.5]} for d in frame["devices"])


async def test_subscribe_queues_the_snapshot_before_any_live_readings():
    """Snapshot, then live: the session joins the hub and its snapshot is its first offer."""
    hub = Hub(WsConfig())
    registry = fleet("a-1")
    session = RecordingStream("s", hub._config)
    hub.add(session)
    session.subscriptions["s1"] = Selector.of(["*"])
    subscribe(registry, hub, session, "s1")
    hub.add_readings([("a-1", "t", 2.0, 21.0)])
    hub.flush()
    kinds = [kind for kind, _ in session.offers]
    assert kinds == ["snapshot", "batch"]


async def test_held_sessions_get_nothing_until_released_then_snapshot_first():
    """While held, a session is not in the live stream; on release it gets the snapshot of the
    registry as it is then, before anything live."""
    hub = Hub(WsConfig())
    held = HeldSnapshots()
    registry = fleet("a-1")
    session = held_session(hub, held, "s")
    hub.add_readings([("a-1", "t", 2.0, 21.0)])
    hub.flush()
    assert session.offers == []
    fleet_now = fleet("a-1", "a-2")
    held.release(fleet_now, hub)
    assert len(held) == 0
    [(kind, body)] = session.offers
    assert kind == "snapshot"
    assert [d["id"] for d in orjson.loads(b"{%b}" % body)["devices"]] == ["a-1", "a-2"]
    assert registry is not fleet_now


async def test_release_skips_sessions_that_left_unsubscribed_or_are_closing():
    """A held subscription whose session was removed, unsubscribed or is being closed gets no
    snapshot (and is not put into the live stream)."""
    hub = Hub(WsConfig())
    held = HeldSnapshots()
    gone, unsubscribed, closing, kept = (held_session(hub, held, n) for n in "guck")
    hub.remove(gone)
    unsubscribed.subscriptions.clear()
    closing.evict(CloseCode.SLOW_CONSUMER, CloseReason.SLOW_CONSUMER)
    held.release(fleet("a-1"), hub)
    assert gone.offers == unsubscribed.offers == closing.offers == []
    assert len(kept.offers) == 1


async def test_held_sessions_with_the_same_subscription_share_one_encoding():
    """Released together, sessions asking for the same selector under the same subscription id
    are offered the very same bytes."""
    hub = Hub(WsConfig())
    held = HeldSnapshots()
    a, b = held_session(hub, held, "a"), held_session(hub, held, "b")
    held.release(fleet("a-1"), hub)
    assert a.offers[0][1] is b.offers[0][1]


async def test_subscribers_with_the_same_filter_share_a_snapshot_until_the_next_flush():
    """Clients subscribing with the same filter and subscription id between two flushes are
    offered the same bytes; after a flush the snapshot is built again from the registry."""
    hub = Hub(WsConfig(batch_interval_ms=60_000))
    registry = fleet("a-1")
    a, b, c = (RecordingStream(n, hub._config) for n in "abc")
    for stream in (a, b, c):
        hub.add(stream)
        stream.subscriptions["s1"] = Selector.of(["*"])
    subscribe(registry, hub, a, "s1")
    subscribe(registry, hub, b, "s1")
    assert a.offers[0][1] is b.offers[0][1]
    device = registry.get("a-1")
    assert device is not None
    registry.apply_samples(device, [("t", 2.0, 99.0)], 2.0)
    hub.add_readings([("a-1", "t", 2.0, 99.0)])
    hub.flush()
    subscribe(registry, hub, c, "s1")
    [(_, body)] = [o for o in c.offers if o[0] == "snapshot"]
    assert body is not a.offers[0][1]
    assert orjson.loads(b"{%b}" % body)["devices"][0]["values"]["t"] == [2.0, 99.0]
