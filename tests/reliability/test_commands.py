"""Command outcomes stated truthfully: unconfirmed publishes, no silent re-sends, rate limits."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt
import orjson
import pytest

from gateway.config import CommandsConfig
from tests.support.devices import tolerant_client
from tests.support.gateway import announced, wait_for_device

TOGGLE = {"type": "command", "device": "thermo-1", "command": "toggle"}


class CommandWatch:
    """Every command publish on the real broker, seen by a plain subscriber to <prefix>/+/cmd/#."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.ids: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def start(self, prefix: str) -> CommandWatch:
        await self.client.subscribe(f"{prefix}/+/cmd/#", qos=1)
        self._task = asyncio.create_task(self._run(), name="test-command-watch")
        return self

    async def _run(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.ids.put_nowait(orjson.loads(message.payload)["id"])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def next_id(self, within: float = 10.0) -> str:
        async with asyncio.timeout(within):
            return await self.ids.get()

    async def nothing_within(self, window: float) -> list[str]:
        """Every command id seen over a bounded `window` (the caller expects none)."""
        seen = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(window):
                while True:
                    seen.append(await self.ids.get())
        return seen


@pytest.fixture
async def watch(own_broker, prefix):
    async with tolerant_client(own_broker.host, own_broker.port) as client:
        watcher = await CommandWatch(client).start(prefix)
        yield watcher
        await watcher.stop()


async def test_unacknowledged_command_is_unknown_and_never_resent(
    start_gateway, proxy, own_broker, add_device, watch, figures
):
    """A command published into a blackholed link gets status unknown (or unavailable once the
    loss is noticed), never command_accepted; after the link returns, the MQTT client does not
    re-send it (the broker sees nothing over a bounded window), while a new command goes through."""
    gateway = await start_gateway(
        {"broker.keepalive_s": 2, "broker.publish_timeout_s": 1.0}, on=proxy
    )
    await add_device("thermo-1", on=own_broker)
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    result = await client.request({**TOGGLE, "timeout_ms": 5000}, "command_result")
    assert result["status"] == "ok"
    assert await watch.next_id() == result["command_id"]

    proxy.set_mode("blackhole")
    request_id = client.next_id()
    await client.send({**TOGGLE, "id": request_id, "timeout_ms": 5000})
    answer = await client.expect(
        lambda f: f.get("id") == request_id and f["type"] in ("command_result", "error")
    )
    if answer["type"] == "command_result":
        assert answer["status"] == "unknown"
        lost_id = answer["command_id"]
    else:
        assert answer["code"] == "unavailable"
        lost_id = None
    assert not [
        f for f in client.seen if f.get("id") == request_id and f["type"] == "command_accepted"
    ]
    status, body = await gateway.post("/api/devices/thermo-1/commands/toggle", json={})
    assert (status, body.get("status", body.get("code"))) in (
        (200, "unknown"),
        (503, "unavailable"),
    )

    await client.expect(lambda f: f["type"] == "gateway" and f["broker"] == "disconnected")
    proxy.set_mode("pass")
    await client.expect(lambda f: f["type"] == "gateway" and f["broker"] == "connected")
    resent = await watch.nothing_within(3.0)  # bounded window after the link is back
    assert resent == [], f"re-sent after reconnect: {resent} (lost {lost_id})"
    fresh = await client.request({**TOGGLE, "timeout_ms": 5000}, "command_result")
    assert fresh["status"] == "ok"
    assert await watch.next_id() == fresh["command_id"]
    figures(
        f"blackholed command answered {answer.get('status') or answer.get('code')}; 0 re-sent in 3s"
    )


async def test_command_rate_limit_refuses_burst_and_publishes_nothing(
    start_gateway, own_broker, add_device, watch
):
    """Past commands.burst_per_client, commands get rate_limited at once and nothing of them is
    published; the bucket refills at rate_per_client."""
    gateway = await start_gateway(
        {"commands.burst_per_client": 3, "commands.rate_per_client": 2.0}, on=own_broker
    )
    await add_device("thermo-1", on=own_broker)
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    ids = [client.next_id() for _ in range(6)]
    for request_id in ids:
        await client.send({**TOGGLE, "id": request_id})
    replies = [
        await client.expect(
            lambda f, i=i: f.get("id") == i and f["type"] in ("command_result", "error")
        )
        for i in ids
    ]
    statuses = [r.get("status") or r["code"] for r in replies]
    assert statuses.count("ok") == 3, statuses
    assert statuses.count("rate_limited") == 3, statuses
    published = {await watch.next_id() for _ in range(3)}
    assert published == {r["command_id"] for r in replies if r["type"] == "command_result"}
    assert await watch.nothing_within(0.5) == []  # bounded window: the refused ones never went out
    # The bucket refills at 2/s: a command a second later is accepted.
    await asyncio.sleep(1.0)  # the refill interval under test, not a wait for an event
    assert (await client.request(TOGGLE, "command_result"))["status"] == "ok"


async def test_in_flight_cap(start_gateway, own_broker, add_device, watch):
    """With commands.max_in_flight_per_client commands awaiting their device, the next one is
    rate_limited and not published; once one ends, a new one is accepted again."""
    gateway = await start_gateway({"commands.max_in_flight_per_client": 2}, on=own_broker)
    await add_device("thermo-1", on=own_broker, answer=None)  # never answers
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    slow = [client.next_id() for _ in range(2)]
    await client.send({**TOGGLE, "id": slow[0], "timeout_ms": 500})
    await client.send({**TOGGLE, "id": slow[1], "timeout_ms": 60000})
    for request_id in slow:
        await client.expect(
            lambda f, i=request_id: f.get("id") == i and f["type"] == "command_accepted"
        )
    refused = await client.request(TOGGLE)
    assert (refused["type"], refused["code"]) == ("error", "rate_limited")
    assert len({await watch.next_id() for _ in range(2)}) == 2
    timed_out = await client.expect(
        lambda f: f.get("id") == slow[0] and f["type"] == "command_result"
    )
    assert timed_out["status"] == "timeout"
    accepted = await client.request({**TOGGLE, "timeout_ms": 200}, "command_accepted")
    assert await watch.next_id() == accepted["command_id"]
    assert await watch.nothing_within(0.3) == []  # the refused command never went out


async def test_rest_command_flood_is_rate_limited_like_websocket_ones(
    start_gateway, own_broker, add_device, watch
):
    """300 concurrent REST commands to one device: past the burst allowed to one address
    (default 100; its refill slowed so the count does not depend on the machine's speed) they
    are refused 429 rate_limited with Retry-After and never published, and exactly the accepted
    ones reach the broker."""
    gateway = await start_gateway({"commands.rate_per_address": 0.01}, on=own_broker)
    await add_device("thermo-1", on=own_broker)
    await wait_for_device(gateway, "thermo-1", announced)

    async def post() -> tuple[int, dict, str | None]:
        url = gateway.base_url + "/api/devices/thermo-1/commands/toggle"
        async with gateway.http.post(url, json={"timeout_ms": 5000}) as response:
            return response.status, await response.json(), response.headers.get("Retry-After")

    answers = await asyncio.gather(*(post() for _ in range(300)))
    accepted = [body["command_id"] for status, body, _ in answers if status == 200]
    refused = [(body["code"], retry) for status, body, retry in answers if status == 429]
    assert len(accepted) + len(refused) == 300, {status for status, _, _ in answers}
    assert len(accepted) == CommandsConfig().burst_per_address
    assert all(code == "rate_limited" and retry and int(retry) >= 1 for code, retry in refused)
    published = {await watch.next_id() for _ in accepted}
    assert published == set(accepted)
    assert await watch.nothing_within(0.5) == []  # bounded window: the refused ones never went out


async def test_rest_and_websocket_commands_share_the_principal_budget(
    start_gateway, own_broker, add_device, watch
):
    """One token's commands draw on one budget whichever door they use: WebSocket commands
    spend it, and the REST command past it is 429 rate_limited, never published."""
    gateway = await start_gateway(
        {"commands.burst_per_principal": 3, "commands.rate_per_principal": 0.01}, on=own_broker
    )
    await add_device("thermo-1", on=own_broker)
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    for _ in range(2):
        assert (await client.request(TOGGLE, "command_result"))["status"] == "ok"
    status, body = await gateway.post("/api/devices/thermo-1/commands/toggle", json={})
    assert (status, body["status"]) == (200, "ok")
    status, body = await gateway.post("/api/devices/thermo-1/commands/toggle", json={})
    assert (status, body["code"]) == (429, "rate_limited")
    refused = await client.request(TOGGLE)
    assert (refused["type"], refused["code"]) == ("error", "rate_limited")
    assert len({await watch.next_id() for _ in range(3)}) == 3
    assert await watch.nothing_within(0.3) == []  # bounded window: the refused ones never went out


async def test_pending_commands_are_capped_for_rest_too(
    start_gateway, own_broker, add_device, watch
):
    """With commands.max_pending commands awaiting a silent device, the next REST command is
    503 too_many with Retry-After and is not published."""
    gateway = await start_gateway({"commands.max_pending": 2}, on=own_broker)
    await add_device("thermo-1", on=own_broker, answer=None)  # never answers
    await wait_for_device(gateway, "thermo-1", announced)
    client = await gateway.connected_client()
    for _ in range(2):
        await client.request({**TOGGLE, "timeout_ms": 60000}, "command_accepted")
    async with gateway.http.post(
        gateway.base_url + "/api/devices/thermo-1/commands/toggle", json={}
    ) as response:
        body = await response.json()
        assert (response.status, body["code"]) == (503, "too_many")
        assert response.headers["Retry-After"] == "1"
    assert len({await watch.next_id() for _ in range(2)}) == 2
    assert await watch.nothing_within(0.3) == []  # bounded window: the refused one never went out
