"""Slow and stuck clients beside healthy ones, and connection churn.

The healthy clients read everything as it comes; a slow client stops reading for long pauses; a
raw socket completes the upgrade, subscribes and never reads again. The gateway must keep the
healthy ones complete and gap-free, tell the slow one (coalesced frames) or evict it (4000), and
cut the stuck one off so its session and socket are gone.
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
from tests.support.metrics import metric

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


class Load:
    """Messages `first`, `first + 1`, … at publish_load's pace, once started, until `stop` is
    set, at most MAX_MESSAGES of them; `published` counts those sent."""

    def __init__(self, publisher, topic: str, first: int = 0) -> None:
        self.publisher = publisher
        self.topic = topic
        self.first = first
        self.published = 0
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> Load:
        self.task = asyncio.create_task(self._run(), name="test-load")
        return self

    async def _run(self) -> None:
        for n in range(self.first, self.first + MAX_MESSAGES):
            if self.stop.is_set():
                return
            await publish_load(self.publisher, self.topic, 1, start=n)
            self.published += 1

    async def finished(self, within: float = 60) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, within)


def assert_gap_free(frames: list[dict], first: int = 2) -> None:
    """The sequenced frames carry `first`, `first` + 1, … without a gap (the snapshot, seq 1,
    was read before the frames recorded here)."""
    seqs = [f["seq"] for f in frames if "seq" in f]
    assert seqs == list(range(first, first + len(seqs))), "seq has a gap or repeats"


def coalesced(frames: list[dict]) -> list[dict]:
    """The readings frames that say the client fell behind."""
    return [f for f in frames if f["type"] == "readings" and f.get("coalesced")]


async def wait_rows(reader: Reader, count: int, within: float = 30.0) -> None:
    await eventually(lambda: len(reader.rows()) >= count, within, f"{count} rows delivered")


async def healthy_readers(gateway: GatewayUnderTest) -> list[Reader]:
    """HEALTHY clients subscribed to every device, past their snapshots, reading everything."""
    readers = []
    for _ in range(HEALTHY):
        client = await gateway.connected_client()
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
        readers.append(Reader(client.ws))
    return readers


async def raw_subscriber(gateway: GatewayUnderTest, rcvbuf: int) -> RawWebSocket:
    """A raw socket with a small receive buffer, subscribed to every device, past its hello
    (its session id kept), `subscribed` and snapshot frames."""
    host, port = gateway.base_url.removeprefix("http://").split(":")
    raw = await RawWebSocket.connect(host, int(port), rcvbuf=rcvbuf)
    raw.send(OP_TEXT, orjson.dumps({"type": "subscribe", "id": 1, "devices": ["*"]}))
    raw.session = (await raw.recv()).json()["session"]
    assert (await raw.recv()).json()["type"] == "subscribed"
    assert (await raw.recv()).json()["type"] == "snapshot"
    return raw


async def stuck_subscriber(gateway: GatewayUnderTest) -> RawWebSocket:
    """A subscriber that never reads again: the stuck browser tab."""
    stuck = await raw_subscriber(gateway, rcvbuf=4096)
    stuck.stop_reading()
    return stuck


class SlowReader:
    """A raw subscriber that, once started with its load, stops reading until the gateway's
    sends to it stall (its buffers are full) and a second more, then reads at full speed, until
    every reading `load` published is accounted for (delivered, or counted as dropped by a
    coalesced frame) or it is closed. The load stops once the client has been told it lags (or
    was closed)."""

    def __init__(self, raw: RawWebSocket, session, load: Load) -> None:
        self.raw = raw
        self.session = session  # the gateway's Stream for it, whose sends are watched
        self.load = load
        self.frames: list[dict] = []
        self.close: list[int | None] = []  # the close code, None for a reset; empty: not closed
        self.task: asyncio.Task[None] | None = None

    def start(self) -> SlowReader:
        self.task = asyncio.create_task(self._run(), name="test-slow-reader")
        return self

    async def finished(self, within: float = 60) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, within)

    @property
    def expected(self) -> int:
        return self.load.published * METRICS

    async def _run(self) -> None:
        raw, load = self.raw, self.load
        assert load.task is not None
        raw.stop_reading()
        sent = -1

        def stalled() -> bool:
            nonlocal sent
            was, sent = sent, self.session.stats.bytes_sent
            return was == sent

        await eventually(stalled, 30, "sends to the paused client stall", step=0.5)
        await asyncio.sleep(1.0)  # paused a while longer: the pause is the behaviour under test
        raw.writer.transport.resume_reading()
        accounted = 0
        while not (load.task.done() and accounted >= self.expected):
            if load.stop.is_set() and accounted >= self.expected:
                # Everything so far is accounted for and the load ends at its next step: wait for
                # that (a frame may never come) rather than on a read.
                await load.task
                continue
            try:
                frame = await raw.recv(within=30)
            except (asyncio.IncompleteReadError, ConnectionError):
                self.close.append(None)  # reset: the gateway gave up on the close handshake
                break
            if frame.opcode == OP_CLOSE:
                self.close.append(frame.close_code)
                break
            if frame.opcode == OP_PING:
                raw.send(OP_PONG, frame.payload)
            if frame.opcode == OP_TEXT:
                self.frames.append(frame.json())
                kind = self.frames[-1]["type"]
                if kind == "readings":
                    accounted += len(self.frames[-1]["data"])
                    if self.frames[-1].get("coalesced"):
                        accounted += self.frames[-1]["dropped"]
                        load.stop.set()
        load.stop.set()

    def of_type(self, kind: str) -> list[dict]:
        return [f for f in self.frames if f["type"] == kind]


async def slow_reader(gateway: GatewayUnderTest, load: Load) -> SlowReader:
    """A SlowReader subscribed (not started yet), with its session in the gateway's hub."""
    raw = await raw_subscriber(gateway, rcvbuf=131072)
    hub = gateway.runtime.hub
    await eventually(lambda: raw.session in {s.id for s in hub.streams}, 10, "stream registered")
    (session,) = [s for s in hub.streams if s.id == raw.session]
    return SlowReader(raw, session, load)


