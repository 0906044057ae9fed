"""Command worker (S5): device stand-ins on MQTT and WebSocket clients sending commands.

The stand-ins publish a retained meta declaring an `echo` command and `online` status for each
device, then answer every command on `<prefix>/<device>/result`. The clients send commands on
an open-loop schedule (`rate` per second in total, spread evenly) and time each round trip from
send to `command_result`. Pipe protocol as the publisher's: ready, go (start_at, rate, duration),
done, stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import aiomqtt
import orjson

from bench.control import listen
from bench.stats import Histogram

NO_DELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
META = {
    "type": "bench",
    "name": "bench stand-in",
    "commands": {"echo": {"params": {"x": {"type": "number"}}}},
}
ANSWER_WAIT_S = 6.0


@dataclass(frozen=True, slots=True)
class CommanderConfig:
    url: str
    broker_port: int
    prefix: str
    devices: list[str]
    clients: int


@dataclass(slots=True)
class Tally:
    sent: int = 0
    rtt: Histogram = field(default_factory=Histogram)
    statuses: Counter[str] = field(default_factory=Counter)
    pending: dict[int, float] = field(default_factory=dict)
    settled: asyncio.Event = field(default_factory=asyncio.Event)


async def stand_ins(config: CommanderConfig, ready: asyncio.Event) -> None:
    """Answer every command at once, echoing its params."""
    async with aiomqtt.Client("127.0.0.1", config.broker_port, socket_options=[NO_DELAY]) as mqtt:
        await mqtt.subscribe(f"{config.prefix}/+/cmd/#", qos=1)
        for device in config.devices:
            await mqtt.publish(f"{config.prefix}/{device}/meta", orjson.dumps(META), 1, True)
            await mqtt.publish(f"{config.prefix}/{device}/status", b"online", 1, True)
        ready.set()
        async for message in mqtt.messages:
            device = message.topic.value.split("/")[1]
            body = orjson.loads(message.payload)
            answer = {"id": body["id"], "status": "ok", "result": body["params"]}
            await mqtt.publish(f"{config.prefix}/{device}/result", orjson.dumps(answer), 0)


async def command_client(ws: aiohttp.ClientWebSocketResponse, tally: Tally) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            return
        frame = orjson.loads(message.data)
        if frame.get("type") in ("command_result", "error"):
            started = tally.pending.pop(frame.get("id"), None)
            if started is not None:
                tally.rtt.add(time.perf_counter() - started)
                tally.statuses[frame.get("status") or frame.get("code", "?")] += 1
            if not tally.pending:
                tally.settled.set()


async def _schedule(
    sockets: list[aiohttp.ClientWebSocketResponse],
    config: CommanderConfig,
    tally: Tally,
    args: tuple[float, float, float],
) -> dict[str, Any]:
    start_at, rate, duration = args
    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0, t0 = time.process_time(), time.perf_counter()
    total = int(rate * duration)
    for k in range(total):
        await asyncio.sleep(max(0.0, t0 + k / rate - time.perf_counter()))
        request = {
            "type": "command",
            "id": k,
            "device": config.devices[k % len(config.devices)],
            "command": "echo",
            "params": {"x": k},
            "timeout_ms": 5000,
        }
        tally.pending[k] = time.perf_counter()
        tally.sent += 1
        await sockets[k % len(sockets)].send_str(orjson.dumps(request).decode())
    elapsed = time.perf_counter() - t0
    if tally.pending:
        tally.settled.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ANSWER_WAIT_S):
                await tally.settled.wait()
    return {
        "unanswered": len(tally.pending),
        "sent": tally.sent,
        "elapsed_s": round(elapsed, 3),
        "achieved_rate": round(tally.sent / elapsed, 1) if elapsed else 0.0,
        "cpu_s": round(time.process_time() - cpu0, 3),
        "answered": sum(tally.statuses.values()),
        "statuses": dict(tally.statuses),
        "rtt": tally.rtt.to_json(),
    }


async def _main(config: CommanderConfig, conn: Connection) -> None:
    tally = Tally()
    devices_ready = asyncio.Event()
    go: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    async with asyncio.TaskGroup() as tasks, aiohttp.ClientSession() as session:
        mqtt = tasks.create_task(stand_ins(config, devices_ready))
        await asyncio.wait_for(devices_ready.wait(), 30)
        sockets = [await session.ws_connect(config.url) for _ in range(config.clients)]
        readers = [tasks.create_task(command_client(ws, tally)) for ws in sockets]
        unlisten = listen(conn, lambda command, args: go.put_nowait((command, args)))
        conn.send(("ready", None))
        while (item := await go.get())[0] == "go":
            conn.send(("done", await _schedule(sockets, config, tally, item[1])))
        unlisten()
        for task in [mqtt, *readers]:
            task.cancel()


def run(config: CommanderConfig, conn: Connection) -> None:
    """Process entry point."""
    asyncio.run(_main(config, conn))
