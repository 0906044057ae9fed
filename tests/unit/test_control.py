"""CommandService: who may command what, the limits, the final topic check, and the audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.auth import ANONYMOUS, Principal
from gateway.commands import CommandRouter
from gateway.config import CommandsConfig, RegistryConfig
from gateway.control import CommandRequest, CommandService
from gateway.conventions.native import NativeConvention
from gateway.errors import BrokerUnavailable, CommandError
from gateway.meta import parse_meta
from gateway.models import AuditEntry, CommandResult, DeviceMeta, Value
from gateway.registry import Registry
from tests.support.devices import THERMOSTAT_META
from tests.support.publisher import FakePublisher


class AuditLog:
    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def record(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


class MisdirectedConvention(NativeConvention):
    """A convention whose command topic lands on another device (as hostile discovery data can
    make a convention do): the service must refuse to publish there."""

    def encode_command(
        self, device: str, meta: DeviceMeta, command: str, command_id: str, params: dict[str, Value]
    ) -> tuple[str, bytes]:
        return f"{self.prefix}/other-1/cmd/{command}", b"{}"


class Setup:
    def __init__(self, publisher: FakePublisher | None = None, convention: Any = None, **limits):
        self.publisher = publisher or FakePublisher()
        registry = Registry(RegistryConfig())
        for device_id in ("thermo-1", "thermo-2"):
            device, _ = registry.observe(device_id, "native")
            device.meta = parse_meta(THERMOSTAT_META)
        conventions = {"native": convention or NativeConvention(prefix="p")}
        config = CommandsConfig(**limits)
        self.router = CommandRouter(conventions, self.publisher, config, "gw-test")
        self.audit = AuditLog()
        self.service = CommandService(registry, self.router, conventions, config, self.audit)


def request(
    device: str = "thermo-1",
    command: str = "toggle",
    principal: Principal = ANONYMOUS,
    remote: str = "127.0.0.1",
    params: dict[str, Value] | None = None,
) -> CommandRequest:
    return CommandRequest(principal, remote, "ws", device, command, params or {}, 5000)


def refusal(setup: Setup, req: CommandRequest, client: Any = None) -> CommandError:
    with pytest.raises(CommandError) as refused:
        setup.service.admit(req, client)
    return refused.value


@pytest.mark.parametrize("device", ["ghost-1", "thermo-1/cmd", "thermo-\x00", "+", "#", ""])
def test_unknown_or_invalid_device_is_not_found_and_audited(device):
    """Ids that are unknown or not valid device ids are not_found; the refusal is audited."""
    setup = Setup()
    assert refusal(setup, request(device)).code == "not_found"
    assert setup.publisher.sent == []
    (entry,) = setup.audit.entries
    assert (entry.device, entry.status, entry.command_id) == (device, "refused", "")
    assert str(entry.error).startswith("not_found")
    assert setup.service.stats.refused["not_found"] == 1


def test_unreadable_is_not_found_and_read_only_is_forbidden():
    """No read right: not_found (ids cannot be probed); read but no command right: forbidden."""
    setup = Setup()
    reader = Principal("reader", read=("thermo-1",), command=())
    assert refusal(setup, request("thermo-2", principal=reader)).code == "not_found"
    assert refusal(setup, request("thermo-1", principal=reader)).code == "forbidden"
    assert [e.principal for e in setup.audit.entries] == ["reader", "reader"]


def test_a_topic_outside_the_device_is_refused_before_publishing():
    """A command whose built topic is not the device's own is forbidden (reason bad_topic) and
    never published."""
    setup = Setup(convention=MisdirectedConvention(prefix="p"))
    refused = refusal(setup, request())
    assert (refused.code, refused.reason) == ("forbidden", "bad_topic")
    assert setup.publisher.sent == []
    assert setup.service.stats.refused["bad_topic"] == 1
    assert setup.service.pending == 0


def test_native_convention_owns_only_its_own_command_topics():
    """owns_command_topic: the device's own `<prefix>/<id>/cmd/<command>` and nothing else."""
    native = NativeConvention(prefix="p")
    assert native.owns_command_topic("thermo-1", "p/thermo-1/cmd/toggle")
    assert not native.owns_command_topic("thermo-1", "p/thermo-2/cmd/toggle")
    assert not native.owns_command_topic("thermo-1", "p/thermo-1/cmd/a/b")
    assert not native.owns_command_topic("thermo-1", "p/thermo-1/cmd/+")
    assert not native.owns_command_topic("thermo-1", "q/thermo-1/cmd/toggle")