async def closed_by_gateway(gateway: GatewayUnderTest, reason: str) -> float:
    """How many connections /metrics says the gateway closed for `reason`."""
    status, body = await gateway.get("/metrics")
    assert status == 200
    return metric(body, "iotgw_ws_closed_by_gateway_total", reason=reason)


async def test_healthy_clients_get_everything_beside_slow_and_stuck_ones(
    start_gateway, publisher, prefix, figures
):
    """Beside a slow reader and a never-reading socket, 10 healthy clients get every reading in
    order, seq gap-free, and are never told they lag nor closed."""
    gateway = await start_gateway(SLOW_CONFIG)
    healthy = await healthy_readers(gateway)
    topic = f"{prefix}/load-1/telemetry"

    # Phase 1: healthy clients alone, for a latency baseline.
    await publish_load(publisher, topic, 100)
    for reader in healthy:
        await wait_rows(reader, 100 * METRICS)
    marks = [len(r.frames) for r in healthy]
    alone = [x for r in healthy for x in r.latencies()]

    # Phase 2: a stuck socket and a slow reader join; the load runs until the slow one has been
    # told it lags or was evicted (at most MAX_MESSAGES).
    stuck = await stuck_subscriber(gateway)
    load = Load(publisher, topic, first=100)
    slow = await slow_reader(gateway, load)
    load.start()
    await slow.start().finished()
    await load.finished()
    total = (100 + load.published) * METRICS
    for reader in healthy:
        await wait_rows(reader, total)
    with_slow = [x for r, m in zip(healthy, marks, strict=True) for x in r.latencies(m)]

    for reader in healthy:
        assert_gap_free([f for _, f in reader.frames])
        assert not coalesced([f for _, f in reader.frames]), "a healthy client was told it lags"
        assert reader.close_code is None
        assert len(reader.rows()) == total
        assert [r[3] for r in reader.rows() if r[1] == "n"] == list(range(100 + load.published))
    await stuck.close()
    await slow.raw.close()
    figures(
        f"healthy latency p50/p99 alone {pct(alone, 50)}/{pct(alone, 99)} ms, beside slow+stuck"
        f" {pct(with_slow, 50)}/{pct(with_slow, 99)} ms over {load.published} messages"
        f" ({load.published * METRICS} readings)"
    )


