"""The retained-state marker: its topic, and which payloads complete a connection's sync."""

from __future__ import annotations

import asyncio

from gateway.sync import MARKER_PREFIX, RetainedSync, marker_topic


def test_marker_topic_uses_a_plain_client_id_and_hashes_anything_else():
    """A topic-safe client id names the topic; wildcards, slashes or odd characters never reach
    it (they are replaced by a hash of the id)."""
    assert marker_topic("iotgw-1a2b") == "iotgw/sync/iotgw-1a2b"
    for client_id in ("a/b", "x+", "#", "ümlaut", "", "a" * 65):
        topic = marker_topic(client_id)
        suffix = topic.removeprefix("iotgw/sync/")
        assert len(suffix) == 32
        assert suffix.isalnum()
    assert marker_topic("a/b") == marker_topic("a/b")


async def test_only_this_connections_marker_completes_the_sync():
    """A marker of an earlier connection is consumed but does not count; the current one does,
    and sets both this connection's and the first sync's events."""
    sync = RetainedSync("gw")
    old = sync.begin()
    sync.lost()
    current = sync.begin()
    assert old != current
    assert sync.arrived(old) is True
    assert not sync.complete.is_set()
    assert sync.arrived(current) is True
    assert sync.complete.is_set()
    assert sync.first.is_set()


async def test_messages_that_are_not_markers_are_left_alone():
    """A payload without the marker prefix on the topic is not ours (returned False)."""
    sync = RetainedSync("gw")
    sync.begin()
    assert sync.arrived(b"online") is False
    assert not sync.complete.is_set()


async def test_a_new_connection_starts_unsynced_but_the_first_sync_stays_done():
    """Reconnecting clears this connection's state; the cold start's first sync stays done."""
    sync = RetainedSync("gw")
    sync.arrived(sync.begin())
    sync.lost()
    sync.begin()
    assert not sync.complete.is_set()
    assert sync.first.is_set()


async def test_waiting_gives_up_after_the_timeout_and_says_so():
    """No marker within the timeout: wait() returns False, and the sync counts as complete with
    timed_out set (the gateway serves what it has)."""
    sync = RetainedSync("gw")
    sync.begin()
    assert await sync.wait(0.01) is False
    assert sync.timed_out
    assert sync.complete.is_set()
    assert sync.first.is_set()
    payload = sync.begin()
    assert not sync.timed_out
    waiter = asyncio.ensure_future(sync.wait(10))
    sync.arrived(payload)
    assert await waiter is True
    assert payload.startswith(MARKER_PREFIX)
