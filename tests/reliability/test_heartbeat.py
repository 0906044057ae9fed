"""Heartbeats: the gateway's one sweep pings silent connections and cuts those that never answer.

Clients here answer (or ignore) pings themselves (autoping off), so a test can count the pings
each connection got and wait for them instead of for time to pass.
"""

from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import WSMsgType

from tests.reliability.helpers import eventually
from tests.support.gateway import WAIT_S

HEARTBEAT_S = 2.0  # a ping every 2-2.5 s of silence; an answer is due within 1 s
CLIENTS = 200
PINGS = 2  # each client must have answered this many pings


async def _subscribe(ws: aiohttp.ClientWebSocketResponse, device: str) -> None:
    await ws.send_str(orjson.dumps({"type": "subscribe", "id": 1, "devices": [device]}).decode())
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await ws.receive()
            assert message.type == WSMsgType.TEXT, message
            if orjson.loads(message.data)["type"] == "snapshot":
                return


async def test_idle_subscribed_clients_stay_connected_through_heartbeats(start_gateway):
    """200 idle subscribed clients that answer pings are each pinged twice and all stay."""
    gw = await start_gateway({"ws.heartbeat_s": HEARTBEAT_S})
    answered = [0] * CLIENTS
    all_pinged = asyncio.Event()
    closed: list[object] = []

    async def client(index: int) -> None:
        ws = await http.ws_connect(gw.ws_url, autoping=False)
        await _subscribe(ws, f"dev-{index}")
        async for message in ws:
            if message.type == WSMsgType.PING:
                await ws.pong(message.data)
                answered[index] += 1
                if min(answered) >= PINGS:
                    all_pinged.set()
        closed.append(ws.close_code)

    # The test harness's session allows 100 connections per host; these clients need 200.
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http, asyncio.TaskGroup() as tasks:
        running = [tasks.create_task(client(i)) for i in range(CLIENTS)]
        # Bounded: two heartbeats and a half, with a wide margin for a slow machine.
        await asyncio.wait_for(all_pinged.wait(), 10 * HEARTBEAT_S * PINGS)
        assert closed == []
        assert len(gw.runtime.hub) == CLIENTS
        assert gw.runtime.stats.connections.closed["no_pong"] == 0
        for task in running:
            task.cancel()


async def test_a_client_that_never_answers_is_cut_and_its_stream_parked(start_gateway):
    """No pong within half a heartbeat: the transport is cut (the client sees the connection
    end without a close frame), counted as no_pong, and the subscribed stream is parked."""
    gw = await start_gateway({"ws.heartbeat_s": HEARTBEAT_S})
    ws = await gw.http.ws_connect(gw.ws_url, autoping=False)
    await _subscribe(ws, "dev-1")
    pings = 0
    async with asyncio.timeout(10 * HEARTBEAT_S):
        async for message in ws:
            pings += message.type == WSMsgType.PING  # ...and never answered
    assert pings == 1
    assert ws.close_code == aiohttp.WSCloseCode.ABNORMAL_CLOSURE
    assert gw.runtime.stats.connections.closed["no_pong"] == 1
    await eventually(lambda: gw.runtime.hub.parked == 1, WAIT_S, "the stream is parked")
