"""GET /ws: admission (gateway/admission.py), then one connection's reader loop and handlers.

Handlers translate frames into calls on the services the connection was given (commands go to
gateway/control.py) and the answers back into frames. A connection's stream (gateway/stream.py)
holds its subscriptions and queued frames, its session (gateway/session.py) writes them on demand,
and its in-flight commands are tasks of their own; when the reader loop ends, everything the
connection started ends with it, and the stream is parked for a resume. Heartbeats are the
runtime's one sweep over all sessions (Session.check_alive), not aiohttp's two timers per
connection, so the reader answers pings and notes every frame it hears.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from typing import Any

from aiohttp import WSMsgType, web

from gateway import keys, snapshots
from gateway.admission import Admission
from gateway.config import Config
from gateway.control import CommandRequest, CommandService, Ticket
from gateway.errors import CommandError, ProtocolError, UpgradeRefused
from gateway.hub import Hub
from gateway.limits import TokenBucket
from gateway.logs import ConnectionLog
from gateway.matching import Selector
from gateway.protocol import (
    DEFAULT_HISTORY_POINTS,
    PROTOCOL_VERSION,
    Auth,
    CloseCode,
    CloseReason,
    Command,
    History,
    Ping,
    Request,
    Subscribe,
    Unsubscribe,
    encode,
    error_frame,
    parse_request,
)
from gateway.registry import Device, Registry
from gateway.session import Session, Socket
from gateway.snapshots import HeldSnapshots
from gateway.status import GatewayStatus
from gateway.store import HistoryStore, QueryLimit, StoreUnavailable
from gateway.stream import Stream
from gateway.ws_socket import AiohttpSocket, fast_writer_usable, limit_send_buffer

log = logging.getLogger(__name__)

#: Malformed frames in a row after which the client is considered broken and closed (4501).
MAX_MALFORMED_IN_A_ROW = 20
#: Ranged history requests one connection may have in flight.
MAX_QUERIES_PER_CONNECTION = 4

#: HTTP answers to an upgrade the admission refused, by reason: (status class, Retry-After).
_REFUSALS: dict[str, tuple[type[web.HTTPException], str | None]] = {
    "host": (web.HTTPForbidden, None),
    "origin": (web.HTTPForbidden, None),
    "rate": (web.HTTPTooManyRequests, "1"),
    "unauthorized": (web.HTTPUnauthorized, None),
    "connection_cap": (web.HTTPServiceUnavailable, "5"),
    "unauthenticated_cap": (web.HTTPTooManyRequests, "5"),
}


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    app = request.app
    admission = app[keys.ADMISSION]
    config = app[keys.CONFIG]
    try:
        principal = admission.admit(
            host=request.headers.get("Host"),  # request.host falls back to the server's own name
            origin=request.headers.get("Origin"),
            token=request.query.get("token"),
            remote=request.remote or "",
        )
    except UpgradeRefused as refused:
        status, retry_after = _REFUSALS[refused.reason]
        headers = {"Retry-After": retry_after} if retry_after is not None else None
        raise status(text=refused.message, headers=headers) from None
    # Stream ids double as resume handles, so they must not be guessable.
    stream = Stream(f"c-{secrets.token_urlsafe(12)}", config.ws, principal)
    ws = web.WebSocketResponse(
        autoping=False,  # the reader answers pings and sees pongs (see Session.check_alive)
        max_msg_size=config.ws.max_message_bytes,
        compress=config.ws.compress,
    )
    connection = Connection(
        stream,
        ws,
        AiohttpSocket(ws, request, config.ws.fast_writer and fast_writer_usable()),
        request.remote or "",
        config=config,
        admission=admission,
        status=app[keys.STATUS],
        registry=app[keys.REGISTRY],
        hub=app[keys.HUB],
        held_snapshots=app[keys.HELD_SNAPSHOTS],
        commands=app[keys.COMMANDS],
        history=app[keys.HISTORY],
    )
    limit_send_buffer(request, config.ws.send_buffer_bytes)
    try:
        await ws.prepare(request)
        await connection.serve()
    finally:
        admission.release(connection.counted_as, connection.remote)
    return ws


class Connection:
    """One WebSocket connection: its reader loop and request handlers, over the services it is
    given (nothing else of the gateway is in reach)."""

    __slots__ = (
        "_admission",
        "_command_limits",
        "_command_tasks",
        "_commands",
        "_config",
        "_held_snapshots",
        "_history",
        "_history_rate",
        "_hub",
        "_in_flight",
        "_malformed_in_a_row",
        "_queries",
        "_registry",
        "_resumed",
        "_status",
        "_subscribe_rate",
        "counted_as",
        "log",
        "remote",
        "session",
        "socket",
        "stream",
        "ws",
    )

    def __init__(
        self,
        stream: Stream,
        ws: web.WebSocketResponse,
        socket: Socket,
        remote: str,
        *,
        config: Config,
        admission: Admission,
        status: GatewayStatus,
        registry: Registry,
        hub: Hub,
        held_snapshots: HeldSnapshots,
        commands: CommandService,
        history: HistoryStore,
    ) -> None:
        self.stream = stream  # a resume may switch it to the stream it adopts
        self.session: Session | None = None  # while serving
        self.ws = ws
        self.socket = socket
        self.remote = remote
        self._config = config
        self._admission = admission
        self._status = status
        self._registry = registry
        self._hub = hub
        self._held_snapshots = held_snapshots
        self._commands = commands
        self._history = history
        self._queries = 0  # ranged history requests in flight
        # Whose connection cap this connection counts against (moves at `auth`).
        self.counted_as = stream.principal
        self._command_limits = commands.client_limits()
        self._command_tasks: set[asyncio.Task[None]] | None = None  # while commands are in flight
        self._malformed_in_a_row = 0
        # Rate limits of the requests that build large replies, made when first needed.
        self._subscribe_rate: TokenBucket | None = None
        self._history_rate: TokenBucket | None = None
        # The resume this connection verified and adopted: (epoch, session, seq) as the client
        # named them. Only the same resume answers a second subscribe with recovered: true.
        self._resumed: tuple[str, str, int] | None = None
        # Every line about this connection carries its label and remote address (not the
        # session id: a resume handle, logged at DEBUG only).
        self.log = ConnectionLog(log, stream.id, remote)
        stream.on_evict = self._evicted

    def _evicted(self, reason: str) -> None:
        self._admission.closed(reason)
        self.log.info("closing: %s", reason)

    async def serve(self) -> None:
        self.log.debug("session %s", self.stream.id)
        self._hub.add(self.stream)
        session = self.session = self.stream.attach(self.socket, time.monotonic())
        self.stream.offer_frame(self._hello())
        loop = asyncio.get_running_loop()
        auth_deadline = None
        if self.stream.principal is None:
            auth_deadline = loop.call_later(self._config.auth.auth_timeout_s, self._auth_timeout)
        try:
            await self._read_loop(session)
        finally:
            session.detach()
            for task in list(self._command_tasks or ()):
                task.cancel()
            if auth_deadline is not None:
                auth_deadline.cancel()
            stream = self.stream
            if stream.subscriptions and not stream.closing:
                # The client went away by itself: keep its stream a while so it can resume.
                ws_config = self._config.ws
                self._hub.park(stream, ws_config.resume_window_s, ws_config.max_parked)
            else:
                self._hub.remove(stream)

    def _auth_timeout(self) -> None:
        self.stream.evict(CloseCode.UNAUTHORIZED, CloseReason.AUTH_TIMEOUT)

    def _hello(self) -> dict[str, Any]:
        config, status = self._config, self._status
        return {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "server": f"iotgw {status.version}",
            "instance": status.instance,
            "epoch": status.epoch,
            "session": self.stream.id,
            "auth": "required" if self.stream.principal is None else "none",
            "broker": status.broker_state,
            "time": time.time(),  # lets clients correct "last seen" ages for their clock offset
            "limits": {
                "max_message_bytes": config.ws.max_message_bytes,
                "max_subscriptions": config.ws.max_subscriptions,
                "history_length": config.registry.history_length,
                "stale_after_s": config.registry.stale_after_s,
                # The request limits that close a connection (4001) or refuse a request, so
                # that a client can pace itself below them (docs/clients.md).
                "history_rate": config.ws.history_rate,
                "history_burst": config.ws.history_burst,
                "history_in_flight": MAX_QUERIES_PER_CONNECTION,
                "subscribe_rate": config.ws.subscribe_rate,
                "subscribe_burst": config.ws.subscribe_burst,
            },
        }

    async def _read_loop(self, session: Session) -> None:
        async for message in self.ws:
            session.heard(time.monotonic())
            if message.type == WSMsgType.TEXT:
                self._on_frame(message.data)
            elif message.type == WSMsgType.PING:
                await self.ws.pong(message.data)
            elif message.type == WSMsgType.BINARY:
                self._refuse(ProtocolError("bad_request", "send text frames"))
            elif message.type == WSMsgType.ERROR:
                # aiohttp has already closed the connection (1009 for an oversize frame).
                self.log.info("%s", message.data)

    def _on_frame(self, frame: str) -> None:
        try:
            request = parse_request(frame)
        except ProtocolError as exc:
            self._refuse(exc)
            # Only frames that are not valid requests count towards 4501: a refusal of a valid
            # one (a device that just went away, a rate limit) is not the client's fault.
            self._malformed_in_a_row += 1
            if self._malformed_in_a_row >= MAX_MALFORMED_IN_A_ROW:
                self.stream.evict(CloseCode.PROTOCOL_VIOLATION, CloseReason.PROTOCOL_ERRORS)
            return
        self._malformed_in_a_row = 0
        try:
            self._dispatch(request)
        except ProtocolError as exc:
            self._refuse(exc)
        except CommandError as exc:
            self._refuse(ProtocolError(exc.code, exc.message, request.id))

    def _refuse(self, exc: ProtocolError) -> None:
        self.stream.offer(error_frame(exc.code, exc.message, exc.request_id))

    def _dispatch(self, request: Request) -> None:
        stream = self.stream
        if isinstance(request, Ping):
            stream.offer_frame({"type": "pong", "id": request.id})
            return
        if isinstance(request, Auth):
            self._auth(request)
            return
        if stream.principal is None:
            refusal = error_frame("unauthorized", "authenticate first", request.id)
            stream.evict(CloseCode.UNAUTHORIZED, CloseReason.REQUEST_BEFORE_AUTH, refusal)
            return
        match request:
            case Subscribe():
                if self._within_rate(request, "subscribe"):
                    self._subscribe(request)
            case Unsubscribe():
                self._unsubscribe(request)
            case History():
                if self._within_rate(request, "history"):
                    self._history_request(request)
            case Command():
                self._command(request)

    def _within_rate(self, request: Subscribe | History, kind: str) -> bool:
        """Count a request whose reply can be large against its per-connection rate; past it, the
        connection is closed with 4001 (the error frame says which limit)."""
        ws = self._config.ws
        if kind == "subscribe":
            if self._subscribe_rate is None:
                self._subscribe_rate = TokenBucket(ws.subscribe_rate, ws.subscribe_burst)
            bucket, rate = self._subscribe_rate, ws.subscribe_rate
        else:
            if self._history_rate is None:
                self._history_rate = TokenBucket(ws.history_rate, ws.history_burst)
            bucket, rate = self._history_rate, ws.history_rate
        if bucket.take():
            return True
        refusal = error_frame("rate_limited", f"more than {rate:g} {kind} requests/s", request.id)
        self.stream.evict(CloseCode.TOO_MANY_REQUESTS, CloseReason.REQUEST_RATE, refusal)
        return False

    def _auth(self, request: Auth) -> None:
        stream = self.stream
        principal = self._admission.authenticate(request.token)
        if principal is None:
            refusal = error_frame("unauthorized", "bad token", request.id)
            stream.evict(CloseCode.UNAUTHORIZED, CloseReason.BAD_TOKEN, refusal)
            return
        if not self._admission.auth_required:
            stream.offer(error_frame("bad_request", "authentication is not enabled", request.id))
            return
        over_cap = self._admission.move(self.counted_as, principal, self.remote)
        if over_cap is not None:
            stream.evict(
                CloseCode.TOO_MANY_REQUESTS,
                CloseReason.CONNECTION_LIMIT,
                error_frame("too_many", over_cap, request.id),
            )
            return
        self.counted_as = principal
        stream.principal = principal
        stream.offer_frame({"type": "authenticated", "id": request.id})

    def _subscribe(self, request: Subscribe) -> None:
        stream = self.stream
        assert stream.principal is not None  # _dispatch refuses requests before auth
        selector = Selector.of(request.devices, request.metrics, stream.principal.read)
        if request.resume is not None and self._resume(request, selector):
            return
        if len(stream.subscriptions) >= self._config.ws.max_subscriptions:
            raise ProtocolError("too_many", "subscription limit reached", request.id)
        subscription = stream.new_subscription_id()
        stream.subscriptions[subscription] = selector
        reply: dict[str, Any] = {"type": "subscribed", "id": request.id}
        reply["subscription"] = subscription
        if request.resume is not None:
            reply["recovered"] = False
        stream.offer_frame(reply)
        # Snapshot before live: both are queued in order on the one outbox (gateway/snapshots.py;
        # during a cold start's retained burst, both wait until it is over).
        if self._status.holding_snapshots:
            self._held_snapshots.hold(stream, subscription)
        else:
            snapshots.subscribe(self._registry, self._hub, stream, subscription)

    def _resume(self, request: Subscribe, selector: Selector) -> bool:
        """Continue the client's previous stream if it is still parked and complete; True if so.

        True only after a verified adopt of the very stream the client names (Stream.adopt), or
        for a later subscribe of a filter that stream carried over, with the same resume.
        """
        resume, stream, hub = request.resume, self.stream, self._hub
        assert resume is not None
        assert stream.principal is not None
        existing = next((k for k, v in stream.subscriptions.items() if v == selector), None)
        if existing is not None:
            # A second subscribe of the resumed stream: its subscription carried over. Anything
            # else naming a filter this connection has (another stream, a seq the adopt did not
            # start from or the stream never sent) is a new subscription: recovered false.
            resumed = self._resumed
            if resumed is None or (resume.epoch, resume.session) != resumed[:2]:
                return False
            if not resumed[2] <= resume.seq <= stream.seq:
                return False
            stream.offer_frame(_resumed_reply(request.id, existing))
            return True
        if resume.epoch != self._status.epoch or self._status.holding_snapshots:
            # The gateway restarted: nothing of the old stream survived. Or it is still taking in
            # the retained state, and the old stream may not have had its snapshot yet.
            return False
        old = hub.parked_stream(resume.session)
        if old is None or old.principal is None or old.principal.name != stream.principal.name:
            return False  # someone else's stream stays parked for its owner
        carried = next((k for k, v in old.subscriptions.items() if v == selector), None)
        if carried is None or stream.seq or stream.subscriptions:
            return False
        if not old.can_replay_after(resume.seq):
            return False  # frames after seq are gone: the owner gets a fresh snapshot instead
        hub.unpark(old)
        adopted = old.adopt(stream, resume.seq, encode(_resumed_reply(request.id, carried)))
        assert adopted  # checked just above
        hub.remove(stream)
        self.stream = old
        self._resumed = (resume.epoch, resume.session, resume.seq)
        return True

    def _unsubscribe(self, request: Unsubscribe) -> None:
        if self.stream.subscriptions.pop(request.subscription, None) is None:
            raise ProtocolError(
                "not_found", f"no subscription {request.subscription!r}", request.id
            )
        self._hub.resubscribe(self.stream)
        self.stream.offer_frame(
            {"type": "unsubscribed", "id": request.id, "subscription": request.subscription}
        )

    def _device_for(self, device_id: str, request_id: Any) -> Device:
        """The device if this client may read it; else ProtocolError."""
        principal = self.stream.principal
        assert principal is not None  # _dispatch refuses requests before auth
        device = self._registry.get(device_id)
        if device is None or not principal.may_read(device_id):
            # Unreadable devices are reported as unknown: a token must not probe for device ids.
            raise ProtocolError("not_found", f"unknown device {device_id!r:.80}", request_id)
        return device

    def _history_request(self, request: History) -> None:
        device = self._device_for(request.device, request.id)
        if request.ranged:
            if self._queries >= MAX_QUERIES_PER_CONNECTION:
                raise ProtocolError(
                    "rate_limited",
                    f"at most {MAX_QUERIES_PER_CONNECTION} history requests in flight",
                    request.id,
                )
            self._queries += 1
            task = asyncio.create_task(
                self._ranged_history(request),
                name=f"connection[{self.log.conn}].history[{request.id!r:.20}]",
            )
            if self._command_tasks is None:
                self._command_tasks = set()
            self._command_tasks.add(task)  # cancelled with the connection, like commands
            task.add_done_callback(self._query_done)
            return
        cap = self._config.registry.history_length
        limit = min(request.limit or cap, cap)
        points = self._registry.history(device, request.metric, request.since, limit)
        if points is None:
            raise ProtocolError("not_found", f"no metric {request.metric!r:.80}", request.id)
        self.stream.offer_frame(
            {
                "type": "history",
                "id": request.id,
                "device": device.id,
                "metric": request.metric,
                "points": points,
            }
        )

    async def _ranged_history(self, request: History) -> None:
        """Answer from the history store: raw points, or buckets past max_points."""
        assert request.start is not None
        end = request.end if request.end is not None else time.time()
        try:
            result = await self._history.query(
                request.device,
                request.metric,
                request.start,
                end,
                request.max_points or DEFAULT_HISTORY_POINTS,
            )
        except StoreUnavailable as exc:
            refusal = error_frame("unavailable", f"history store: {exc.reason}", request.id)
            self.stream.offer(refusal)
            return
        except QueryLimit:
            self.stream.offer(error_frame("rate_limited", "history is busy", request.id))
            return
        finally:
            self._queries -= 1
        if result is None:
            refusal = error_frame("not_found", f"no metric {request.metric!r:.80}", request.id)
            self.stream.offer(refusal)
            return
        self.stream.offer_frame(
            {
                "type": "history",
                "id": request.id,
                "device": request.device,
                "metric": request.metric,
                "from": request.start,
                "to": end,
                **result.fields(),
            }
        )

    def _query_done(self, task: asyncio.Task[None]) -> None:
        if self._command_tasks is not None:
            self._command_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("history task failed", exc_info=exc)  # a bug: end loudly
            self.socket.abort()

    def _command(self, request: Command) -> None:
        principal = self.stream.principal
        assert principal is not None  # _dispatch refuses requests before auth
        # Admitted (or refused with CommandError) now, not when the task starts: a burst of
        # frames is read before any task runs, and each must count against the limits.
        ticket = self._commands.admit(
            CommandRequest(
                principal,
                self.remote,
                "ws",
                request.device,
                request.command,
                request.params,
                request.timeout_ms,
            ),
            self._command_limits,
        )
        task = asyncio.create_task(
            self._run_command(request.id, ticket),
            name=f"connection[{self.log.conn}].command[{ticket.command.command_id}]",
        )
        if self._command_tasks is None:
            self._command_tasks = set()
        self._command_tasks.add(task)
        task.add_done_callback(functools.partial(self._command_done, ticket))

    def _command_done(self, ticket: Ticket, task: asyncio.Task[None]) -> None:
        if self._command_tasks is not None:
            self._command_tasks.discard(task)
        if task.cancelled():
            self._commands.abandon(ticket)  # if it never started: its slot back, audited
        elif (exc := task.exception()) is not None:
            # A bug, not a command outcome: say so and end the connection, loudly.
            self.log.error("command task failed", exc_info=exc)
            self.socket.abort()

    async def _run_command(self, request_id: Any, ticket: Ticket) -> None:
        timeout_ms = round(ticket.command.timeout_s * 1000)
        try:
            outcome = await self._commands.run(
                ticket,
                lambda command_id: self.stream.offer_frame(
                    {
                        "type": "command_accepted",
                        "id": request_id,
                        "command_id": command_id,
                        "timeout_ms": timeout_ms,
                    }
                ),
            )
        except CommandError as exc:
            self.stream.offer(error_frame(exc.code, exc.message, request_id))
            return
        self.stream.offer_frame({"type": "command_result", "id": request_id, **outcome.fields()})


def _resumed_reply(request_id: Any, subscription: str | None) -> dict[str, Any]:
    return {"type": "subscribed", "id": request_id, "subscription": subscription, "recovered": True}
