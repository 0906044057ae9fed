"""Every frame counts against a connection's byte budget, and requests that build large replies
are rate-limited (issue 12, item 7): a client that asks and does not read cannot grow the
gateway's memory, and a client that asks too often is closed with a documented code."""

from __future__ import annotations

import contextlib

import orjson
import pytest

from tests.integration.conftest import AddDevice, StartGateway
from tests.reliability.helpers import eventually
from tests.reliability.rawws import OP_TEXT, RawWebSocket
from tests.support.gateway import GatewayUnderTest

BUDGET = 65536
PAD = "x" * 200  # string values are capped at 256 characters
POINTS = 200


async def history_device(gateway: GatewayUnderTest, add_device: AddDevice) -> int:
    """A device whose history reply for metric `s` is ~40 kB; returns the reply's size."""
    device = await add_device("big-1")
    watcher = await gateway.connect()
    await watcher.request({"type": "subscribe", "devices": ["big-1"]}, "subscribed")
    for n in range(POINTS):
        await device.telemetry({"s": PAD, "n": n})
    await watcher.readings(1, within=10, where=lambda r: r[1] == "n" and r[3] == POINTS - 1)
    reply = await watcher.request({"type": "history", "device": "big-1", "metric": "s"}, "history")
    await watcher.close()
    assert len(reply["points"]) == POINTS
    return len(orjson.dumps(reply))


async def test_replies_a_client_does_not_read_stay_within_the_budget_then_close_4002(
    start_gateway: StartGateway, add_device: AddDevice, figures
) -> None:
    """A client that stopped reading sends 3,000 history requests: the gateway queues replies
    up to ws.outbox_max_bytes (plus the one reply that crosses it), then closes the connection
    with 4002, counted as outbox_overflow. Fails before the fix: replies were queued without
    bound (3,000 x 40 kB here) and the connection stayed open."""
    gateway = await start_gateway(
        {
            "ws.outbox_max_bytes": BUDGET,
            "ws.send_buffer_bytes": 4096,
            "ws.history_rate": 100000.0,  # the byte budget, not the rate limit, is under test
            "ws.history_burst": 100000,
        }
    )
    reply_size = await history_device(gateway, add_device)
    host, port = gateway.base_url.removeprefix("http://").split(":")
    client = await RawWebSocket.connect(host, int(port), rcvbuf=4096)
    hello = (await client.recv()).json()
    client.writer.transport.pause_reading()  # a client that stopped reading
    request = {"type": "history", "device": "big-1", "metric": "s"}
    for i in range(3000):
        client.send(OP_TEXT, orjson.dumps({**request, "id": i}))
    with contextlib.suppress(ConnectionError):
        await client.drain()
    hub = gateway.runtime.hub
    await eventually(
        lambda: hello["session"] not in {s.id for s in hub.streams}, 20, "the stream is closed"
    )
    peak = hub.totals().outbox_peak_bytes
    assert BUDGET < peak <= BUDGET + reply_size
    client.writer.transport.resume_reading()
    frames, code = await client.recv_until_close(within=20)
    assert code == 4002
    answered = sum(1 for f in frames if f.opcode == OP_TEXT and f.json()["type"] == "history")
    assert answered < 100
    _, metrics = await gateway.get("/metrics")
    assert 'iotgw_ws_closed_by_gateway_total{reason="outbox_overflow"} 1.0' in metrics
    assert f"iotgw_ws_outbox_peak_bytes {float(peak)}" in metrics
    await client.close()
    figures(
        f"3000 unread history requests of {reply_size} B: peak queued {peak} B "
        f"(budget {BUDGET}), {answered} answered, closed {code}"
    )


@pytest.mark.parametrize(
    ("kind", "settings"),
    [
        ("history", {"ws.history_rate": 1.0, "ws.history_burst": 20}),
        ("subscribe", {"ws.subscribe_rate": 1.0, "ws.subscribe_burst": 20}),
    ],
)
async def test_requests_past_their_rate_close_the_connection_4001(
    start_gateway: StartGateway, add_device: AddDevice, kind: str, settings: dict[str, float]
) -> None:
    """History or subscribe requests past their per-connection rate (bursts of 20 here) get a
    rate_limited error and the connection is closed with 4001, counted as request_rate; the
    requests within the burst are all answered. Fails before the fix: there was no limit."""
    gateway = await start_gateway(settings)
    device = await add_device("rate-1")
    await device.telemetry({"n": 1})
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["rate-1"]}, "subscribed")
    await client.readings(1)
    if kind == "history":
        request = {"type": "history", "device": "rate-1", "metric": "n"}
        allowed = 20
    else:
        request = {"type": "subscribe", "devices": ["x-*"]}
        allowed = 19  # the first subscribe above took one
    for i in range(allowed + 5):
        await client.send({**request, "id": f"r{i}"})
    assert await client.closed(within=10) == 4001
    replies = [f for f in client.seen if str(f.get("id", "")).startswith("r")]
    answered = [f for f in replies if f["type"] != "error"]
    assert len(answered) == allowed
    assert [f["code"] for f in replies if f["type"] == "error"] == ["rate_limited"]
    _, metrics = await gateway.get("/metrics")
    assert 'iotgw_ws_closed_by_gateway_total{reason="request_rate"} 1.0' in metrics


async def test_a_reading_client_within_the_rates_is_served(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """A dashboard-like burst (a history request per metric of a device, a few subscribes) under
    the default limits is answered in full and the connection stays open."""
    device = await add_device("ok-1")
    client = await gw.connect()
    await client.request({"type": "subscribe", "devices": ["ok-1"]}, "subscribed")
    await device.telemetry({f"m{i}": i for i in range(64)})
    await client.readings(64)
    for i in range(64):
        await client.send({"type": "history", "id": f"h{i}", "device": "ok-1", "metric": f"m{i}"})
    replies = [await client.expect(lambda f, i=i: f.get("id") == f"h{i}") for i in range(64)]
    assert {f["type"] for f in replies} == {"history"}
    await client.request({"type": "ping"}, "pong")
    assert not client.ws.closed
