"""Subscriber worker: K WebSocket clients in one process, speaking the gateway's protocol.

Every client subscribes to its devices and counts the readings frames it receives. A sample of
clients ("full" clients) also decode every row: per-device sequence gaps via the `n` metric, and
latency from the `sent` metric (arrival - sent, and the gateway's receive time - sent). The rest
only count rows, so the clients are not the bottleneck. Slow clients sleep after each frame so
that they consume `slow_rate` messages/s. Orchestrator pipe protocol:

  worker → ("ready", {...})         every client connected and subscribed (or failed)
  orchestrator → ("poll", None)     → ("counts", {"msgs": healthy messages counted so far})
  orchestrator → ("collect", None)  → ("result", {...}); counters and CPU baseline restart
  orchestrator → ("stop", None)     clients close; the process ends
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson
from aiohttp import AddrInfoType, SocketFactoryType

from bench.control import listen
from bench.stats import Histogram

CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT_S = 120.0
STALL_TICK_S = 0.1


@dataclass(frozen=True, slots=True)
class SubscriberConfig:
    url: str
    clients: int
    first_index: int = 0  # global index of the first client, for device selection and sampling
    full_every: int = 1  # client i decodes every row when i % full_every == 0
    group: str = "healthy"  # healthy | slow
    slow_rate: float = 0.0  # messages/s a slow client consumes
    readings_per_msg: int = 3
    narrow: int = 0  # > 0: subscribe to this many explicit devices (S4), else to "*"
    device_count: int = 0
    compress: int = 0  # server_max_window_bits the clients offer (0: no permessage-deflate)
    receive_buffer: int = 0  # > 0: SO_RCVBUF of every client socket, set before connecting


@dataclass(slots=True)
class Latencies:
    """The latency histograms of one subscriber process, shared by all its full clients.

    One pair per client cost 1.6 MB each and a merge walking 2 x 100,000 bins at every collect:
    with S4's 2,000 clients per process that blocked the event loop for ~20 s, so no client
    answered the gateway's pings and the gateway's heartbeat closed every connection.
    """

    latency: Histogram = field(default_factory=Histogram)
    ingest: Histogram = field(default_factory=Histogram)

    def reset(self) -> None:
        self.latency, self.ingest = Histogram(), Histogram()


class StallWatch:
    """The longest time this process's event loop did not get round to its timers.

    aiohttp clients answer a PING only from inside `receive()`: a stall longer than half the
    gateway's heartbeat closes every connection of the process, so a run records it.
    """

    def __init__(self) -> None:
        self.max_s = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(STALL_TICK_S)
            self.max_s = max(self.max_s, loop.time() - before - STALL_TICK_S)


@dataclass(slots=True)
class ClientState:
    full: bool
    ready: bool = False
    failed: str = ""
    frames: int = 0
    rows: int = 0
    msgs: int = 0
    gaps: int = 0
    reordered: int = 0
    seq_errors: int = 0
    lagging: int = 0  # coalesced frames (v2) or lagging notices (v1)
    events: int = 0  # device events: in readings frames (v2) or device frames (v1)
    closed: int | None = None
    last_seq: int = 0
    last_n: dict[str, int] = field(default_factory=dict)

    def reset(self) -> None:
        self.frames = self.rows = self.msgs = self.gaps = self.reordered = 0
        self.seq_errors = self.lagging = self.events = 0


def devices_for(config: SubscriberConfig, index: int) -> list[str]:
    if config.narrow <= 0:
        return ["*"]
    count = max(config.device_count, 1)
    return sorted({f"d{(index * config.narrow + j) % count:05d}" for j in range(config.narrow)})


class Client:
    settled = 0  # clients connected or failed, across the process

    def __init__(
        self,
        config: SubscriberConfig,
        index: int,
        all_settled: asyncio.Event,
        latencies: Latencies,
    ) -> None:
        self.config = config
        self._all_settled = all_settled
        self.index = index
        self.state = ClientState(full=index % config.full_every == 0)
        self.latencies = latencies

    async def run(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore) -> None:
        state = self.state
        try:
            async with gate:
                ws = await session.ws_connect(
                    self.config.url, max_msg_size=0, compress=self.config.compress
                )
                await self._subscribe(ws)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            state.failed = f"{type(exc).__name__}: {exc}"[:200]
            self._settle()
            return
        state.ready = True
        self._settle()
        # No graceful close on cancellation: closing the ClientSession cuts every connection.
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            await self._on_frame(message.data)
        state.closed = ws.close_code or -1

    def _settle(self) -> None:
        Client.settled += 1
        if Client.settled >= self.config.clients:
            self._all_settled.set()

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        devices = devices_for(self.config, self.index)
        await ws.send_str(orjson.dumps({"type": "subscribe", "id": 1, "devices": devices}).decode())
        async with asyncio.timeout(30):
            while True:
                message = await ws.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    raise ValueError(f"closed before subscribing: {message.type}")
                if orjson.loads(message.data).get("type") == "subscribed":
                    return

    async def _on_frame(self, data: str) -> None:
        frame = orjson.loads(data)
        kind = frame.get("type")
        state = self.state
        # Protocol v1 (a baseline run against an older gateway): events and lagging notices
        # were frames of their own, and snapshots were not sequenced.
        if kind == "lagging":
            state.lagging += 1
            state.frames += 1
            return
        if kind == "device":
            state.events += 1
            state.frames += 1
            return
        if kind == "snapshot" and "seq" in frame:
            state.last_seq = frame["seq"]
            return
        if kind != "readings":
            return
        rows = frame["data"]
        state.frames += 1
        state.rows += len(rows)
        state.events += len(frame.get("events", ()))
        state.lagging += bool(frame.get("coalesced"))
        seq = frame["seq"]
        if state.last_seq and seq != state.last_seq + 1:
            state.seq_errors += 1
        state.last_seq = seq
        if state.full:
            self._check_rows(rows)
        if self.config.slow_rate > 0:
            await asyncio.sleep(len(rows) / self.config.readings_per_msg / self.config.slow_rate)

    def _check_rows(self, rows: list[list[Any]]) -> None:
        state = self.state
        latency, ingest = self.latencies.latency, self.latencies.ingest
        last_n = state.last_n
        now = time.time()
        for device, metric, ts, value in rows:
            if metric == "n":
                last = last_n.get(device)
                last_n[device] = value
                if value == 0:
                    continue  # warm-up message, before the measurement
                state.msgs += 1
                if last is not None and value != last + 1:
                    if value > last:
                        state.gaps += value - last - 1
                    else:
                        state.reordered += 1
            elif metric == "sent":
                latency.add(now - value)
                ingest.add(ts - value)

    def delivered(self) -> int:
        state = self.state
        return state.msgs if state.full else state.rows // self.config.readings_per_msg


def summarize(
    clients: list[Client], latencies: Latencies, stall_s: float, cpu_s: float
) -> dict[str, Any]:
    states = [c.state for c in clients]
    delivered = [c.delivered() for c in clients]
    return {
        "clients": len(clients),
        "connected": sum(s.ready and s.closed is None for s in states),
        "failed": sum(bool(s.failed) for s in states),
        "failures": sorted({s.failed for s in states if s.failed})[:3],
        "closed_codes": sorted({s.closed for s in states if s.closed is not None}),
        "full_clients": sum(s.full for s in states),
        "delivered": sum(delivered),
        "delivered_min_client": min(delivered, default=0),
        "full_delivered": sum(s.msgs for s in states if s.full),
        "frames": sum(s.frames for s in states),
        "rows": sum(s.rows for s in states),
        "gaps": sum(s.gaps for s in states),
        "reordered": sum(s.reordered for s in states),
        "seq_errors": sum(s.seq_errors for s in states),
        "lagging_frames": sum(s.lagging for s in states),
        "events": sum(s.events for s in states),
        "events_min_client": min((s.events for s in states), default=0),
        "latency": latencies.latency.to_json(),
        "ingest_latency": latencies.ingest.to_json(),
        "loop_stall_max_ms": round(stall_s * 1000, 1),
        "cpu_s": round(cpu_s, 3),
    }


async def _main(config: SubscriberConfig, conn: Connection) -> None:
    all_settled = asyncio.Event()
    latencies = Latencies()
    clients = [
        Client(config, config.first_index + i, all_settled, latencies)
        for i in range(config.clients)
    ]
    stopped = asyncio.Event()
    stalls = StallWatch()
    cpu0 = time.process_time()

    def on_command(command: str, args: Any) -> None:
        nonlocal cpu0
        if command == "poll":
            conn.send(
                (
                    "counts",
                    {
                        "msgs": sum(c.delivered() for c in clients),
                        "rows": sum(c.state.rows for c in clients),
                    },
                )
            )
        elif command == "collect":
            result = summarize(clients, latencies, stalls.max_s, time.process_time() - cpu0)
            conn.send(("result", result))
            latencies.reset()
            stalls.max_s = 0.0
            for client in clients:
                client.state.reset()
            cpu0 = time.process_time()
        elif command == "stop":
            stopped.set()

    connector = aiohttp.TCPConnector(limit=0, socket_factory=_socket_factory(config))
    async with aiohttp.ClientSession(connector=connector) as session:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(c.run(session, gate)) for c in clients]
            running.append(tasks.create_task(stalls.run()))
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await all_settled.wait()
            unlisten = listen(conn, on_command)
            cpu0 = time.process_time()
            conn.send(("ready", {"connected": sum(c.state.ready for c in clients)}))
            await stopped.wait()
            unlisten()
            for task in running:
                task.cancel()


def _socket_factory(config: SubscriberConfig) -> SocketFactoryType | None:
    if not config.receive_buffer:
        return None

    def make(addr_info: AddrInfoType) -> socket.socket:
        family, kind, proto, _, _ = addr_info
        sock = socket.socket(family, kind, proto)
        # Before connect(), so the TCP window is negotiated for it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, config.receive_buffer)
        return sock

    return make


def run(config: SubscriberConfig, conn: Connection) -> None:
    """Process entry point."""
    asyncio.run(_main(config, conn))
