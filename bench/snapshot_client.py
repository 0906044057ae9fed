"""Snapshot client worker (S6): one WebSocket client that times a complete snapshot of `*`.

It connects as soon as the target accepts connections, subscribes to every device and checks
each snapshot: complete means every expected device is in it, with its meta and status
`online`. An incomplete one is recorded and the client asks again (unsubscribe, subscribe) after
a pause, until a complete one arrives or time runs out. Then it stays subscribed and counts
readings rows, so the orchestrator can tell when the telemetry step has been taken in.

  orchestrator → ("go", (url, started_at, devices, timeout_s))
  worker → ("snapshot", {...})      the first complete snapshot (or the last try, timed out)
  orchestrator → ("poll", None)     → ("counts", {"rows": readings rows so far})
  orchestrator → ("stop", None)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

from bench.control import listen

RETRY_CONNECT_S = 0.05
RETRY_SNAPSHOT_S = 0.5


@dataclass(slots=True)
class Tries:
    incomplete: list[dict[str, Any]]
    rows: int = 0


def judge(devices: list[dict[str, Any]]) -> dict[str, int]:
    """How many devices a snapshot holds, and how many of them are fully known."""
    with_meta = sum(1 for d in devices if d.get("meta") is not None)
    online = sum(1 for d in devices if d.get("status") == "online")
    return {"devices": len(devices), "with_meta": with_meta, "online": online}


def complete(counts: dict[str, int], expected: int) -> bool:
    return counts["devices"] == counts["with_meta"] == counts["online"] == expected


async def _connect(session: aiohttp.ClientSession, url: str, deadline: float) -> Any:
    while True:
        try:
            return await session.ws_connect(url, max_msg_size=0)
        except (aiohttp.ClientError, OSError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(RETRY_CONNECT_S)  # the target is still starting


async def _snapshot(
    ws: aiohttp.ClientWebSocketResponse, tries: Tries, started_at: float, expected: int
) -> dict[str, Any]:
    """Subscribe until a complete snapshot arrives; returns its figures."""
    request_id = 0
    while True:
        request_id += 1
        sent_at = time.time()
        await ws.send_str(
            orjson.dumps({"type": "subscribe", "id": request_id, "devices": ["*"]}).decode()
        )
        subscription = None
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"closed while waiting for a snapshot: {message.type}")
            arrived = time.time()
            frame = orjson.loads(message.data)
            if frame.get("type") == "subscribed":
                subscription = frame.get("subscription")
            elif frame.get("type") == "snapshot":
                break
        counts = judge(frame["devices"])
        figures = {
            **counts,
            "at_s": round(arrived - started_at, 3),
            "wait_s": round(arrived - sent_at, 3),  # subscribe sent → snapshot received
            "bytes": len(message.data),
            "decode_s": round(time.time() - arrived, 3),
        }
        if complete(counts, expected):
            return figures
        tries.incomplete.append(figures)
        if subscription is not None:  # the naive bridge has no subscriptions to end
            await ws.send_str(
                orjson.dumps({"type": "unsubscribe", "subscription": subscription}).decode()
            )
        await asyncio.sleep(RETRY_SNAPSHOT_S)  # asking again at once would only load the target


async def _count_rows(ws: aiohttp.ClientWebSocketResponse, tries: Tries) -> None:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            return
        frame = orjson.loads(message.data)
        if frame.get("type") == "readings":
            tries.rows += len(frame["data"])


async def _main(conn: Connection) -> None:
    go: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    tries = Tries([])

    def on_command(command: str, args: Any) -> None:
        if command == "poll":
            conn.send(("counts", {"rows": tries.rows}))
        else:
            go.put_nowait((command, args))

    unlisten = listen(conn, on_command)
    conn.send(("ready", None))
    command, args = await go.get()
    if command != "go":
        return
    url, started_at, expected, timeout_s = args
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        result: dict[str, Any] = {"complete": False}
        reader = None
        try:
            async with asyncio.timeout(timeout_s):
                ws = await _connect(session, url, deadline)
                result["connected_at_s"] = round(time.time() - started_at, 3)
                result.update(await _snapshot(ws, tries, started_at, expected), complete=True)
            reader = asyncio.create_task(_count_rows(ws, tries))
        except (TimeoutError, ConnectionError, aiohttp.ClientError, OSError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"[:200]
        result["incomplete"] = tries.incomplete
        conn.send(("snapshot", result))
        while (await go.get())[0] != "stop":
            pass
        unlisten()
        if reader is not None:
            reader.cancel()


def run(config: None, conn: Connection) -> None:
    """Process entry point (`config` unused: everything comes with "go")."""
    asyncio.run(_main(conn))
