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


async def _attempts_for(monkeypatch, script: list[str], stable_after_s: float) -> list[int]:
    """Run the link over scripted sessions; return the backoff attempt number before each retry.

    "up-then-lost" connects and is lost at once; "refused" never connects.
    """
    attempts: list[int] = []
    monkeypatch.setattr(
        gateway.ingest, "backoff_delay", lambda attempt, low, high: attempts.append(attempt) or 0
    )
    link = BrokerLink(BrokerConfig(), [], lambda topic, payload: None, lambda up: None)
    link.stable_after_s = stable_after_s

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
    return attempts


async def test_backoff_restarts_from_the_minimum_after_a_stable_connection(monkeypatch):
    """After a connection that held (here: any, stable_after_s=0) is lost, the next reconnect
    waits from the first step again, while refusals in between keep backing off."""
    script = ["up-then-lost", "refused", "up-then-lost", "up-then-lost"]
    assert await _attempts_for(monkeypatch, script, stable_after_s=0.0) == [0, 1, 0, 0]


async def test_a_link_lost_right_after_connecting_keeps_backing_off(monkeypatch):
    """Connections dropped at once (a client id thief, a broker kicking us) do not reset the
    backoff, so the gateway cannot flap in a tight loop."""
    script = ["up-then-lost"] * 4
    assert await _attempts_for(monkeypatch, script, stable_after_s=3600.0) == [0, 1, 2, 3]
