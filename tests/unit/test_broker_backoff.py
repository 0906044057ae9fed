"""The broker link's reconnect policy: capped, jittered exponential backoff."""

from __future__ import annotations

import asyncio

import aiomqtt
import pytest

import gateway.ingest
from gateway.config import BrokerConfig
from gateway.ingest import BrokerLink, backoff_delay


@pytest.mark.parametrize("attempt", [0, 1, 3, 10, 100, 10_000])
def test_backoff_delay_stays_between_min_and_capped_ceiling(attempt):
    """Delays lie in [low, min(high, low * 2**attempt)], even for huge attempt counts."""
    delays = [backoff_delay(attempt, 0.5, 30.0) for _ in range(200)]
    assert all(0.5 <= d <= min(30.0, 0.5 * 2 ** min(attempt, 60)) for d in delays)


async def test_backoff_restarts_from_the_minimum_after_a_connection_was_established(monkeypatch):
    """After a connection that came up and was later lost, the next reconnect waits from the
    first step again: the attempt count resets once a connection succeeds."""
    attempts: list[int] = []
    monkeypatch.setattr(
        gateway.ingest, "backoff_delay", lambda attempt, low, high: attempts.append(attempt) or 0
    )
    link = BrokerLink(BrokerConfig(), [], lambda topic, payload: None, lambda up: None)
    # Each session connects (subscribed, counted), then loses the broker, like a broker restart.
    script = ["up-then-lost", "refused", "up-then-lost", "up-then-lost"]

    async def session() -> None:
        step = script.pop(0) if script else "stop"
        if step == "stop":
            raise asyncio.CancelledError
        if step == "up-then-lost":
            link.stats.connects += 1
            raise aiomqtt.MqttError("Disconnected during message iteration")
        raise aiomqtt.MqttError("Connection refused")

    monkeypatch.setattr(link, "_session", session)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(link.run(), 5)
    assert attempts == [0, 1, 0, 0]
