"""The broker link going away and coming back, with clients connected throughout."""

from __future__ import annotations

from tests.support.devices import tolerant_client


async def test_broker_restart_is_announced_and_readings_resume(start_gateway, own_broker, prefix):
    """Killing the broker sends gateway disconnected and makes /readyz 503; after a restart on
    the same port the gateway reconnects, resubscribes, says connected, and readings flow again."""
    gateway = await start_gateway(on=own_broker)
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    async with tolerant_client(own_broker.host, own_broker.port) as device:
        await device.publish(f"{prefix}/dev-1/telemetry", b'{"n": 1, "ts": 1}', qos=1)
        assert await client.readings(1) == [["dev-1", "n", 1.0, 1]]
        own_broker.kill()
        down = await client.expect(lambda f: f["type"] == "gateway")
        assert down["broker"] == "disconnected"
        assert isinstance(down["since"], float)
        status, body = await gateway.get("/readyz")
        assert (status, body["broker"]) == (503, "disconnected")

    own_broker.start()
    up = await client.expect(lambda f: f["type"] == "gateway")
    assert up["broker"] == "connected"
    await gateway.synced()  # the marker comes back just after "connected"
    assert (await gateway.get("/readyz"))[0] == 200
    async with tolerant_client(own_broker.host, own_broker.port) as device:
        await device.publish(f"{prefix}/dev-1/telemetry", b'{"n": 2, "ts": 2}', qos=1)
        assert await client.readings(1) == [["dev-1", "n", 2.0, 2]]
    assert gateway.runtime.link.stats.connects == 2


async def test_broker_down_at_start_then_up(start_gateway, own_broker, prefix):
    """A gateway started while the broker is down serves HTTP (readyz 503, hello disconnected)
    and connects once the broker comes up."""
    own_broker.kill()
    gateway = await start_gateway(on=own_broker, wait_connected=False)
    client = await gateway.connect()
    assert client.hello["broker"] == "disconnected"
    assert (await gateway.get("/readyz"))[0] == 503
    assert (await gateway.get("/healthz"))[0] == 200
    own_broker.start()
    up = await client.expect(lambda f: f["type"] == "gateway")
    assert up["broker"] == "connected"
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    async with tolerant_client(own_broker.host, own_broker.port) as device:
        await device.publish(f"{prefix}/dev-9/telemetry", b'{"n": 9, "ts": 9}', qos=1)
        assert await client.readings(1) == [["dev-9", "n", 9.0, 9]]


async def test_command_while_broker_down_is_unavailable(start_gateway, own_broker, add_device):
    """With the broker gone, a command to a known device answers unavailable."""
    gateway = await start_gateway(on=own_broker)
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    device = await add_device("thermo-1", on=own_broker)
    await client.event(lambda e: e["device"]["meta"] is not None)
    await device.stop()
    own_broker.kill()
    await client.expect(lambda f: f["type"] == "gateway" and f["broker"] == "disconnected")
    reply = await client.request({"type": "command", "device": "thermo-1", "command": "toggle"})
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    status, body = await gateway.post("/api/devices/thermo-1/commands/toggle", json={})
    assert (status, body["code"]) == (503, "unavailable")
