"""Slow and stuck clients beside healthy ones, and connection churn.

The healthy clients read everything as it comes; a slow client stops reading for long pauses; a
raw socket completes the upgrade, subscribes and never reads again. The gateway must keep the
healthy ones complete and gap-free, tell the slow one (lagging) or evict it (4000), and cut the
stuck one off so its session and socket are gone.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import orjson
from aiohttp import WSMsgType

from tests.reliability.helpers import eventually, settled_counts
from tests.reliability.rawws import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, RawWebSocket
from tests.support.gateway import GatewayUnderTest

HEALTHY = 10
MAX_MESSAGES = 1500  # phase 2 ends sooner: once the slow client has been told it lags
METRICS = 60  # per message, each a 200-character string: about 12 kB per MQTT message
PAD = "x" * 200
SLOW_CONFIG = {
    "ws.outbox_max_bytes": 262144,
    "ws.slow_client_timeout_s": 5.0,
    "ws.send_timeout_s": 5.0,
}


class Reader:
    """A healthy client: reads every frame as soon as it arrives, noting when."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.frames: list[tuple[float, dict]] = []
        self.close_code: int | None = None
        self.task = asyncio.create_task(self._run(), name="test-reader")

    async def _run(self) -> None:
        while True:
            message = await self.ws.receive()
            if message.type != WSMsgType.TEXT:
                self.close_code = self.ws.close_code
                return
            self.frames.append((time.time(), orjson.loads(message.data)))

    def rows(self, since: int = 0) -> list[list]:
        return [r for _, f in self.frames[since:] if f["type"] == "readings" for r in f["data"]]

    def latencies(self, since: int = 0) -> list[float]:
        """Seconds from publish (the `t` metric's value) to receipt, per message."""
        return [
            at - r[3]
            for at, f in self.frames[since:]
            if f["type"] == "readings"
            for r in f["data"]
            if r[1] == "t"
        ]

    def of_type(self, kind: str) -> list[dict]:
        return [f for _, f in self.frames if f["type"] == kind]


