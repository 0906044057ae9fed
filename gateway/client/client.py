"""Client: one WebSocket connection to an iotgw gateway, kept open, with every subscription
resumed or resynced across reconnects (docs/clients.md; the protocol is docs/protocol.md).

One task owns the connection (`iotgw.client`): it connects, authenticates, re-sends every
subscription with the stream's resume handle, reads frames and routes them, and on a close
waits as the backoff policy says (gateway/client/policy.py) before the next attempt. Requests
(history, commands) are answered through futures keyed by request id; ids are never reused, so a
reply can only ever reach the request it answers. The reader never awaits a consumer: events go
into each subscription's bounded buffer (gateway/client/subscription.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp
import orjson

from gateway.client.errors import (
    ClientClosed,
    ClientError,
    CommandError,
    CommandNotSent,
    CommandRefused,
    CommandTimeout,
    CommandUnconfirmed,
    CommandUnknown,
    ConnectError,
    DeviceError,
    ProtocolMismatch,
    RequestRefused,
    Unauthorized,
    refusal,
)
from gateway.client.frames import (
    PROTOCOL,
    Authenticated,
    CommandAccepted,
    CommandResult,
    Device,
    ErrorFrame,
    FrameError,
    GatewayState,
    Hello,
    History,
    Readings,
    ServerFrame,
    SnapshotFrame,
    Subscribed,
    device,
    parse_frame,
)
from gateway.client.policy import Backoff, CloseKind, Pacer, classify_close
from gateway.client.subscription import Event, Lagging, Resync, Snapshot, Subscription

log = logging.getLogger("iotgw.client")

#: Before command_accepted the gateway waits for the broker's PUBACK: allow this much beyond the
#: command's timeout before calling the outcome unknown; after it, this much beyond the
#: effective timeout for the command_result the gateway promised.
ACCEPT_GRACE_S = 10.0
RESULT_GRACE_S = 5.0

#: The phases `Client.phase` (and on_state) goes through.
PHASES = ("idle", "connecting", "open", "reconnecting", "closed")


@dataclass(slots=True)
class ClientStats:
    """What the client saw, for logs and tests: connections made, streams resumed and resynced,
    frames seen twice (dropped) and seq gaps (each answered by a resync)."""

    attempts: int = 0
    connects: int = 0
    resumed: int = 0
    resynced: int = 0
    duplicates: int = 0
    gaps: int = 0


@dataclass(slots=True)
class _Stream:
    """The gateway stream the subscriptions' state comes from: the hello (epoch, session) of the
    connection it continues on, and that connection's link for its last seq."""

    epoch: str
    session: str
    link: _Link

    def resume(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "session": self.session, "seq": self.link.seq}


class _LinkLost(Exception):
    """The connection a request was sent on ended before its reply."""


