"""Snapshots for new subscriptions, and the ones held back while the retained state arrives.

At a cold start the broker hands over every device's retained meta and status in a burst that
takes seconds for a large fleet (gateway/sync.py tells when it is over). A snapshot taken during
the burst would be partial, and its subscriber would then be sent one `device` frame per device
still to come. So a subscription made while the first burst is under way is answered at once with
`subscribed`, but joins the live stream only when the burst is over, with its snapshot first:
snapshot, then live, as always, just later.
"""

from __future__ import annotations

from gateway.hub import Hub
from gateway.matching import Interest, Selector
from gateway.protocol import encode
from gateway.registry import Registry
from gateway.session import Session


def snapshot_frame(registry: Registry, selector: Selector, subscription: str) -> bytes:
    """The current state of every device `selector` matches, as one encoded frame."""
    interest = Interest(frozenset([selector]))
    devices = []
    for device in registry.matching(interest.wants_device):
        entry = device.snapshot()
        if interest.filters_metrics:
            entry["values"] = {
                metric: point
                for metric, point in entry["values"].items()
                if interest.wants(device.id, metric)
            }
        devices.append(entry)
    return encode({"type": "snapshot", "subscription": subscription, "devices": devices})


def subscribe(
    registry: Registry,
    hub: Hub,
    session: Session,
    subscription: str,
    frames: dict[tuple[Selector, str], bytes] | None = None,
) -> None:
    """Join the live stream with `subscription` (already in session.subscriptions), its
    snapshot queued first. `frames`: snapshots already encoded for the same registry state."""
    selector = session.subscriptions[subscription]
    frame = frames.get((selector, subscription)) if frames is not None else None
    if frame is None:
        frame = snapshot_frame(registry, selector, subscription)
        if frames is not None:
            frames[(selector, subscription)] = frame
    hub.resubscribe(session)
    session.offer(frame)


class HeldSnapshots:
    """Subscriptions waiting for the retained state, released together when it is in."""

    def __init__(self) -> None:
        self._held: list[tuple[Session, str]] = []

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, session: Session, subscription: str) -> None:
        self._held.append((session, subscription))

    def release(self, registry: Registry, hub: Hub) -> None:
        held, self._held = self._held, []
        # Dashboards reconnecting after a restart all ask for "*" as their first subscription:
        # one encoding serves them all (a 50,000-device snapshot takes ~0.2 s to build).
        frames: dict[tuple[Selector, str], bytes] = {}
        for session, subscription in held:
            # Gone meanwhile: unsubscribed, closed, or its connection ended and its stream expired.
            if session.closing or subscription not in session.subscriptions or session not in hub:
                continue
            subscribe(registry, hub, session, subscription, frames)