async def test_stuck_client_is_cut_off_by_the_send_deadline(
    start_gateway, publisher, prefix, figures
):
    """A socket that subscribes and never reads again is aborted once a send to it has been
    blocked for ws.send_timeout_s: its session is removed, its connection ends, and /metrics
    counts it as closed for send_timeout."""
    gateway = await start_gateway(SLOW_CONFIG)
    stuck = await stuck_subscriber(gateway)
    load = Load(publisher, f"{prefix}/load-1/telemetry").start()
    started = time.monotonic()
    await eventually(
        lambda: stuck.session not in {s.id for s in gateway.runtime.hub.streams},
        60,
        "the stuck socket's session is removed",
    )
    gone_after = time.monotonic() - started
    load.stop.set()
    await load.finished()

    # The gateway aborted it: reading again finds the end of the stream.
    stuck.writer.transport.resume_reading()
    assert await stuck.at_eof(within=10)
    await stuck.close()
    assert await closed_by_gateway(gateway, "send_timeout") == 1
    figures(
        f"stuck socket gone {gone_after:.1f}s after the load began"
        f" (ws.send_timeout_s {SLOW_CONFIG['ws.send_timeout_s']})"
    )


async def test_slow_client_is_told_it_lags_or_is_evicted(start_gateway, publisher, prefix, figures):
    """A client that pauses reading until the gateway's sends to it stall is told it lags, its
    seq gap-free and every reading delivered or counted as dropped, or it is evicted (4000, or a
    reset when the close cannot get through) and /metrics counts that."""
    gateway = await start_gateway(SLOW_CONFIG)
    load = Load(publisher, f"{prefix}/load-1/telemetry")
    slow = await slow_reader(gateway, load)
    load.start()
    await slow.start().finished()
    await load.finished()
    await slow.raw.close()

    assert_gap_free(slow.frames)
    lagging = coalesced(slow.frames)
    delivered = sum(len(f["data"]) for f in slow.of_type("readings"))
    dropped = sum(f["dropped"] for f in lagging)
    assert lagging or slow.close, "the slow client fell behind without being told"
    if not slow.close:
        assert delivered + dropped == slow.expected, (delivered, dropped)
    else:
        assert slow.close in ([4000], [None]), slow.close
        evicted = [await closed_by_gateway(gateway, r) for r in ("slow_consumer", "send_timeout")]
        assert sum(evicted) >= 1, evicted
    figures(
        f"slow client over {load.published} messages: {len(lagging)} coalesced frames,"
        f" {delivered} delivered + {dropped} dropped, close {slow.close or 'none'}"
    )


def pct(values: list[float], q: int) -> str:
    if len(values) < 2:
        return "n/a"
    return f"{statistics.quantiles(values, n=100)[q - 1] * 1000:.1f}"


async def test_connection_churn_returns_to_baseline(start_gateway, figures):
    """300 connect/subscribe/close cycles: once the parked resume streams expire
    (ws.resume_window_s), hub streams, asyncio tasks and open fds are back to the baseline."""
    window = 0.5
    gateway = await start_gateway({"ws.resume_window_s": window, "ws.connect_burst": 1000})
    hub = gateway.runtime.hub
    base_tasks, base_fds = await settled_counts()
    base_sessions = len(list(hub.streams))
    for i in range(300):
        client = await gateway.connect()
        await client.request({"type": "subscribe", "devices": [f"churn-{i}-*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
        await client.close()
        gateway.clients.remove(client)
    peak_parked = hub.parked
    await eventually(lambda: hub.parked == 0, window + 10, "parked streams expired")
    await eventually(
        lambda: len(list(hub.streams)) == base_sessions, 10, "hub holds no stream of the churn"
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
