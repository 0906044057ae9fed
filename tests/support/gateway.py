"""Run the real gateway app on a free loopback port, and talk to it like a client would.

`running_gateway(config)` serves `gateway.app.create_app(config)` with aiohttp's AppRunner on a
socket bound to port 0 (no guessing at free ports), and stops it on exit. `WsClient` wraps an
aiohttp WebSocket: every read has a deadline, `expect` waits for a frame matching a predicate and
keeps the frames it skipped, and `closed` waits for the close code. Nothing here sleeps.

Every frame a WsClient receives is parsed strictly and validated against docs/schemas/
(tests.support.schemas): a frame the protocol's schemas do not describe fails the test, so the
published schemas cannot drift from what the gateway sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType, web

from gateway.app import RUNTIME, create_app
from gateway.config import Config
from gateway.runtime import Runtime
from tests.support.schemas import SchemaViolation, check_server_frame

#: Upper bound for anything a test waits on; generous so that a slow CI machine does not flake.
WAIT_S = 10.0

Frame = dict[str, Any]


@dataclass
class GatewayUnderTest:
    app: web.Application
    runner: web.AppRunner
    base_url: str
    http: aiohttp.ClientSession
    clients: list[WsClient] = field(default_factory=list)
    stopped: bool = False

    @property
    def runtime(self) -> Runtime:
        return self.app[RUNTIME]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://") + "/ws"

    async def connect(self, *, wait_hello: bool = True, **kwargs: Any) -> WsClient:
        """Open a WebSocket to /ws; by default read the hello frame first (kept as `.hello`)."""
        ws = await self.http.ws_connect(self.ws_url, **kwargs)
        client = WsClient(ws)
        self.clients.append(client)
        if wait_hello:
            client.hello = await client.expect(lambda f: f["type"] == "hello")
        return client

    async def connected_client(self, **kwargs: Any) -> WsClient:
        """A client that has seen the broker link up (hello says so, or a later gateway event)."""
        client = await self.connect(**kwargs)
        if client.hello["broker"] != "connected":
            await client.expect(lambda f: f["type"] == "gateway" and f["broker"] == "connected")
        return client

    async def synced(self, within: float = WAIT_S) -> None:
        """Wait until the link's retained state has arrived (the marker is back): /readyz is 200
        from then on while the link stays up. The `connected` frame comes just before it."""
        async with asyncio.timeout(within):
            await self.runtime.sync.complete.wait()

    async def stop(self) -> None:
        """Shut the app down the way `iotgw run` does on SIGTERM (on_shutdown, then cleanup)."""
        if not self.stopped:
            self.stopped = True
            await self.runner.cleanup()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.get(self.base_url + path, **kwargs) as response:
            return response.status, await _body(response)

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.http.post(self.base_url + path, **kwargs) as response:
            return response.status, await _body(response)


async def _body(response: aiohttp.ClientResponse) -> Any:
    raw = await response.read()
    if response.content_type == "application/json":
        return orjson.loads(raw)
    return raw.decode()


class WsClient:
    """One WebSocket connection with deadline-bound reads. `seen` holds every frame received."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: Frame = {}
        self.seen: list[Frame] = []
        self._unread: list[Frame] = []
        self._events: list[Frame] = []  # every device event received, in order
        self._event_at = 0  # where event() looks from: its last match
        self._next_id = 0
        self.violations: list[str] = []  # schema failures, re-raised when the gateway stops

    def _accept(self, text: str) -> Frame:
        """Validate one received text frame against the schemas and keep it in `seen`."""
        try:
            frame: Frame = check_server_frame(text)
        except SchemaViolation as exc:
            self.violations.append(str(exc))
            raise
        self.seen.append(frame)
        if frame["type"] == "readings":
            self._events.extend(frame.get("events", ()))
        return frame

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    async def send(self, frame: Frame) -> None:
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def request(self, frame: Frame, reply: str | None = None) -> Frame:
        """Send `frame` with a fresh id (unless it has one); return the first frame echoing it."""
        frame = {"id": self.next_id(), **frame}
        await self.send(frame)
        return await self.expect(
            lambda f: f.get("id") == frame["id"] and (reply is None or f["type"] == reply)
        )

    async def recv(self, within: float | None = WAIT_S) -> Frame:
        """The next frame (skipped ones first), or TimeoutError / AssertionError on close; None:
        no deadline of its own (a caller's bounds it)."""
        if self._unread:
            return self._unread.pop(0)
        async with asyncio.timeout(within):
            return await self._receive()

    async def _receive(self) -> Frame:
        message = await self.ws.receive()
        if message.type != WSMsgType.TEXT:
            raise AssertionError(f"expected a text frame, got {message.type!r} {message.data!r}")
        return self._accept(message.data)

    async def event(self, predicate: Callable[[Frame], bool], within: float = WAIT_S) -> Frame:
        """The first device event ({"event", "device"} from a readings frame's `events`) matching
        `predicate`, from the previous call's match on: events carry a device's whole state, and
        one event may answer several questions ("has meta", then "is online"). Frames read
        meanwhile stay readable."""
        async with asyncio.timeout(within):
            while True:
                for i in range(self._event_at, len(self._events)):
                    if predicate(self._events[i]):
                        self._event_at = i
                        return self._events[i]
                self._unread.append(await self._receive())

    def seen_events(self) -> list[Frame]:
        """Every device event received so far, in order."""
        return list(self._events)

    async def expect(self, predicate: Callable[[Frame], bool], within: float = WAIT_S) -> Frame:
        """The first frame matching `predicate`; frames skipped on the way stay readable."""
        skipped: list[Frame] = []
        try:
            async with asyncio.timeout(within):
                while True:
                    frame = await self.recv(within=None)  # `within` bounds the whole wait
                    if predicate(frame):
                        return frame
                    skipped.append(frame)
        finally:
            self._unread = skipped + self._unread

    async def readings(
        self, count: int, within: float = WAIT_S, where: Callable[[list[Any]], bool] | None = None
    ) -> list[list[Any]]:
        """Collect readings rows (from `readings` frames) until `count` rows matching `where`."""
        rows: list[list[Any]] = []
        async with asyncio.timeout(within):
            while len(rows) < count:
                frame = await self.expect(lambda f: f["type"] == "readings", within=within)
                rows.extend(r for r in frame["data"] if where is None or where(r))
        return rows

    async def closed(self, within: float = WAIT_S) -> int | None:
        """Wait for the server to close the connection; return the close code."""
        async with asyncio.timeout(within):
            while True:
                message = await self.ws.receive()
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                    break
                if message.type == WSMsgType.ERROR:
                    break
                if message.type == WSMsgType.TEXT:
                    self._accept(message.data)
        return self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