async def test_ok_outcome_is_counted_and_audited_once():
    """An answered command: outcome and round trip counted, one audit entry with its id."""
    setup = Setup()
    accepted: list[str] = []
    task = asyncio.create_task(setup.service.submit(request(), accepted.append))
    async with asyncio.timeout(5):
        await setup.publisher.published.wait()
    assert setup.service.pending == 1
    assert setup.router.resolve(CommandResult("thermo-1", accepted[0], "ok", 1))
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.status == "ok"
    assert setup.service.pending == 0
    assert setup.service.stats.outcomes["ok"] == 1
    assert sum(setup.service.stats.rtt.counts) == 1
    (entry,) = setup.audit.entries
    assert (entry.status, entry.command_id, entry.via) == ("ok", accepted[0], "ws")
    assert entry.rtt_ms == outcome.rtt_ms


async def test_broker_unavailable_is_a_refusal_with_its_slot_back():
    """Nothing published (broker down): CommandError unavailable, audited as refused."""
    setup = Setup(FakePublisher(fail=BrokerUnavailable("down")))
    with pytest.raises(CommandError) as refused:
        await setup.service.submit(request())
    assert refused.value.code == "unavailable"
    assert setup.service.pending == 0
    assert [e.status for e in setup.audit.entries] == ["refused"]
    assert setup.audit.entries[0].command_id  # an id had been given to it


async def test_cancelled_while_waiting_is_audited_unknown():
    """A caller that goes away after the publish: slot back, audited unknown (not refused)."""
    setup = Setup()
    task = asyncio.create_task(setup.service.submit(request()))
    async with asyncio.timeout(5):
        await setup.publisher.published.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert setup.service.pending == 0
    assert [e.status for e in setup.audit.entries] == ["unknown"]


def test_abandoned_before_it_ran_gives_its_slots_back():
    """A command admitted but never run (its connection closed first) frees its slots."""
    setup = Setup()
    client = setup.service.client_limits()
    ticket = setup.service.admit(request(), client)
    assert (setup.service.pending, client.in_flight) == (1, 1)
    setup.service.abandon(ticket)
    setup.service.abandon(ticket)  # once only
    assert (setup.service.pending, client.in_flight) == (0, 0)
    assert [e.status for e in setup.audit.entries] == ["refused"]
    assert setup.publisher.sent == []


def test_connection_limits_in_flight_and_rate():
    """A connection's own limits: max in flight, then its rate bucket; both rate_limited."""
    setup = Setup(max_in_flight_per_client=2, burst_per_client=3, rate_per_client=0.001)
    client = setup.service.client_limits()
    tickets = [setup.service.admit(request(), client) for _ in range(2)]
    assert refusal(setup, request(), client).code == "rate_limited"  # 2 in flight
    setup.service.abandon(tickets[0])
    setup.service.admit(request(), client)  # the bucket's third token
    setup.service.abandon(tickets[1])
    refused = refusal(setup, request(), client)  # bucket empty
    assert refused.code == "rate_limited"
    assert (refused.retry_after_s or 0) > 1


def test_principal_and_address_limits_span_connections():
    """Per principal and per address, across connections: one token's commands from several
    connections share its bucket, and so do several tokens' from one address."""
    setup = Setup(burst_per_principal=2, rate_per_principal=0.001, burst_per_address=3,
                  rate_per_address=0.001, max_in_flight_per_client=100)  # fmt: skip
    alice = Principal("alice", read=None, command=None)
    bob = Principal("bob", read=None, command=None)
    for _ in range(2):
        setup.service.admit(request(principal=alice), setup.service.client_limits())
    refused = refusal(setup, request(principal=alice, remote="10.0.0.9"))
    assert (refused.code, refused.message) == ("rate_limited", "too many commands for this token")
    setup.service.admit(request(principal=bob))  # the address's third command
    refused = refusal(setup, request(principal=bob))
    assert (refused.code, refused.message) == (
        "rate_limited",
        "too many commands from this address",
    )
    carol = Principal("carol", read=None, command=None)
    setup.service.admit(request(principal=carol, remote="10.0.0.8"))  # another address: fine


def test_pending_commands_are_capped_overall():
    """Past commands.max_pending, commands are refused too_many with a retry delay."""
    setup = Setup(max_pending=2)
    for remote in ("a", "b"):
        setup.service.admit(request(remote=remote))
    refused = refusal(setup, request(remote="c"))
    assert (refused.code, refused.retry_after_s) == ("too_many", 1.0)
    assert setup.service.stats.refused["too_many"] == 1
