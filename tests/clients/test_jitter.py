"""2,000 clients reconnecting after a gateway restart spread their attempts out (measured)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from gateway.client import Backoff, Client
from tests.e2e.stack import Gateway, gateway_config
from tests.support.mosquitto import Mosquitto

CLIENTS = 2000


@pytest.fixture
async def roomy_gateway(broker: Mosquitto, prefix: str) -> AsyncIterator[Gateway]:
    """A restartable gateway whose own admission does not spread the clients (its connect rate
    would: 200/s), so that what is measured is the clients' jitter alone."""
    overrides = {
        "ws.connect_rate": 1e6,
        "ws.connect_burst": 1_000_000,
        "ws.max_connections_per_token": 10_000,
    }
    gateway = await Gateway(gateway_config(broker, prefix, overrides)).start()
    yield gateway
    await gateway.stop()


async def test_clients_spread_their_reconnects_after_a_restart(
    roomy_gateway: Gateway, figures: Any
) -> None:
    """2,000 real clients (real sockets, the default backoff) connected to a real gateway; it
    restarts (1001 to all): the first reconnect attempts they schedule spread over at least
    5 s, with no 100 ms slice holding more than 4x its even share.

    Measured: each client's own schedule, the time it set for its first attempt when the 1001
    came (Client.retry_at), from the real client code on a real close. Clients and gateway share
    this process's event loop, so the attempts as made also carry the loop's delays while the
    gateway closes 2,000 connections (one run: made from 2.1 to 9.2 s, but 192 in the busiest
    100 ms, all timers that fell due while the loop was busy); the schedule is the clients'
    jitter alone, and the test ends once every client has one (not 8 s later)."""
    url = roomy_gateway.url.replace("http://", "ws://") + "ws"
    restarted_at = float("inf")
    scheduled: dict[int, float] = {}
    all_scheduled = asyncio.Event()
    clients: list[Client] = []

    def watcher(i: int) -> Any:
        def on_state(phase: str, info: str) -> None:
            now = time.monotonic()
            if now < restarted_at:
                return
            if phase == "reconnecting" and clients[i].retry_at is not None:
                scheduled.setdefault(i, clients[i].retry_at - restarted_at)
                if len(scheduled) == CLIENTS:
                    all_scheduled.set()

        return on_state

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        clients.extend(
            Client(url, session=session, backoff=Backoff(), on_state=watcher(i))
            for i in range(CLIENTS)
        )
        try:
            for start in range(0, CLIENTS, 200):
                await asyncio.gather(*(c.connect() for c in clients[start : start + 200]))
            restarted_at = time.monotonic()
            await roomy_gateway.stop()
            await roomy_gateway.start()
            back_at = time.monotonic() - restarted_at
            async with asyncio.timeout(30):
                await all_scheduled.wait()
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    plan = sorted(scheduled.values())
    spread = plan[-1] - plan[0]
    busiest = max(Counter(int(t * 10) for t in plan).values())
    even = CLIENTS / (spread * 10)
    figures(
        f"{CLIENTS} clients after a restart (gateway back {back_at:.2f} s after it began): "
        f"first attempts scheduled from {plan[0]:.2f} to {plan[-1]:.2f} s (spread {spread:.2f} s, "
        f"quartiles {plan[CLIENTS // 4]:.2f}/{plan[CLIENTS // 2]:.2f}/"
        f"{plan[3 * CLIENTS // 4]:.2f} s, busiest 100 ms {busiest} vs {even:.0f} even)"
    )
    assert len(plan) == CLIENTS
    assert spread >= 5.0
    assert busiest <= 4 * even
