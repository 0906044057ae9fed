"""The command service: every command, from either front door, passes here and only here.

`admit` decides synchronously whether a command may go out: the principal may read the device
(else not_found: a token must not probe for ids) and command it (else forbidden); the connection's
own limits (WebSocket: in flight and rate), the principal's and the address's rates, and the cap
on pending commands; the command against the device's meta; and the final topic the device's
convention built, which must be one of that device's command topics. `run` publishes and awaits
the outcome (commands.CommandRouter). ws.py and http_api.py only translate frames and requests
into these calls and the results back.

Every command is written to the audit trail exactly once, refused ones too, through an AuditSink
(never awaited). Refusals raise CommandError with a protocol error code, counted by reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from gateway.auth import Principal
from gateway.commands import CommandOutcome, CommandRouter, PreparedCommand
from gateway.config import CommandsConfig
from gateway.conventions import Convention
from gateway.errors import BrokerUnavailable, CommandError
from gateway.limits import KeyedBuckets, TokenBucket
from gateway.models import AuditEntry, Value
from gateway.names import is_device_id
from gateway.registry import Device, Registry
from gateway.stats import CommandStats

#: How long a caller refused for too many pending commands is asked to wait (Retry-After).
PENDING_RETRY_S = 1.0


class AuditSink(Protocol):
    def record(self, entry: AuditEntry) -> None:
        """Keep one entry; must not block (the store queues it)."""
        ...


class NoAudit:
    """The default sink: keeps nothing."""

    def record(self, entry: AuditEntry) -> None:
        pass


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """One command as a front door received it (strings as the client sent them)."""

    principal: Principal
    remote: str  # the client's address, as the HTTP layer saw it
    via: Literal["ws", "rest"]
    device: str
    command: str
    params: dict[str, Value]
    timeout_ms: int | None


class ClientLimits:
    """One WebSocket connection's own command limits (commands.*_per_client)."""

    __slots__ = ("in_flight", "rate")

    def __init__(self, config: CommandsConfig) -> None:
        self.in_flight = 0
        self.rate = TokenBucket(config.rate_per_client, config.burst_per_client)


class Ticket:
    """An admitted command: it holds a pending slot (and its connection's) until it ends."""

    __slots__ = ("client", "command", "ended", "request", "started", "submitted_at")

    def __init__(
        self,
        request: CommandRequest,
        command: PreparedCommand,
        client: ClientLimits | None,
        submitted_at: float,
    ) -> None:
        self.request = request
        self.command = command
        self.client = client
        self.submitted_at = submitted_at
        self.started = False
        self.ended = False