class _Retry(Exception):
    """A connection attempt failed in a way worth retrying (`error` says how); `retry_after_s`:
    the gateway's Retry-After, when it sent one."""

    def __init__(self, error: ConnectError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


class _Command:
    __slots__ = ("accepted", "future", "timer")

    def __init__(self, future: asyncio.Future[CommandResult]) -> None:
        self.future = future
        self.accepted: CommandAccepted | None = None
        self.timer: asyncio.Timeout | None = None


class _Link:
    """One open connection: its hello, its requests awaiting replies, its place in the stream."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, hello: Hello) -> None:
        self.ws = ws
        self.hello = hello
        self.alive = True
        self.seq = 0  # the last sequenced frame applied on this connection
        self.stream_decided = False  # the first subscribed reply said resumed or new
        self.handlers: dict[int, Callable[[ServerFrame], None]] = {}
        self.commands: dict[int, _Command] = {}
        self.subscribed = asyncio.Event()  # the resubscription is done: new subscribes may go
        self.end_kind: CloseKind | None = None  # set when this side ended it for a reason
        limits = hello.limits
        self.history_pacer = Pacer(limits.history_rate, limits.history_burst)
        self.subscribe_pacer = Pacer(limits.subscribe_rate, limits.subscribe_burst)
        self.queries = asyncio.Semaphore(max(1, limits.history_in_flight))

    async def send(self, frame: dict[str, Any]) -> None:
        if not self.alive:
            raise _LinkLost
        try:
            await self.ws.send_str(orjson.dumps(frame).decode())
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            raise _LinkLost from None

    async def request(self, frame: dict[str, Any], request_id: int) -> ServerFrame:
        """Send `frame` (its id set) and wait for the one frame answering it."""
        future: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()

        def answer(reply: ServerFrame) -> None:
            if not future.done():
                future.set_result(reply)

        self.handlers[request_id] = answer
        try:
            await self.send({**frame, "id": request_id})
            return await future
        finally:
            self.handlers.pop(request_id, None)

    def lost(self) -> None:
        """The connection ended: requests waiting on it learn so, commands sent on it are
        unknown (the gateway may have published them), exactly once each."""
        self.alive = False
        handlers, self.handlers = self.handlers, {}
        for handler in handlers.values():
            handler(_LOST)
        for command in self.commands.values():
            if not command.future.done():
                command.future.set_exception(
                    CommandUnknown(
                        "the connection to the gateway was lost before the result; "
                        "the device may still act on it",
                        command.accepted.command_id if command.accepted else None,
                    )
                )
        self.commands = {}


#: What a request waiting on a link that ended gets instead of its reply.
_LOST = ErrorFrame(None, "_lost", "connection lost")


def normalize_url(url: str) -> str:
    """ws(s)://host:port/ws from what a user may type: http(s) becomes ws(s), no path is /ws."""
    parts = urlsplit(url if "://" in url else f"ws://{url}")
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ConnectError(f"{url}: not a ws://, wss://, http:// or https:// URL")
    if not parts.hostname:
        raise ConnectError(f"{url}: no host")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


class Client:
    """`async with Client(url, token=...) as gw:` — see docs/clients.md.

    Entering connects (raising ConnectError, Unauthorized or ProtocolMismatch when the first
    connection cannot be made); from then on the client reconnects by itself until closed, or
    until the gateway ends it for good (a refused token, 4501, 1009: ClientClosed everywhere).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        session: aiohttp.ClientSession | None = None,
        backoff: Backoff | None = None,
        heartbeat_s: float = 20.0,
        connect_timeout_s: float = 10.0,
        max_buffered: int = 10_000,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None:
        self.url = normalize_url(url)
        self.token = token
        self.backoff = backoff or Backoff()
        self.heartbeat_s = heartbeat_s
        self.connect_timeout_s = connect_timeout_s
        self.max_buffered = max_buffered
        self.stats = ClientStats()
        self.phase = "idle"
        #: While reconnecting: when (time.monotonic()) the next attempt is due.
        self.retry_at: float | None = None
        self.broker: str | None = None  # the gateway's broker link, from hello and gateway frames
        self._on_state = on_state
        self._http = session
        self._own_http = session is None
        self._ids = itertools.count(1)
        self._subs: list[Subscription] = []
        self._link: _Link | None = None
        self._ready = asyncio.Event()
        self._stream: _Stream | None = None
        self._error: ClientError | None = None
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # subscribes sent after the connection opened
        self._first: asyncio.Future[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Make the first connection (see the class docstring), then keep it in the background."""
        if self._task is not None:
            raise RuntimeError("a Client connects once; make a new one")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        self._first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="iotgw.client")
        self._task.add_done_callback(self._ended)
        try:
            await asyncio.shield(self._first)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close the connection: iterations end, requests still waiting raise ClientClosed, and
        commands already sent raise CommandUnknown."""
        self._closing = True
        task, self._task = self._task, None
        for owned in [*self._tasks, *([task] if task is not None else [])]:
            if not owned.done():
                owned.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await owned
        for sub in self._subs:
            sub.end()
        self._subs = []
        if self._error is None:
            self._error = ClientClosed("the client was closed")
        self._ready.set()  # waiters wake and find the error
        self._set_phase("closed", "")
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def hello(self) -> Hello | None:
        """The current connection's hello (None while disconnected)."""
        return self._link.hello if self._link is not None else None

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a bug in the client: say so everywhere, loudly
            log.error("iotgw client task failed", exc_info=exc)
            self._fail(ClientClosed(f"the client failed: {exc!r}"))

    def _fail(self, error: ClientError) -> None:
        self._error = error
        if self._first is not None and not self._first.done():
            self._first.set_exception(error)
        for sub in self._subs:
            sub.fail(error)
        self._ready.set()
        self._set_phase("closed", str(error))

    def _set_phase(self, phase: str, info: str) -> None:
        self.phase = phase
        if self._on_state is not None:
            self._on_state(phase, info)

    # --- the connection task ---------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        delay: float | None = None
        connected_once = False
        started = time.monotonic()
        while not self._closing:
            if delay is not None:
                await asyncio.sleep(delay)
            self._set_phase("connecting", "")
            self.stats.attempts += 1
            try:
                link = await self._open()
            except (Unauthorized, ProtocolMismatch) as exc:
                self._fail(exc)
                return
            except _Retry as retry:
                first_try_over = time.monotonic() - started > self.connect_timeout_s
                if not connected_once and (retry.retry_after_s is None or first_try_over):
                    self._fail(retry.error)
                    return
                delay = max(self.backoff.delay(attempt), retry.retry_after_s or 0.0)
                attempt += 1
                self.retry_at = time.monotonic() + delay
                self._set_phase("reconnecting", f"{retry.error}; retrying in {delay:.1f} s")
                continue
            connected_once = True
            opened = time.monotonic()
            code = await self._serve(link)
            if self._closing:
                return
            kind = link.end_kind or classify_close(code)
            if kind is CloseKind.TERMINAL:
                self._fail(ClientClosed(_terminal_message(code, link), code))
                return
            if time.monotonic() - opened >= self.backoff.stable_s:
                attempt = 0
            attempt = max(attempt, self.backoff.first_attempt(kind))
            delay = self.backoff.delay(attempt)
            attempt += 1
            self.retry_at = time.monotonic() + delay
            why = {
                CloseKind.RESTART: "the gateway restarted",
                CloseKind.BACK_OFF: f"the gateway asked to back off ({code})",
            }.get(kind, "the connection was lost")
            self._set_phase("reconnecting", f"{why}; retrying in {delay:.1f} s")

    async def _open(self) -> _Link:
        """Connect, read hello, authenticate: an open link, or _Retry / a terminal error."""
        assert self._http is not None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                ws = await self._http.ws_connect(
                    self.url, heartbeat=self.heartbeat_s, max_msg_size=0, autoping=True
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 401:
                raise Unauthorized(f"{self.url}: the gateway refused the token") from None
            retry_after = _retry_after(exc.headers)
            if exc.status in (429, 503):
                raise _Retry(
                    ConnectError(f"{self.url}: the gateway is busy (HTTP {exc.status})"),
                    retry_after if retry_after is not None else 1.0,
                ) from None
            raise _Retry(
                ConnectError(
                    f"{self.url}: not an iotgw WebSocket endpoint (HTTP {exc.status} {exc.message})"
                )
            ) from None
        except TimeoutError:
            raise _Retry(ConnectError(f"{self.url}: no answer in time")) from None
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror or str(exc.os_error)
            raise _Retry(ConnectError(f"cannot connect to {self.url}: {reason}")) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _Retry(ConnectError(f"cannot connect to {self.url}: {exc}")) from None
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                return await self._greet(ws)
        except TimeoutError:
            await ws.close()
            raise _Retry(ConnectError(f"{self.url}: no hello from the gateway in time")) from None
        except BaseException:
            await ws.close()
            raise

    async def _greet(self, ws: aiohttp.ClientWebSocketResponse) -> _Link:
        message = await ws.receive()
        if message.type != aiohttp.WSMsgType.TEXT:
            raise _Retry(ConnectError(f"{self.url}: closed before its hello ({ws.close_code})"))
        try:
            hello = parse_frame(message.data)
        except FrameError as exc:
            raise _Retry(ConnectError(f"{self.url}: not an iotgw gateway ({exc})")) from None
        if not isinstance(hello, Hello):
            raise _Retry(ConnectError(f"{self.url}: not an iotgw gateway (no hello)"))
        if hello.protocol != PROTOCOL:
            raise ProtocolMismatch(
                f"the gateway speaks protocol {hello.protocol}; this client speaks {PROTOCOL}"
            )
        if hello.auth_required:
            if not self.token:
                raise Unauthorized(f"{self.url}: the gateway requires a token (--token)")
            await ws.send_str(orjson.dumps({"type": "auth", "id": 0, "token": self.token}).decode())
            reply = await ws.receive()
            frame = parse_frame(reply.data) if reply.type == aiohttp.WSMsgType.TEXT else None
            if not isinstance(frame, Authenticated):
                if frame is None and ws.close_code not in (None, 4500):
                    raise _Retry(ConnectError(f"{self.url}: closed during auth ({ws.close_code})"))
                raise Unauthorized(f"{self.url}: the gateway refused the token")
        return _Link(ws, hello)

    async def _serve(self, link: _Link) -> int | None:
        """Read the connection until it ends; return its close code."""
        self._link = link
        self.broker = link.hello.broker
        self.stats.connects += 1
        self._set_phase("open", "")
        if self._first is not None and not self._first.done():
            self._first.set_result(None)
        self._ready.set()
        resubscribe = asyncio.create_task(self._resubscribe(link), name="iotgw.client.resubscribe")
        try:
            async for message in link.ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._on_text(link, message.data)
                    if not link.alive:
                        break
        finally:
            self._ready.clear()
            self._link = None
            link.lost()
            resubscribe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resubscribe
            await link.ws.close()
        return link.ws.close_code

    def _on_text(self, link: _Link, text: str) -> None:
        try:
            frame = parse_frame(text)
        except FrameError as exc:
            log.warning("iotgw client: ignoring a frame: %s", exc)
            return
        request_id = getattr(frame, "id", None)
        if isinstance(request_id, int) and not isinstance(frame, Hello):
            command = link.commands.get(request_id)
            if command is not None:
                self._on_command_frame(command, frame)
                return
            handler = link.handlers.get(request_id)
            if handler is not None:
                handler(frame)
                return
        if isinstance(frame, Readings):
            if self._in_order(link, frame.seq):
                self._route_readings(frame)
        elif isinstance(frame, SnapshotFrame):
            if self._in_order(link, frame.seq):
                self._route_snapshot(frame)
        elif isinstance(frame, GatewayState):
            self.broker = frame.broker

    def _in_order(self, link: _Link, seq: int) -> bool:
        """Check a sequenced frame against the stream; a gap (which cannot happen on one
        connection) ends the connection and forgets the stream, so that every subscription is
        resynced from a fresh snapshot: never a silent hole."""
        if seq <= link.seq:
            self.stats.duplicates += 1
            return False
        if seq != link.seq + 1:
            self.stats.gaps += 1
            log.warning("iotgw client: seq %d after %d: resyncing", seq, link.seq)
            self._stream = None
            for sub in self._subs:
                if sub.awaiting is None:
                    sub.awaiting = "gap in the stream"
            link.alive = False
            link.end_kind = CloseKind.LOST
            return False
        link.seq = seq
        return True

    def _route_readings(self, frame: Readings) -> None:
        for sub in self._subs:
            if sub.awaiting is not None or sub.closed:
                continue
            match = sub.filter
            events: list[Event] = []
            if frame.coalesced:
                events.append(Lagging(frame.dropped, "gateway"))
            events.extend(e for e in frame.events if match.device(e.device.id))
            events.extend(
                r for r in frame.data if match.device(r.device) and match.metric(r.metric)
            )
            if events:
                sub.put_many(events)

    def _route_snapshot(self, frame: SnapshotFrame) -> None:
        for sub in self._subs:
            if sub.id != frame.subscription or sub.closed:
                continue
            snapshot = Snapshot(frame.devices)
            if sub.awaiting == "":
                sub.put(snapshot)
            else:
                self.stats.resynced += 1
                sub.put(Resync(sub.awaiting or "a new snapshot", snapshot))
            sub.awaiting = None

    # --- subscriptions ---------------------------------------------------------------------------

    def subscribe(
        self,
        devices: Iterable[str] = ("*",),
        metrics: Iterable[str] | None = None,
        *,
        max_buffered: int | None = None,
    ) -> Subscription:
        """A subscription to devices matching `devices` (globs) and, if given, only the metrics
        matching `metrics`: an async iterator of Snapshot (first), Reading, DeviceEvent, Lagging
        and Resync events. It lasts across reconnects; close it (or leave its `async with`) to
        unsubscribe. A subscribe the gateway refuses ends its iteration with RequestRefused."""
        if self._error is not None:
            raise self._error
        sub = Subscription(devices, metrics, max_buffered or self.max_buffered, self._unsubscribe)
        self._subs.append(sub)
        link = self._link
        if link is not None:
            task = asyncio.create_task(self._subscribe_later(link, sub), name="iotgw.client.sub")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return sub

    async def _subscribe_later(self, link: _Link, sub: Subscription) -> None:
        with contextlib.suppress(_LinkLost):  # the next connection's resubscription sends it
            await link.subscribed.wait()
            if sub.id is None and not sub.closed and link.alive:
                await self._send_subscribe(link, sub, None)

    async def _resubscribe(self, link: _Link) -> None:
        """Send every subscription on a new connection: with the stream's resume handle when
        there is a stream to continue, in order (the first decides: resumed, or a new stream)."""
        with contextlib.suppress(_LinkLost):
            stream = self._stream
            resume = stream.resume() if stream is not None else None
            # Those the stream holds first: the first subscribe decides whether it continues.
            for sub in sorted(self._subs, key=lambda s: s.id is None):
                if not sub.closed:
                    await self._send_subscribe(link, sub, resume if sub.id is not None else None)
        link.subscribed.set()

    async def _send_subscribe(
        self, link: _Link, sub: Subscription, resume: dict[str, Any] | None
    ) -> None:
        frame: dict[str, Any] = {"type": "subscribe", "devices": list(sub.filter.devices)}
        if sub.filter.metrics is not None:
            frame["metrics"] = list(sub.filter.metrics)
        if resume is not None:
            frame["resume"] = resume
        await link.subscribe_pacer.take()
        request_id = next(self._ids)
        done: asyncio.Future[ServerFrame] = asyncio.get_running_loop().create_future()

        def answer(reply: ServerFrame) -> None:
            # Handled here, in the reader, before any frame after it: the stream's seq must be
            # in place for the replayed frames that follow a resumed subscribe.
            self._on_subscribed(link, sub, resume, reply)
            if not done.done():
                done.set_result(reply)

        link.handlers[request_id] = answer
        try:
            await link.send({**frame, "id": request_id})
            reply = await done
        finally:
            link.handlers.pop(request_id, None)
        if reply is _LOST:
            raise _LinkLost

    def _on_subscribed(
        self, link: _Link, sub: Subscription, resume: dict[str, Any] | None, reply: ServerFrame
    ) -> None:
        if reply is _LOST:
            return
        if isinstance(reply, ErrorFrame):
            self._subs = [s for s in self._subs if s is not sub]
            sub.fail(refusal(reply.code, reply.message))
            return
        if not isinstance(reply, Subscribed):
            return
        recovered = resume is not None and reply.recovered is True
        if not link.stream_decided:
            link.stream_decided = True
            hello = link.hello
            old, self._stream = self._stream, _Stream(hello.epoch, hello.session, link)
            if recovered:
                link.seq = int(resume["seq"]) if resume is not None else 0
                self.stats.resumed += 1
            else:
                link.seq = 0
                reason = (
                    "the gateway restarted"
                    if old is not None and old.epoch != hello.epoch
                    else "the stream could not be resumed"
                )
                for other in self._subs:
                    if other.awaiting is None:
                        other.awaiting = reason
        sub.id = reply.subscription
        if not recovered and sub.awaiting is None:
            sub.awaiting = "the stream could not be resumed"

    async def _unsubscribe(self, sub: Subscription) -> None:
        self._subs = [s for s in self._subs if s is not sub]
        link = self._link
        shared = any(s.id == sub.id for s in self._subs)
        if link is None or sub.id is None or shared:
            return
        with contextlib.suppress(_LinkLost):
            await link.request({"type": "unsubscribe", "subscription": sub.id}, next(self._ids))

    # --- requests --------------------------------------------------------------------------------

    async def _ready_link(self) -> _Link:
        while True:
            if self._error is not None:
                raise self._error
            link = self._link
            if link is not None and link.alive:
                return link
            await self._ready.wait()
            if self._link is None and self._error is None:
                await asyncio.sleep(0)  # the flag is cleared with the link; try again

    async def history(
        self,
        device: str,
        metric: str,
        from_: float | None = None,
        to: float | None = None,
        max_points: int | None = None,
        *,
        since: float | None = None,
        limit: int | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for the whole exchange, reconnects included
    ) -> History:
        """A metric's history. With `from_` (and optionally `to`, `max_points`): the ranged form
        from the gateway's store, raw points or buckets. Without: the recent window (`since`,
        `limit`). Paced below the gateway's history limits; asked again on the next connection
        if the connection drops first. Raises NotFound, RequestRefused or TimeoutError."""
        frame: dict[str, Any] = {"type": "history", "device": device, "metric": metric}
        ranged = from_ is not None
        if ranged:
            frame["from"] = from_
            if to is not None:
                frame["to"] = to
            if max_points is not None:
                frame["max_points"] = max_points
        else:
            if since is not None:
                frame["since"] = since
            if limit is not None:
                frame["limit"] = limit
        async with asyncio.timeout(timeout):
            while True:
                link = await self._ready_link()
                try:
                    reply = await self._history_on(link, frame, ranged)
                except _LinkLost:
                    continue
                if isinstance(reply, History):
                    return reply
                if isinstance(reply, ErrorFrame):
                    raise refusal(reply.code, reply.message)
                raise RequestRefused("bad_reply", f"unexpected reply {reply!r:.100}")

    async def _history_on(self, link: _Link, frame: dict[str, Any], ranged: bool) -> ServerFrame:
        await link.history_pacer.take()
        if ranged:
            async with link.queries:
                reply = await link.request(frame, next(self._ids))
        else:
            reply = await link.request(frame, next(self._ids))
        if reply is _LOST:
            raise _LinkLost
        return reply

    async def command(
        self,
        device: str,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - sent to the gateway as timeout_ms
    ) -> CommandResult:
        """Send a command; return its `ok` result, or raise the CommandError of its outcome:
        CommandRefused (nothing was published), DeviceError, CommandTimeout, CommandUnknown
        (also when the connection drops after sending it), CommandUnconfirmed, CommandNotSent
        (no connection within `timeout`: nothing was sent). Exactly one of these per call."""
        try:
            async with asyncio.timeout(timeout):
                link = await self._ready_link()
        except TimeoutError:
            raise CommandNotSent(f"not connected to the gateway within {timeout:g} s") from None
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        command = _Command(loop.create_future())
        link.commands[request_id] = command
        frame = {
            "type": "command",
            "id": request_id,
            "device": device,
            "command": name,
            "params": params or {},
            "timeout_ms": max(1, round(timeout * 1000)),
        }
        try:
            try:
                await link.send(frame)
            except _LinkLost:
                raise CommandNotSent("the connection to the gateway dropped first") from None
            try:
                async with asyncio.timeout(timeout + ACCEPT_GRACE_S) as deadline:
                    command.timer = deadline
                    return await command.future
            except TimeoutError:
                if command.future.done():  # resolved as the deadline fell: that outcome stands
                    return command.future.result()
                accepted = command.accepted
                raise CommandUnknown(
                    "no result from the gateway in time; the device may still act on it",
                    accepted.command_id if accepted else None,
                ) from None
        finally:
            link.commands.pop(request_id, None)

    def _on_command_frame(self, command: _Command, frame: ServerFrame) -> None:
        future = command.future
        if future.done():
            return
        if isinstance(frame, CommandAccepted):
            command.accepted = frame
            if command.timer is not None:
                loop = asyncio.get_running_loop()
                command.timer.reschedule(loop.time() + frame.timeout_ms / 1000 + RESULT_GRACE_S)
        elif isinstance(frame, ErrorFrame):
            future.set_exception(CommandRefused(frame.code, frame.message))
        elif isinstance(frame, CommandResult):
            outcome = _outcome(frame)
            if outcome is None:
                future.set_result(frame)
            else:
                future.set_exception(outcome)

    # --- REST ------------------------------------------------------------------------------------

    def _api(self, path: str) -> str:
        parts = urlsplit(self.url)
        scheme = "https" if parts.scheme == "wss" else "http"
        base = parts.path[: -len("/ws")] if parts.path.endswith("/ws") else parts.path
        return urlunsplit((scheme, parts.netloc, base.rstrip("/") + path, "", ""))

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def devices(self) -> list[Device]:
        """Every device the token may read, with its latest values (GET /api/devices)."""
        assert self._http is not None, "use the client inside `async with`"
        async with self._http.get(self._api("/api/devices"), headers=self._headers()) as response:
            body = await _json_or_refusal(response)
        return [device(raw) for raw in body["devices"]]

    async def export_csv(
        self, device_id: str, metric: str, from_: float | None = None, to: float | None = None
    ) -> AsyncIterator[bytes]:
        """Every raw point of a metric in [from_, to) as CSV `time,value` lines, streamed from
        the gateway's store (GET /api/devices/{id}/history?format=csv)."""
        assert self._http is not None, "use the client inside `async with`"
        params = {"metric": metric, "format": "csv"}
        if from_ is not None:
            params["from"] = repr(from_)
        if to is not None:
            params["to"] = repr(to)
        url = self._api(f"/api/devices/{quote(device_id, safe='')}/history")
        async with self._http.get(url, params=params, headers=self._headers()) as response:
            if response.status != 200:
                await _json_or_refusal(response)
            async for chunk in response.content.iter_any():
                yield chunk


def _outcome(frame: CommandResult) -> CommandError | None:
    """The exception for a command_result's status (None: ok)."""
    command_id = frame.command_id
    match frame.status:
        case "ok":
            return None
        case "error":
            return DeviceError(
                frame.error or "the device reported an error", command_id, frame.result
            )
        case "timeout":
            return CommandTimeout("the device did not answer in time", command_id)
        case "unconfirmed":
            return CommandUnconfirmed(
                "sent, but nothing the device reports can confirm it", command_id
            )
        case _:
            return CommandUnknown(
                "the gateway's broker link dropped; the device may still receive it", command_id
            )


async def _json_or_refusal(response: aiohttp.ClientResponse) -> Any:
    if response.status == 401:
        raise Unauthorized("the gateway refused the token")
    try:
        body = orjson.loads(await response.read())
    except orjson.JSONDecodeError:
        raise RequestRefused("bad_reply", f"HTTP {response.status} without JSON") from None
    if response.status >= 400:
        code = body.get("code", "error") if isinstance(body, dict) else "error"
        message = body.get("message", "") if isinstance(body, dict) else ""
        raise refusal(str(code), str(message) or f"HTTP {response.status}")
    return body


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _terminal_message(code: int | None, link: _Link) -> str:
    if code == 4500:
        return "the gateway refused the token"
    if code == 4501:
        return "the gateway closed the connection after repeated protocol errors"
    if code == 1009:
        return "the gateway closed the connection: a message was too large"
    return f"the gateway closed the connection for good ({code})"


__all__ = ["Client", "ClientError", "ClientStats", "normalize_url"]