async def publish_load(client, topic: str, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        body = {"t": time.time(), "n": n, **{f"m{i}": PAD for i in range(METRICS - 2)}}
        await client.publish(topic, orjson.dumps(body), qos=0)
        await asyncio.sleep(0.005)  # the load's pace, about 1.6 MB/s


def assert_gap_free(frames: list[dict]) -> None:
    seqs = [f["seq"] for f in frames if f["type"] == "readings"]
    assert seqs == list(range(1, len(seqs) + 1)), "seq has a gap or repeats"


async def wait_rows(reader: Reader, count: int, within: float = 30.0) -> None:
    await eventually(lambda: len(reader.rows()) >= count, within, f"{count} rows delivered")


async def raw_client(gateway: GatewayUnderTest, rcvbuf: int | None) -> RawWebSocket:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    raw = await RawWebSocket.connect(host, int(port), rcvbuf=rcvbuf)
    raw.send(OP_TEXT, orjson.dumps({"type": "subscribe", "id": 1, "devices": ["*"]}))
    return raw


async def test_slow_and_stuck_clients_do_not_hurt_healthy_ones(
    start_gateway, publisher, prefix, figures
):
    """Beside a slow reader and a never-reading socket, 10 healthy clients get every reading,
    seq gap-free, never lagging; the slow one is told lagging (delivered + dropped = published)
    or closed 4000; the stuck one's session and socket are gone within the send deadline."""
    gateway = await start_gateway(SLOW_CONFIG)
    hub = gateway.runtime.hub
    healthy = []
    for _ in range(HEALTHY):
        client = await gateway.connected_client()
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
        healthy.append(Reader(client.ws))
    topic = f"{prefix}/load-1/telemetry"

    # Phase 1: healthy clients alone, for a latency baseline.
    await publish_load(publisher, topic, 100)
    for reader in healthy:
        await wait_rows(reader, 100 * METRICS)
    marks = [len(r.frames) for r in healthy]
    alone = [x for r in healthy for x in r.latencies()]

    # Phase 2: a stuck socket and a slow reader join; the load runs until the slow one has been
    # told it lags or was evicted (at most MAX_MESSAGES).
    stuck = await raw_client(gateway, rcvbuf=4096)
    slow = await raw_client(gateway, rcvbuf=131072)
    for raw in (stuck, slow):
        hello = (await raw.recv()).json()
        raw.session = hello["session"]
        assert (await raw.recv()).json()["type"] == "subscribed"
        assert (await raw.recv()).json()["type"] == "snapshot"
    stuck.stop_reading()
    await eventually(lambda: len(hub) == HEALTHY + 2, 10, "all 12 sessions registered")
    (slow_session,) = [s for s in hub.sessions if s.id == slow.session]
    slow_frames: list[dict] = []
    slow_close: list[int | None] = []
    told = asyncio.Event()
    published: list[int] = []

    async def load() -> None:
        for n in range(100, 100 + MAX_MESSAGES):
            if told.is_set():
                return
            await publish_load(publisher, topic, 1, start=n)
            published.append(n)

    async def read_slowly() -> None:
        """Stop reading until the gateway's sends to it stall (its buffers are full) and a
        second more, then read at full speed: a client that reads with long pauses."""
        slow.stop_reading()
        sent = -1

        def stalled() -> bool:
            nonlocal sent
            was, sent = sent, slow_session.stats.bytes_sent
            return was == sent

        await eventually(stalled, 30, "sends to the paused client stall", step=0.5)
        await asyncio.sleep(1.0)  # paused a while longer: the pause is the behaviour under test
        slow.writer.transport.resume_reading()
        accounted = 0
        while not (load_task.done() and accounted >= len(published) * METRICS):
            if told.is_set() and accounted >= len(published) * METRICS:
                # Everything so far is accounted for and the load ends at its next step: wait for
                # that (a frame may never come) rather than on a read.
                await load_task
                continue
            try:
                frame = await slow.recv(within=30)
            except (asyncio.IncompleteReadError, ConnectionError):
                slow_close.append(None)  # reset: the gateway gave up on the close handshake
                break
            if frame.opcode == OP_CLOSE:
                slow_close.append(frame.close_code)
                break
            if frame.opcode == OP_PING:
                slow.send(OP_PONG, frame.payload)
            if frame.opcode == OP_TEXT:
                slow_frames.append(frame.json())
                kind = slow_frames[-1]["type"]
                if kind == "readings":
                    accounted += len(slow_frames[-1]["data"])
                elif kind == "lagging":
                    accounted += slow_frames[-1]["dropped"]
                    told.set()
        told.set()

    load_started = time.monotonic()
    load_task = asyncio.create_task(load(), name="test-load")
    slow_task = asyncio.create_task(read_slowly(), name="test-slow-reader")
    await eventually(
        lambda: stuck.session not in {s.id for s in hub.sessions},
        60,
        "the stuck socket's session is removed",
    )
    gone_after = time.monotonic() - load_started
    await asyncio.wait_for(load_task, 60)
    await asyncio.wait_for(slow_task, 60)
    total = (100 + len(published)) * METRICS
    for reader in healthy:
        await wait_rows(reader, total)
    with_slow = [x for r, m in zip(healthy, marks, strict=True) for x in r.latencies(m)]

    for reader in healthy:
        frames = [f for _, f in reader.frames]
        assert_gap_free(frames)
        assert not reader.of_type("lagging"), "a healthy client was told it lags"
        assert reader.close_code is None
        assert len(reader.rows()) == total
        assert [r[3] for r in reader.rows() if r[1] == "n"] == list(range(100 + len(published)))

    # The stuck socket: the gateway aborted it (reading again finds the end of the stream).
    stuck.writer.transport.resume_reading()
    assert await stuck.at_eof(within=10)
    await stuck.close()
    await slow.close()

    # The slow client: told it lags (every reading delivered or counted as dropped) or evicted.
    assert_gap_free(slow_frames)
    lagging = [f for f in slow_frames if f["type"] == "lagging"]
    delivered = sum(len(f["data"]) for f in slow_frames if f["type"] == "readings")
    dropped = sum(f["dropped"] for f in lagging)
    evictions = dict(gateway.runtime.stats.connections.closed)
    assert lagging or slow_close, "the slow client fell behind without being told"
    if not slow_close:
        assert delivered + dropped == len(published) * METRICS, (delivered, dropped)
    else:
        # Evicted: with code 4000, or reset when the close could not get through in time.
        assert slow_close in ([4000], [None]), slow_close
        assert evictions.get("slow_consumer", 0) + evictions.get("send_timeout", 0) >= 2
    _, body = await gateway.get("/metrics")
    assert 'iotgw_ws_closed_by_gateway_total{reason="send_timeout"}' in body

    figures(
        f"healthy latency p50/p99 alone {pct(alone, 50)}/{pct(alone, 99)} ms, beside slow+stuck"
        f" {pct(with_slow, 50)}/{pct(with_slow, 99)} ms over {len(published)} messages"
        f" ({len(published) * METRICS} readings); stuck socket gone {gone_after:.1f}s after"
        f" phase 2 began; slow client: {len(lagging)} lagging notices, {delivered} delivered +"
        f" {dropped} dropped, close {slow_close or 'none'}; evictions {evictions}"
    )


def pct(values: list[float], q: int) -> str:
    if len(values) < 2:
        return "n/a"
    return f"{statistics.quantiles(values, n=100)[q - 1] * 1000:.1f}"


async def test_connection_churn_returns_to_baseline(start_gateway, figures):
    """300 connect/subscribe/close cycles: once the parked resume streams expire
    (ws.resume_window_s), hub sessions, asyncio tasks and open fds are back to the baseline."""
    window = 0.5
    gateway = await start_gateway({"ws.resume_window_s": window, "ws.connect_burst": 1000})
    hub = gateway.runtime.hub
    base_tasks, base_fds = await settled_counts()
    base_sessions = len(list(hub.sessions))
    for i in range(300):
        client = await gateway.connect()
        await client.request({"type": "subscribe", "devices": [f"churn-{i}-*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
        await client.close()
        gateway.clients.remove(client)
    peak_parked = hub.parked
    await eventually(lambda: hub.parked == 0, window + 10, "parked streams expired")
    await eventually(
        lambda: len(list(hub.sessions)) == base_sessions, 10, "hub holds no session of the churn"
    )
    await eventually(
        lambda: len(asyncio.all_tasks()) <= base_tasks, 10, f"tasks back to {base_tasks}"
    )
    tasks, fds = await settled_counts()
    figures(
        f"300 cycles: tasks {base_tasks}->{tasks}, fds {base_fds}->{fds}, peak parked {peak_parked}"
    )
    assert tasks <= base_tasks
    assert fds <= base_fds + 1
    assert gateway.runtime.admission.open == 0
