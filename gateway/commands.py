"""Commands to devices: validate against the meta, publish, and wait for the device's answer.

The mechanism under the command service (gateway/control.py, which decides who may send what).
The topic is built by the device's convention from registry data, never from client text. Each
pending command lives in `_pending` only inside `_awaiting`, whose `finally` removes it, so a
timeout, a disconnect or a cancelled client task cannot leak a future. Once the broker has
acknowledged the publish the convention is told (`arm`): only what the device sends from then on
may confirm the command, and a command nothing can confirm ends at once as `unconfirmed`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from gateway.cluster import command_owner, new_command_id
from gateway.config import CommandsConfig
from gateway.conventions import Convention
from gateway.errors import CommandError, PublishUnconfirmed
from gateway.meta import validate_params
from gateway.models import CommandResult, Value
from gateway.names import is_command_name
from gateway.registry import Device

Outcome = Literal["ok", "error", "timeout", "unknown", "unconfirmed"]


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return after the broker's PUBACK."""
        ...


@dataclass(frozen=True, slots=True)
class PreparedCommand:
    device: str
    command: str
    command_id: str
    topic: str
    payload: bytes
    timeout_s: float
    convention: str = "native"
    #: The device's latest values when the command was prepared: what an echo must change.
    before: Mapping[str, tuple[float, Value]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command_id: str
    status: Outcome
    rtt_ms: float
    result: Any = None
    error: str | None = None

    def fields(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "status": self.status,
            "result": self.result,
            "error": self.error,
            "rtt_ms": round(self.rtt_ms, 3),
        }


class CommandRouter:
    def __init__(
        self,
        conventions: Mapping[str, Convention],
        publisher: Publisher,
        config: CommandsConfig,
        instance: str,
    ) -> None:
        self._conventions = conventions
        self._publisher = publisher
        self._config = config
        self._instance = instance  # command ids name it: peers tell their results from strays
        self._pending: dict[str, tuple[str, asyncio.Future[CommandResult]]] = {}

    @property
    def pending(self) -> int:
        """Commands published (or being published) and waiting for their device's answer."""
        return len(self._pending)

    def prepare(
        self, device: Device, command: str, params: dict[str, Value], timeout_ms: int | None
    ) -> PreparedCommand:
        """Check the command against the device's meta; raise CommandError when it does not fit."""
        device_id = device.id
        meta = device.meta
        if meta is None:
            raise CommandError("not_found", f"device {device_id} has not published its commands")
        spec = meta.commands.get(command) if is_command_name(command) else None
        if spec is None:
            raise CommandError("not_found", f"device {device_id} has no command {command!r:.80}")
        checked = validate_params(command, spec, params)
        command_id = new_command_id(self._instance)
        topic, payload = self._conventions[device.convention].encode_command(
            device_id, meta, command, command_id, checked
        )
        timeout_ms = min(timeout_ms or self._config.default_timeout_ms, self._config.max_timeout_ms)
        return PreparedCommand(
            device_id,
            command,
            command_id,
            topic,
            payload,
            timeout_ms / 1000,
            device.convention,
            before=dict(device.values),  # at most max_metrics_per_device entries
        )

    async def execute(
        self, command: PreparedCommand, on_accepted: Callable[[str], None]
    ) -> CommandOutcome:
        """Publish and wait for the result. Raises BrokerUnavailable if nothing was published."""
        started = time.perf_counter()

        def outcome(status: Outcome, result: CommandResult | None = None) -> CommandOutcome:
            rtt_ms = (time.perf_counter() - started) * 1000
            if result is None:
                return CommandOutcome(command.command_id, status, rtt_ms)
            return CommandOutcome(command.command_id, status, rtt_ms, result.result, result.error)

        # Registered before publishing: a fast device may answer before the PUBACK is processed.
        accepted = False
        with self._awaiting(command) as answer:
            try:
                async with asyncio.timeout(command.timeout_s):
                    await self._publisher.publish(command.topic, command.payload)
                    accepted = True
                    convention = self._conventions[command.convention]
                    confirmable = convention.arm(command.device, command.command_id, command.before)
                    on_accepted(command.command_id)
                    if not confirmable:
                        return outcome("unconfirmed")
                    result = await answer
            except PublishUnconfirmed:
                return outcome("unknown")
            except TimeoutError:
                # Without a PUBACK we cannot say the device never got it.
                return outcome("timeout" if accepted else "unknown")
        return outcome(result.status, result)

    @contextmanager
    def _awaiting(self, command: PreparedCommand) -> Iterator[asyncio.Future[CommandResult]]:
        future: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._pending[command.command_id] = (command.device, future)
        try:
            yield future
        finally:
            del self._pending[command.command_id]

    def resolve(self, result: CommandResult) -> bool:
        """Hand a device's answer to the waiting command; False if nobody waits for it."""
        entry = self._pending.get(result.command_id)
        # A device may only answer its own commands.
        if entry is None or entry[0] != result.device or entry[1].done():
            return False
        entry[1].set_result(result)
        return True

    def is_peers(self, command_id: str) -> bool:
        """True when the id names another gateway instance: every instance of a cluster sees
        every answer, and only the one that sent the command acts on it."""
        owner = command_owner(command_id)
        return owner is not None and owner != self._instance
