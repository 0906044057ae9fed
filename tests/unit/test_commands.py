"""CommandRouter: validation before publishing, the pending map, outcomes and who may answer."""

from __future__ import annotations

import asyncio
import contextlib

import orjson
import pytest

from gateway.commands import CommandRouter, PreparedCommand
from gateway.config import CommandsConfig, RegistryConfig
from gateway.conventions.native import NativeConvention
from gateway.errors import BrokerUnavailable, CommandError, PublishUnconfirmed
from gateway.meta import parse_meta
from gateway.models import CommandResult
from gateway.registry import Registry
from tests.support.devices import THERMOSTAT_META
from tests.support.publisher import FakePublisher

REGISTRY = Registry(RegistryConfig())
THERMO, _ = REGISTRY.observe("thermo-1", "native")
THERMO.meta = parse_meta(THERMOSTAT_META)
BARE, _ = REGISTRY.observe("bare-1", "native")  # known, but no meta yet


def router(publisher: FakePublisher, **settings) -> CommandRouter:
    conventions = {"native": NativeConvention(prefix="p")}
    return CommandRouter(conventions, publisher, CommandsConfig(**settings), "gw-test")


@pytest.mark.parametrize(
    ("device", "command", "params", "code"),
    [
        (BARE, "toggle", {}, "not_found"),
        (THERMO, "no_such", {}, "not_found"),
        (THERMO, "../x", {}, "not_found"),
        (THERMO, "set_target", {"target": 31}, "bad_params"),
        (THERMO, "set_target", {}, "bad_params"),
        (THERMO, "set_mode", {"mode": "turbo"}, "bad_params"),
    ],
)
def test_refused_before_anything_is_published(device, command, params, code):
    """Devices without meta, unknown commands and bad params raise CommandError in prepare."""
    publisher = FakePublisher()
    with pytest.raises(CommandError) as refused:
        router(publisher).prepare(device, command, params, None)
    assert refused.value.code == code
    assert publisher.sent == []


def test_prepare_builds_topic_payload_and_caps_the_timeout():
    """prepare gives the convention's topic and payload, a fresh id, and a capped timeout."""
    r = router(FakePublisher(), default_timeout_ms=5000, max_timeout_ms=10000)
    one = r.prepare(THERMO, "set_target", {"target": 21.5}, None)
    two = r.prepare(THERMO, "set_target", {"target": 21.5}, 999_999)
    assert one.topic == "p/thermo-1/cmd/set_target"
    assert orjson.loads(one.payload) == {"id": one.command_id, "params": {"target": 21.5}}
    assert one.command_id != two.command_id
    assert (one.timeout_s, two.timeout_s) == (5.0, 10.0)


async def run(r: CommandRouter, command: PreparedCommand):
    accepted: list[str] = []
    task = asyncio.create_task(r.execute(command, accepted.append))
    return task, accepted


async def awaiting_answer(command: str = "toggle", params: dict | None = None):
    """A router, and its command to thermo-1 published and now waiting for the device's answer:
    (router, command, the execute task, the ids it accepted)."""
    publisher = FakePublisher()
    r = router(publisher)
    prepared = r.prepare(THERMO, command, params or {}, 5000)
    task, accepted = await run(r, prepared)
    async with asyncio.timeout(5):
        await publisher.published.wait()
    return r, prepared, task, accepted


async def test_ok_path_returns_the_device_result():
    """After the publish, the device's ok result resolves the command; pending is then empty."""
    r, command, task, accepted = await awaiting_answer("set_target", {"target": 20})
    assert r.pending == 1
    assert accepted == [command.command_id]
    assert r.resolve(CommandResult("thermo-1", command.command_id, "ok", {"target": 20}))
    outcome = await asyncio.wait_for(task, 5)
    assert (outcome.status, outcome.result, outcome.error) == ("ok", {"target": 20}, None)
    assert outcome.rtt_ms > 0
    assert outcome.fields()["command_id"] == command.command_id
    assert r.pending == 0


async def test_error_result_carries_the_device_message():
    """A device's error result gives status error with its message."""
    r, command, task, _ = await awaiting_answer()
    r.resolve(CommandResult("thermo-1", command.command_id, "error", None, "stuck"))
    outcome = await asyncio.wait_for(task, 5)
    assert (outcome.status, outcome.error) == ("error", "stuck")


async def test_no_answer_within_the_timeout_is_timeout():
    """A device that never answers gives status timeout; the pending entry is removed."""
    r = router(FakePublisher())
    command = r.prepare(THERMO, "toggle", {}, 20)
    task, accepted = await run(r, command)
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.status == "timeout"
    assert accepted == [command.command_id]
    assert r.pending == 0


