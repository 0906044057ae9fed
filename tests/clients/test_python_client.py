"""The Python client against the real gateway: subscribe, resume, resync, commands, history."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway.client import (
    Backoff,
    Client,
    CommandRefused,
    CommandTimeout,
    ConnectError,
    DeviceError,
    DeviceEvent,
    NotFound,
    Reading,
    Resync,
    Snapshot,
    Subscription,
    Unauthorized,
)
from tests.e2e.stack import Gateway, gateway_config
from tests.integration.conftest import AddDevice, StartGateway
from tests.support.gateway import WAIT_S, GatewayUnderTest

FAST = Backoff(min_s=0.02, max_s=0.2, restart_s=0.1, back_off_s=0.05)


async def next_of(
    sub: Subscription, kind: type, where: Callable[[Any], bool] = lambda _: True
) -> Any:
    """The next event of `kind` matching `where` from the subscription (others skipped)."""
    async with asyncio.timeout(WAIT_S):
        async for event in sub:
            if isinstance(event, kind) and where(event):
                return event
    raise AssertionError("the subscription ended")


async def test_subscribe_gives_a_snapshot_then_readings_and_events(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """A subscription yields its snapshot first, then typed readings and device events."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 20.5})
    async with Client(gw.ws_url) as client:
        sub = client.subscribe(["thermo-*"], ["temperature"])
        snapshot = await next_of(sub, Snapshot)
        assert [d.id for d in snapshot.devices] == ["thermo-1"]
        await device.telemetry({"temperature": 21.5, "humidity": 40})
        reading = await next_of(sub, Reading, lambda r: r.value == 21.5)
        assert (reading.device, reading.metric) == ("thermo-1", "temperature")
        await device.client.publish(device.topic("status"), b"offline", qos=1, retain=True)
        event = await next_of(sub, DeviceEvent)
        assert (event.event, event.device.status) == ("status", "offline")


@pytest.fixture
async def restartable(broker, prefix):
    """A gateway on a fixed port that can be stopped and started again (tests/e2e/stack.py)."""
    gateway = await Gateway(gateway_config(broker, prefix)).start()
    yield gateway
    await gateway.stop()


def ws_url(gateway: Gateway) -> str:
    return gateway.url.replace("http://", "ws://") + "ws"


async def test_a_dropped_connection_resumes_the_stream_without_a_gap(
    restartable: Gateway, add_device: AddDevice
) -> None:
    """The link drops: the client resumes its stream; the readings sent meanwhile arrive once,
    in order, with no snapshot and no resync."""
    device = await add_device("thermo-1")
    async with Client(ws_url(restartable), backoff=FAST) as client:
        sub = client.subscribe(["thermo-1"])
        await next_of(sub, Snapshot)
        await device.telemetry({"n": 0})
        await next_of(sub, Reading, lambda r: r.value == 0)
        assert restartable.drop_connections() >= 1
        for n in range(1, 6):
            await device.telemetry({"n": n})
        got = []
        while len(got) < 5:
            event = await next_of(sub, object)
            assert not isinstance(event, Snapshot | Resync), event
            if isinstance(event, Reading):
                got.append(event.value)
        assert got == [1, 2, 3, 4, 5]
        assert client.stats.resumed == 1
        assert client.stats.resynced == 0


async def test_a_gateway_restart_is_announced_by_a_resync(
    restartable: Gateway, add_device: AddDevice
) -> None:
    """The gateway restarts: the stream cannot continue, so the subscription gets a Resync with
    the fresh snapshot, then live readings again."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 20})
    async with Client(ws_url(restartable), backoff=FAST) as client:
        sub = client.subscribe(["thermo-1"])
        await next_of(sub, Snapshot)
        await restartable.stop()
        await restartable.start()
        resync = await next_of(sub, Resync)
        assert resync.reason == "the gateway restarted"
        assert [d.id for d in resync.snapshot.devices] == ["thermo-1"]
        await device.telemetry({"temperature": 24.5})
        await next_of(sub, Reading, lambda r: r.value == 24.5)


async def test_command_outcomes_are_typed(
    gw: GatewayUnderTest, add_device: AddDevice, start_gateway: StartGateway
) -> None:
    """ok returns the result; a device error, a refusal and a timeout raise their own errors."""

    def answer(command: str, params: dict[str, Any]) -> tuple[str, Any, str | None] | None:
        if command == "set_mode":
            return ("error", None, "mode locked")
        if command == "toggle":
            return None  # silent: a timeout
        return ("ok", params, None)

    await add_device("thermo-1", answer=answer)
    async with Client(gw.ws_url) as client:
        result = await client.command("thermo-1", "set_target", {"target": 21.5})
        assert result.status == "ok"
        assert result.result == {"target": 21.5}
        with pytest.raises(DeviceError, match="mode locked"):
            await client.command("thermo-1", "set_mode", {"mode": "heat"})
        with pytest.raises(CommandRefused) as refused:
            await client.command("thermo-1", "set_target", {"target": 99})
        assert refused.value.code == "bad_params"
        with pytest.raises(CommandRefused) as unknown:
            await client.command("nobody", "set_target", {"target": 20})
        assert unknown.value.code == "not_found"
        with pytest.raises(CommandTimeout):
            await client.command("thermo-1", "toggle", timeout=0.3)


async def test_history_and_devices(gw: GatewayUnderTest, add_device: AddDevice) -> None:
    """history() returns typed points (recent and ranged forms); devices() lists the fleet;
    an unknown device's history raises NotFound."""
    device = await add_device("thermo-1")
    async with Client(gw.ws_url) as client:
        sub = client.subscribe(["thermo-1"])
        await next_of(sub, Snapshot)  # readings sent from now on come as readings
        for i in range(3):
            await device.telemetry({"temperature": 20 + i}, ts=1000.0 + i)
        await next_of(sub, Reading, lambda r: r.value == 22)
        recent = await client.history("thermo-1", "temperature")
        assert recent.points == ((1000.0, 20), (1001.0, 21), (1002.0, 22))
        ranged = await client.history("thermo-1", "temperature", 1000.5, 1002.5)
        assert ranged.points == ((1001.0, 21), (1002.0, 22))
        assert (ranged.from_, ranged.to) == (1000.5, 1002.5)
        with pytest.raises(NotFound):
            await client.history("nobody", "temperature")
        devices = await client.devices()
        assert [(d.id, d.values["temperature"][1]) for d in devices] == [("thermo-1", 22)]


async def test_first_connection_errors_are_clear(start_gateway: StartGateway) -> None:
    """A port with nothing on it, a path that is not the WebSocket and a refused token each
    raise at `async with`, with a one-line reason."""
    gw = await start_gateway({"auth.tokens": [{"token": "secret"}]})
    with pytest.raises(ConnectError, match=r"cannot connect to ws://127\.0\.0\.1:1/ws"):
        async with Client("ws://127.0.0.1:1/ws"):
            pass
    with pytest.raises(ConnectError, match="not an iotgw WebSocket endpoint"):
        async with Client(gw.base_url + "/nothing-here"):
            pass
    with pytest.raises(Unauthorized, match="refused the token"):
        async with Client(gw.ws_url, token="wrong"):
            pass
    with pytest.raises(Unauthorized, match="requires a token"):
        async with Client(gw.ws_url):
            pass
    async with Client(gw.base_url, token="secret") as client:  # http://host:port → ws://…/ws
        assert client.hello is not None
