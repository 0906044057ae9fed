"""Knowing when the broker has handed over its retained state (device meta and status).

After each (re)connect the broker link subscribes, and the broker then sends every retained
message matching those subscriptions. MQTT has no "that was all" signal, so the gateway makes one:
it publishes a marker (QoS 1, not retained) to a topic only it subscribes to. A broker handles one
connection's packets in order, and Mosquitto queues a subscription's retained messages while it
handles the SUBSCRIBE, before it reads the next packet; the marker is delivered after them, and
the retained state is complete when it comes back. (A broker that drops part of the burst at its
queue limits usually drops the marker too: see docs/operations.md.)
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets

#: Fixed and never taken from a client: only the gateway publishes or subscribes here.
TOPIC_ROOT = "iotgw/sync/"
MARKER_PREFIX = b"iotgw-sync:"
_SAFE_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def marker_topic(client_id: str) -> str:
    """`iotgw/sync/<client id>`; an id that is not plainly topic-safe is replaced by its hash."""
    if _SAFE_CLIENT_ID.fullmatch(client_id) is None:
        client_id = hashlib.sha256(client_id.encode()).hexdigest()[:32]
    return TOPIC_ROOT + client_id


class RetainedSync:
    """The marker of the current connection, and whether its retained state has all arrived."""

    def __init__(self, client_id: str) -> None:
        self.topic = marker_topic(client_id)
        self._expected = b""
        self.complete = asyncio.Event()  # this connection's retained state is in
        self.first = asyncio.Event()  # some connection's retained state was (the cold start)
        self.timed_out = False

    def begin(self) -> bytes:
        """A new connection: its marker payload (a fresh nonce: an earlier connection's marker
        arriving late must not count)."""
        self._expected = MARKER_PREFIX + secrets.token_hex(8).encode()
        self.complete.clear()
        self.timed_out = False
        return self._expected

    def lost(self) -> None:
        self._expected = b""
        self.complete.clear()

    def arrived(self, payload: bytes) -> bool:
        """A message on the marker topic; True if it was a marker (ours or a stale one)."""
        if not payload.startswith(MARKER_PREFIX):
            return False
        if self._expected and payload == self._expected:
            self._finish()
        return True

    def give_up(self) -> None:
        """The marker never came back (an ACL refusing the topic, a broker that dropped it):
        carry on as if complete, and say so."""
        self.timed_out = True
        self._finish()

    def _finish(self) -> None:
        self._expected = b""
        self.complete.set()
        self.first.set()

    async def wait(self, timeout_s: float) -> bool:
        """Wait for this connection's marker; False (and given up) after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self.complete.wait()
        except TimeoutError:
            self.give_up()
            return False
        return True