async def wait_for_device(
    gateway: GatewayUnderTest, device_id: str, predicate: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """Wait until the gateway's view of `device_id` satisfies `predicate` (by its frames)."""
    watcher = await gateway.connect()
    await watcher.request({"type": "subscribe", "devices": [device_id]}, "subscribed")
    snapshot = await watcher.expect(lambda f: f["type"] == "snapshot")
    for entry in snapshot["devices"]:
        if predicate(entry):
            await watcher.close()
            return entry
    event = await watcher.event(lambda e: predicate(e["device"]))
    await watcher.close()
    return event["device"]


def announced(entry: dict[str, Any]) -> bool:
    """The device's retained meta and `online` status have both been applied."""
    return entry["status"] == "online" and entry["meta"] is not None


def device_status(device_id: str, status: str) -> Callable[[Frame], bool]:
    """For WsClient.event: a device event saying that `device_id` is now `status`."""

    def match(event: Frame) -> bool:
        return event["device"]["id"] == device_id and event["device"]["status"] == status

    return match


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def running_gateway(config: Config) -> AsyncIterator[GatewayUnderTest]:
    """Serve the gateway on a free port until the block ends; clients and server are stopped."""
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    async with aiohttp.ClientSession() as http:
        gateway = GatewayUnderTest(app, runner, "", http)
        try:
            sock = bound_socket()
            await web.SockSite(runner, sock).start()
            gateway.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            yield gateway
        finally:
            for client in gateway.clients:
                if not client.ws.closed:
                    await client.close()
            await gateway.stop()
        # Also caught here in case a test swallowed the exception that recv raised.
        found = [v for client in gateway.clients for v in client.violations]
        if found:
            raise SchemaViolation(f"{len(found)} frame(s) broke the schemas; first: {found[0]}")