class CommandService:
    def __init__(
        self,
        registry: Registry,
        router: CommandRouter,
        conventions: Mapping[str, Convention],
        config: CommandsConfig,
        audit: AuditSink | None = None,
    ) -> None:
        self._registry = registry
        self._router = router
        self._conventions = conventions
        self._config = config
        self._per_principal = KeyedBuckets(config.rate_per_principal, config.burst_per_principal)
        self._per_address = KeyedBuckets(config.rate_per_address, config.burst_per_address)
        self._pending = 0
        self.audit: AuditSink = audit if audit is not None else NoAudit()
        self.stats = CommandStats()

    @property
    def pending(self) -> int:
        """Commands admitted and not yet ended (what commands.max_pending caps)."""
        return self._pending

    def client_limits(self) -> ClientLimits:
        """Fresh limits for a new WebSocket connection."""
        return ClientLimits(self._config)

    async def submit(
        self,
        request: CommandRequest,
        on_accepted: Callable[[str], None] | None = None,
        client: ClientLimits | None = None,
    ) -> CommandOutcome:
        """Admit and run one command; raise CommandError when it is refused."""
        return await self.run(self.admit(request, client), on_accepted)

    def admit(self, request: CommandRequest, client: ClientLimits | None = None) -> Ticket:
        """Decide, without awaiting, whether the command may go out; raise CommandError (its
        `retry_after_s` set for limits) and audit the refusal when not. An admitted command
        must then be `run` (or `abandon`ed)."""
        submitted_at = time.time()
        try:
            device = self._authorise(request)
            self._limit(request, client)
            command = self._router.prepare(
                device, request.command, request.params, request.timeout_ms
            )
            if not self._conventions[device.convention].owns_command_topic(
                device.id, command.topic
            ):
                raise CommandError(
                    "forbidden",
                    f"the command topic {command.topic!r:.120} is not {device.id}'s own",
                    reason="bad_topic",
                )
        except CommandError as refused:
            self._refused(request, submitted_at, refused)
            raise
        self._pending += 1
        if client is not None:
            client.in_flight += 1
        return Ticket(request, command, client, submitted_at)

    async def run(
        self, ticket: Ticket, on_accepted: Callable[[str], None] | None = None
    ) -> CommandOutcome:
        """Publish an admitted command and wait for its outcome. Raises CommandError
        (unavailable) when the broker is disconnected: then nothing was published."""
        ticket.started = True
        command = ticket.command
        try:
            outcome = await self._router.execute(command, on_accepted or _ignore)
        except BrokerUnavailable:
            refused = CommandError("unavailable", "the broker is disconnected")
            self._refused(ticket.request, ticket.submitted_at, refused, command.command_id)
            raise refused from None
        except asyncio.CancelledError:
            # The caller went away (connection closed, shutdown) after the publish began.
            self._record(ticket, "unknown", error="cancelled before the outcome was known")
            raise
        finally:
            self._end(ticket)
        self.stats.outcomes[outcome.status] += 1
        self.stats.rtt.observe(outcome.rtt_ms / 1000)
        self._record(ticket, outcome.status, outcome.rtt_ms, outcome.error)
        return outcome

    def abandon(self, ticket: Ticket) -> None:
        """An admitted command that will never run (its task was cancelled before it started):
        give its slots back and audit it as refused (nothing was published)."""
        if ticket.started or ticket.ended:
            return
        self._end(ticket)
        refused = CommandError(
            "unavailable", "the connection closed before it was sent", reason="cancelled"
        )
        self._refused(ticket.request, ticket.submitted_at, refused, ticket.command.command_id)

    # --- the checks, in order ------------------------------------------------------------------

    def _authorise(self, request: CommandRequest) -> Device:
        principal, device_id = request.principal, request.device
        device = self._registry.get(device_id) if is_device_id(device_id) else None
        if device is None or not principal.may_read(device_id):
            # Unreadable devices are reported as unknown: a token must not probe for device ids.
            raise CommandError("not_found", f"unknown device {device_id!r:.80}")
        if not principal.may_command(device_id):
            raise CommandError("forbidden", f"not allowed to command {device_id}")
        return device

    def _limit(self, request: CommandRequest, client: ClientLimits | None) -> None:
        if client is not None:
            limit = self._config.max_in_flight_per_client
            if client.in_flight >= limit:
                raise CommandError(
                    "rate_limited", f"at most {limit} commands in flight", retry_after_s=1.0
                )
            if not client.rate.take():
                raise CommandError(
                    "rate_limited", "too many commands, slow down", client.rate.delay()
                )
        wait = self._per_principal.take(request.principal.name)
        if wait:
            raise CommandError("rate_limited", "too many commands for this token", wait)
        wait = self._per_address.take(request.remote)
        if wait:
            raise CommandError("rate_limited", "too many commands from this address", wait)
        if self._pending >= self._config.max_pending:
            raise CommandError("too_many", "too many commands pending, try again", PENDING_RETRY_S)

    # --- bookkeeping ---------------------------------------------------------------------------

    def _end(self, ticket: Ticket) -> None:
        if ticket.ended:
            return
        ticket.ended = True
        self._pending -= 1
        if ticket.client is not None:
            ticket.client.in_flight -= 1

    def _refused(
        self,
        request: CommandRequest,
        submitted_at: float,
        refused: CommandError,
        command_id: str = "",
    ) -> None:
        self.stats.refused[refused.reason] += 1
        self.audit.record(
            _entry(request, submitted_at, command_id, "refused", None, refused.describe())
        )

    def _record(
        self, ticket: Ticket, status: str, rtt_ms: float | None = None, error: str | None = None
    ) -> None:
        entry = _entry(
            ticket.request, ticket.submitted_at, ticket.command.command_id, status, rtt_ms, error
        )
        self.audit.record(entry)


def _entry(
    request: CommandRequest,
    submitted_at: float,
    command_id: str,
    status: str,
    rtt_ms: float | None,
    error: str | None,
) -> AuditEntry:
    return AuditEntry(
        ts=submitted_at,
        principal=request.principal.name,
        remote=request.remote,
        via=request.via,
        device=request.device,
        command=request.command,
        params=request.params,
        command_id=command_id,
        status=status,
        rtt_ms=rtt_ms,
        error=error,
    )


def _ignore(command_id: str) -> None:
    pass
