"""The broker link through faults: killed, frozen, absent, its client id stolen, reset in a loop.

Each test runs its own Mosquitto (`own_broker`), often behind the fault proxy, with a short
keepalive so that a silent broker is noticed in a few seconds rather than a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import secrets
import time

import aiomqtt
import orjson
import pytest

from tests.reliability.helpers import eventually, settled_counts, task_count
from tests.support.devices import tolerant_client
from tests.support.gateway import GatewayUnderTest, WsClient

KEEPALIVE_S = 2


def is_broker(state: str):
    return lambda f: f["type"] == "gateway" and f["broker"] == state


def max_attempts(window_s: float, low: float, high: float) -> int:
    """A generous ceiling on reconnect attempts in `window_s` under capped full-jitter backoff.

    The delay ceiling doubles from `low` to `high` in log2(high/low) steps; after that each delay
    averages (low + high) / 2. Twice that average count leaves room for unlucky jitter.
    """
    ramp = math.ceil(math.log2(high / low)) + 1
    return ramp + math.ceil(2 * window_s / ((low + high) / 2))


def runtime_task() -> asyncio.Task:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == "gateway.runtime"]
    return task


async def subscribed_clients(gateway: GatewayUnderTest, count: int) -> list[WsClient]:
    clients = []
    for _ in range(count):
        client = await gateway.connected_client()
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
        clients.append(client)
    return clients


class Load:
    """Telemetry from one device at a steady pace, riding out broker restarts on its own."""

    def __init__(self, broker, prefix: str, device: str = "load-1") -> None:
        self.broker = broker
        self.topic = f"{prefix}/{device}/telemetry"
        self.n = 0
        self._task: asyncio.Task | None = None

    def start(self) -> Load:
        self._task = asyncio.create_task(self._run(), name="test-load")
        return self

    async def _run(self) -> None:
        while True:
            try:
                async with tolerant_client(self.broker.host, self.broker.port) as client:
                    while True:
                        self.n += 1
                        # A bounded wait: on a dead socket aiomqtt would wait its default 10 s.
                        payload = orjson.dumps({"n": self.n})
                        await client.publish(self.topic, payload, qos=0, timeout=1)
                        await asyncio.sleep(0.01)  # the load's own pace: 100 messages/s
            except (aiomqtt.MqttError, OSError):
                await asyncio.sleep(0.1)  # broker down: the load retries at its own pace

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def newer_than(n: int):
    return lambda row: row[1] == "n" and row[3] > n


async def test_broker_kill9_under_load(start_gateway, own_broker, prefix, figures):
    """Broker SIGKILLed under live load: clients are told disconnected, /readyz goes 503; after a
    restart they are told connected, /readyz 200, readings resume, and the gateway's task count
    is back to where it was."""
    gateway = await start_gateway({"broker.keepalive_s": KEEPALIVE_S}, on=own_broker)
    clients = await subscribed_clients(gateway, 5)
    load = Load(own_broker, prefix).start()
    try:
        for client in clients:
            await client.readings(3)
        # The test's own keep-alive HTTP connection (a server task) is in the baseline too.
        assert (await gateway.get("/healthz"))[0] == 200
        baseline, _ = await settled_counts()
        killed = time.monotonic()
        own_broker.kill()
        for client in clients:
            await client.expect(is_broker("disconnected"))
        detected = time.monotonic() - killed
        status, body = await gateway.get("/readyz")
        assert (status, body["broker"]) == (503, "disconnected")
        assert (await gateway.get("/healthz"))[0] == 200

        own_broker.start()
        restarted = time.monotonic()
        for client in clients:
            await client.expect(is_broker("connected"))
        back = time.monotonic() - restarted
        await gateway.synced()  # the marker comes back just after "connected"
        assert (await gateway.get("/readyz"))[0] == 200
        mark = load.n
        for client in clients:
            assert await client.readings(1, where=newer_than(mark))
        assert not runtime_task().done()
        settled = await eventually(
            lambda: task_count() <= baseline, 5, f"task count back to {baseline}"
        )
        figures(
            f"kill -9 noticed in {detected * 1000:.0f} ms; reconnected {back * 1000:.0f} ms after"
            f" restart; tasks back to {baseline} within {settled * 1000:.0f} ms"
        )
    finally:
        await load.stop()


@pytest.mark.parametrize(
    ("keepalive_s", "hold_s"),
    [
        pytest.param(KEEPALIVE_S, 0.0, id="ci"),
        pytest.param(5, 30.0, id="30s", marks=pytest.mark.soak),
    ],
)
async def test_broker_frozen_is_detected_and_recovered(
    start_gateway, own_broker, proxy, prefix, figures, keepalive_s, hold_s
):
    """A SIGSTOPped broker is noticed by the MQTT keepalive: the gateway sends one PINGREQ and,
    when it goes unanswered, drops the link at its next keepalive check instead of pinging again
    (so within two keepalive intervals, counted by the client's own clock). Clients are told,
    /readyz 503, new clients' hello says disconnected; after SIGCONT the link and readings come
    back."""
    gateway = await start_gateway(
        {"broker.keepalive_s": keepalive_s, "broker.publish_timeout_s": 2.0}, on=proxy
    )
    (client,) = await subscribed_clients(gateway, 1)
    link = proxy.stats.accepted - 1  # the gateway's connection, the last one through the proxy
    sent = proxy.stats.bytes_up_by_connection
    frozen, sent_before = time.monotonic(), sent[link]
    own_broker.freeze()
    try:
        # A generous deadline: how soon is asserted by counting pings, not by the clock.
        await client.expect(is_broker("disconnected"), within=4 * keepalive_s + 10)
        detected = time.monotonic() - frozen
        # Idle, the gateway sends nothing but keepalive pings: 2 bytes each (C0 00). It sends
        # one, or none when its ping was already out as the broker froze; paho closes the socket
        # on a keepalive timeout without a DISCONNECT.
        assert sent[link] - sent_before <= 2, f"{sent[link] - sent_before} bytes while frozen"
        assert (await gateway.get("/readyz"))[0] == 503
        late = await gateway.connect()
        assert late.hello["broker"] == "disconnected"
        if hold_s:
            with pytest.raises(TimeoutError):
                # Bounded window: the link must not claim to be up while the broker is frozen.
                await client.expect(is_broker("connected"), within=hold_s)
    finally:
        own_broker.thaw()
    thawed = time.monotonic()
    await client.expect(is_broker("connected"), within=15)
    back = time.monotonic() - thawed
    await gateway.synced()  # the marker comes back just after "connected"
    assert (await gateway.get("/readyz"))[0] == 200
    async with tolerant_client(own_broker.host, own_broker.port) as device:
        await device.publish(f"{prefix}/dev-1/telemetry", b'{"n": 1, "ts": 1}', qos=1)
        assert await client.readings(1) == [["dev-1", "n", 1.0, 1]]
    figures(
        f"keepalive {keepalive_s}s: SIGSTOP noticed after {detected:.2f}s"
        f" ({detected / keepalive_s:.2f}x keepalive), {sent[link] - sent_before} bytes sent"
        f" meanwhile; reconnected {back:.2f}s after SIGCONT"
    )


async def test_broker_absent_at_start(start_gateway, own_broker, prefix, figures):
    """Started with no broker, the gateway serves HTTP (/healthz 200, /readyz 503, hello says
    disconnected), retries without a tight loop, and connects on its own once the broker starts."""
    own_broker.kill()
    low, high = 0.05, 0.5
    gateway = await start_gateway(
        {"broker.reconnect_min_s": low, "broker.reconnect_max_s": high},
        on=own_broker,
        wait_connected=False,
    )
    client = await gateway.connect()
    assert client.hello["broker"] == "disconnected"
    status, body = await gateway.get("/readyz")
    assert (status, body["broker"]) == (503, "disconnected")
    assert (await gateway.get("/healthz"))[0] == 200
    assert (await gateway.get("/api/devices"))[0] == 200
    link = gateway.runtime.link
    before, window = link.stats.connect_failures, 2.0
    with pytest.raises(TimeoutError):
        # Bounded window with the broker absent: count the attempts made meanwhile.
        await client.expect(is_broker("connected"), within=window)
    attempts = link.stats.connect_failures - before
    assert 1 <= attempts <= max_attempts(window, low, high), f"{attempts} attempts in {window}s"
    own_broker.start()
    started = time.monotonic()
    await client.expect(is_broker("connected"), within=high + 10)
    took = time.monotonic() - started
    await gateway.synced()  # the marker comes back just after "connected"
    assert (await gateway.get("/readyz"))[0] == 200
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    async with tolerant_client(own_broker.host, own_broker.port) as device:
        await device.publish(f"{prefix}/dev-9/telemetry", b'{"n": 9, "ts": 9}', qos=1)
        assert await client.readings(1) == [["dev-9", "n", 9.0, 9]]
    figures(
        f"{attempts} connect attempts in {window}s while absent; connected {took:.2f}s after start"
    )


async def test_stolen_client_id_backs_off(start_gateway, own_broker, prefix, figures):
    """Another client connecting with the gateway's client id keeps kicking it off: the gateway
    stays up and reconnects with growing backoff (connections over a window stay under a bound
    derived from reconnect_min_s/reconnect_max_s), and settles once the thief is gone."""
    low, high, window = 0.1, 1.6, 6.0
    client_id = f"iotgw-victim-{secrets.token_hex(3)}"
    gateway = await start_gateway(
        {
            "broker.client_id": client_id,
            "broker.reconnect_min_s": low,
            "broker.reconnect_max_s": high,
        },
        on=own_broker,
    )
    (client,) = await subscribed_clients(gateway, 1)
    link = gateway.runtime.link
    thief_connects = 0

    async def thief() -> None:
        nonlocal thief_connects
        while True:
            try:
                async with aiomqtt.Client(
                    own_broker.host, own_broker.port, identifier=client_id
                ) as stolen:
                    thief_connects += 1
                    async for _ in stolen.messages:
                        pass
            except aiomqtt.MqttError:
                await asyncio.sleep(0.02)  # the thief's own, deliberately aggressive, retry pace

    connects_before = link.stats.connects
    task = asyncio.create_task(thief(), name="test-thief")
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=window)  # the bounded window
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    connects = link.stats.connects - connects_before
    figures(
        f"client id stolen for {window}s: gateway connected {connects} times (bound"
        f" {max_attempts(window, low, high)}), thief {thief_connects} times"
    )
    assert not runtime_task().done()
    # Frames from the theft are still queued on the client, so wait on the link itself.
    await eventually(lambda: link.connected, high + 10, "the link back after the thief left")
    await gateway.synced()  # the marker comes back just after "connected"
    assert (await gateway.get("/readyz"))[0] == 200
    await client.expect(is_broker("connected"))
    assert connects <= max_attempts(window, low, high), (
        f"{connects} connections in {window}s: reconnecting in a tight loop"
    )


@pytest.mark.parametrize(
    ("duration_s", "every_s"),
    [
        pytest.param(8.0, (0.5, 2.0), id="ci"),
        pytest.param(60.0, (2.0, 2.0), id="60s", marks=pytest.mark.soak),
    ],
)
async def test_link_reset_storm_leaks_nothing(
    start_gateway, proxy, prefix, figures, duration_s, every_s
):
    """The link reset (RST) every 0.5-2 s for a bounded period: the gateway reconnects each time
    and its asyncio task count and open fd count return to the baseline."""
    gateway = await start_gateway({"broker.keepalive_s": KEEPALIVE_S}, on=proxy)
    (client,) = await subscribed_clients(gateway, 1)
    link = gateway.runtime.link
    base_tasks, base_fds = await settled_counts()
    connects_before = link.stats.connects
    rng = random.Random(6)
    resets = connects_at_reset = 0
    ends = time.monotonic() + duration_s
    while time.monotonic() < ends:
        await asyncio.sleep(rng.uniform(*every_s))  # the fault schedule itself
        resets += proxy.reset_all() > 0
        connects_at_reset = link.stats.connects
    # A connection counted after the last reset is one the storm did not hit.
    await eventually(
        lambda: link.connected and link.stats.connects > connects_at_reset, 15, "link back up"
    )
    await gateway.synced()  # the marker comes back just after "connected"
    assert (await gateway.get("/readyz"))[0] == 200
    assert (await client.expect(lambda f: f["type"] == "gateway"))["broker"] == "disconnected"
    reconnects = link.stats.connects - connects_before
    assert reconnects >= resets // 2, f"{reconnects} reconnects after {resets} resets"
    tasks, fds = await settled_counts()
    figures(
        f"{resets} resets in {duration_s:.0f}s, {reconnects} reconnects:"
        f" tasks {base_tasks}->{tasks}, fds {base_fds}->{fds}"
    )
    assert tasks <= base_tasks + 1
    assert fds <= base_fds + 2