async def test_unconfirmed_publish_is_unknown_and_never_accepted():
    """PublishUnconfirmed gives status unknown, without command_accepted."""
    r = router(FakePublisher(fail=PublishUnconfirmed("no PUBACK")))
    command = r.prepare(THERMO, "toggle", {}, 5000)
    task, accepted = await run(r, command)
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.status == "unknown"
    assert accepted == []
    assert r.pending == 0


async def test_broker_unavailable_propagates_and_leaves_nothing_pending():
    """BrokerUnavailable is raised to the caller (nothing was published); pending is empty."""
    r = router(FakePublisher(fail=BrokerUnavailable("down")))
    command = r.prepare(THERMO, "toggle", {}, 5000)
    task, accepted = await run(r, command)
    with pytest.raises(BrokerUnavailable):
        await asyncio.wait_for(task, 5)
    assert accepted == []
    assert r.pending == 0


async def test_result_from_another_device_is_not_accepted():
    """A result naming the command id but sent by a different device is ignored."""
    r, command, task, _ = await awaiting_answer()
    assert not r.resolve(CommandResult("bare-1", command.command_id, "ok"))
    assert not r.resolve(CommandResult("thermo-1", "c-unknown", "ok"))
    assert not task.done()
    assert r.resolve(CommandResult("thermo-1", command.command_id, "ok"))
    assert not r.resolve(CommandResult("thermo-1", command.command_id, "ok"))  # only once
    assert (await asyncio.wait_for(task, 5)).status == "ok"
    assert r.pending == 0


async def test_cancelled_command_leaves_nothing_pending():
    """Cancelling a waiting command (client gone) removes its pending entry."""
    r, _, task, _ = await awaiting_answer()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert r.pending == 0


class ArmRecorder(NativeConvention):
    """A native convention that records when it is armed, and says whether anything can
    confirm the command (`confirmable`)."""

    def __init__(self, publisher: FakePublisher, confirmable: bool) -> None:
        super().__init__(prefix="p")
        self.publisher = publisher
        self.confirmable = confirmable
        self.armed: list[tuple[str, str, dict, int]] = []

    def arm(self, device, command_id, before):
        # How many publishes had returned (been acknowledged) when the router armed.
        self.armed.append((device, command_id, dict(before), len(self.publisher.sent)))
        return self.confirmable


def armed_router(publisher: FakePublisher, confirmable: bool) -> tuple[CommandRouter, ArmRecorder]:
    convention = ArmRecorder(publisher, confirmable)
    return CommandRouter({"native": convention}, publisher, CommandsConfig(), "gw-test"), convention


async def test_the_echo_is_armed_after_the_puback_with_the_values_before_the_command():
    """arm runs once the publish returned (PUBACK), with the device's values from prepare time,
    not later ones; an armed command then waits for its answer as before."""
    publisher = FakePublisher()
    r, convention = armed_router(publisher, confirmable=True)
    device, _ = Registry(RegistryConfig()).observe("thermo-1", "native")
    device.meta = THERMO.meta
    device.values["temperature"] = (1.0, 20.5)
    command = r.prepare(device, "toggle", {}, 5000)
    device.values["temperature"] = (2.0, 22.0)  # a report after prepare is not "before"
    task, accepted = await run(r, command)
    async with asyncio.timeout(5):
        await publisher.published.wait()
    await asyncio.sleep(0)
    assert convention.armed == [("thermo-1", command.command_id, {"temperature": (1.0, 20.5)}, 1)]
    assert accepted == [command.command_id]
    r.resolve(CommandResult("thermo-1", command.command_id, "ok"))
    assert (await asyncio.wait_for(task, 5)).status == "ok"


async def test_a_command_nothing_can_confirm_ends_unconfirmed_after_the_puback():
    """When arm says no report can confirm it, the outcome is `unconfirmed` at once (accepted
    first), never `ok`; result and error are null."""
    publisher = FakePublisher()
    r, _ = armed_router(publisher, confirmable=False)
    command = r.prepare(THERMO, "toggle", {}, 60_000)
    task, accepted = await run(r, command)
    outcome = await asyncio.wait_for(task, 5)
    assert (outcome.status, outcome.result, outcome.error) == ("unconfirmed", None, None)
    assert accepted == [command.command_id]
    assert r.pending == 0


async def test_nothing_unpublished_is_armed():
    """A publish that fails or is not acknowledged never arms the echo."""
    for fail in (BrokerUnavailable("down"), PublishUnconfirmed("no PUBACK")):
        publisher = FakePublisher(fail=fail)
        r, convention = armed_router(publisher, confirmable=True)
        task, _ = await run(r, r.prepare(THERMO, "toggle", {}, 5000))
        with contextlib.suppress(BrokerUnavailable):
            await asyncio.wait_for(task, 5)
        assert convention.armed == []
