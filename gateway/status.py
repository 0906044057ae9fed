"""What the gateway says about itself: its version and epoch, the broker link, readiness.

/readyz, the `hello` frame and the `gateway` event read these facts from this one small object;
Runtime keeps it current (link changes, the end of the cold start's hold).
"""

from __future__ import annotations

import asyncio
import secrets
import time

from gateway import __version__
from gateway.sync import RetainedSync


class GatewayStatus:
    def __init__(self, sync: RetainedSync, instance: str) -> None:
        self.version = __version__
        self.instance = instance  # cluster.instance_id: which process of the service this is
        self.epoch = secrets.token_urlsafe(6)  # tells reconnecting clients the gateway restarted
        self.broker_connected = False
        self.broker_changed_at = time.time()
        self._sync = sync
        self._startup_hold_over = False
        self.draining = False  # shutting down: load balancers are to send nobody here
        self._writer_joined: asyncio.Event | None = None

    def watch_writer(self, joined: asyncio.Event) -> None:
        """A cluster member with durable history is ready only while it stores its share of the
        writer group (else a rolling restart could leave the group empty for a moment)."""
        self._writer_joined = joined

    @property
    def writer_state(self) -> str | None:
        """`joined` or `joining` for a cluster member that stores history; else None."""
        if self._writer_joined is None:
            return None
        return "joined" if self._writer_joined.is_set() else "joining"

    @property
    def ready(self) -> bool:
        """What /readyz says: synced, in the writer group if it has one, and not draining."""
        return self.synced and self.writer_state != "joining" and not self.draining

    @property
    def broker_state(self) -> str:
        return "connected" if self.broker_connected else "disconnected"

    @property
    def synced(self) -> bool:
        """Connected, and this connection's retained state has arrived: ready for traffic."""
        return self.broker_connected and self._sync.complete.is_set()

    @property
    def holding_snapshots(self) -> bool:
        """New subscriptions wait for their snapshot: the cold start's retained state has not
        arrived yet (once any connection's has, the registry is as complete as it gets). Bounded
        by broker.sync_timeout_s, also when the broker cannot be reached at all."""
        return not self._sync.first.is_set() and not self._startup_hold_over

    def broker_changed(self, connected: bool) -> None:
        """The broker link came up or went down (now)."""
        self.broker_connected = connected
        self.broker_changed_at = time.time()

    def end_startup_hold(self) -> None:
        """Stop holding snapshots for the cold start's retained state (it took too long)."""
        self._startup_hold_over = True

    def gateway_event(self) -> dict[str, object]:
        """The `gateway` frame every client is sent when the broker link changes."""
        return {"type": "gateway", "broker": self.broker_state, "since": self.broker_changed_at}
