"""Snapshots for new subscriptions, and the ones held back while the retained state arrives.

A snapshot is encoded once for every subscriber that asks with the same filter and subscription
id before the next flush (Hub.shared): dashboards all subscribe to "*" as their first
subscription, so a crowd reconnecting together costs one encoding, not one per client.

At a cold start the broker hands over every device's retained meta and status in a burst that
takes seconds for a large fleet (gateway/sync.py tells when it is over). A snapshot taken during
the burst would be partial, and its subscriber would then be sent an event per device still to
come. So a subscription made while the first burst is under way is answered at once with
`subscribed`, but joins the live stream only when the burst is over, with its snapshot first:
snapshot, then live, as always, just later.
"""

from __future__ import annotations

from gateway.hub import Hub
from gateway.matching import Interest, Selector
from gateway.protocol import snapshot_body
from gateway.registry import Registry
from gateway.stream import Stream


def snapshot(registry: Registry, selector: Selector, subscription: str) -> bytes:
    """The current state of every device `selector` matches: a snapshot frame's body."""
    interest = Interest(frozenset([selector]))
    devices = []
    chosen = registry if interest.matches_all else registry.matching(interest.wants_device)
    for device in chosen:
        entry = device.snapshot()
        if interest.filters_metrics:
            entry["values"] = {
                metric: point
                for metric, point in entry["values"].items()
                if interest.wants(device.id, metric)
            }
        devices.append(entry)
    return snapshot_body(subscription, devices)


def subscribe(registry: Registry, hub: Hub, stream: Stream, subscription: str) -> None:
    """Join the live stream with `subscription` (already in stream.subscriptions), its snapshot
    queued first."""
    selector = stream.subscriptions[subscription]
    body = hub.shared(
        ("snapshot", selector, subscription), lambda: snapshot(registry, selector, subscription)
    )
    hub.resubscribe(stream)
    stream.offer_snapshot(body)


class HeldSnapshots:
    """Subscriptions waiting for the retained state, released together when it is in."""

    def __init__(self) -> None:
        self._held: list[tuple[Stream, str]] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, stream: Stream, subscription: str) -> None:
        self._held.append((stream, subscription))

    def release(self, registry: Registry, hub: Hub) -> None:
        held, self._held = self._held, []
        for stream, subscription in held:
            # Gone meanwhile: unsubscribed, closed, or its connection ended and its stream expired.
            if stream.closing or subscription not in stream.subscriptions or stream not in hub:
                continue
            subscribe(registry, hub, stream, subscription)
