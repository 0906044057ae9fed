"""A cold start with the broker already holding the fleet's retained meta and status: readiness
and snapshots wait until all of it has arrived (gateway/sync.py, gateway/snapshots.py)."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest

from gateway.sync import TOPIC_ROOT
from tests.support.devices import mqtt_client
from tests.support.faultproxy import FaultProxy
from tests.support.gateway import WAIT_S, GatewayUnderTest
from tests.support.mosquitto import Mosquitto

FLEET = 2000
META = {"type": "thermo", "metrics": {"t": {"unit": "°C"}}, "commands": {}}
SETTINGS = {"registry.max_devices": 2 * FLEET}


async def load_fleet(broker: Mosquitto, prefix: str, count: int = FLEET) -> None:
    """Retained meta and status for `count` devices; returns once the broker has stored them."""
    async with mqtt_client(broker.host, broker.port) as client:
        for i in range(count):
            meta = orjson.dumps({**META, "name": f"thermo {i}"})
            await client.publish(f"{prefix}/d{i:04d}/meta", meta, qos=0, retain=True)
            await client.publish(f"{prefix}/d{i:04d}/status", b"online", qos=0, retain=True)
        # One connection's packets are handled in order: this PUBACK comes after all of the above.
        await client.publish(f"{prefix}-loaded", b"", qos=1)


def complete(devices: list[dict]) -> bool:
    return len(devices) == FLEET and all(
        d["meta"] is not None and d["status"] == "online" for d in devices
    )


async def test_readyz_says_ready_only_once_every_retained_device_is_in(
    start_gateway, broker: Mosquitto, prefix: str
) -> None:
    """The retained state has all arrived when the gateway's sync marker comes back: by then the
    registry holds every device with its meta and status, and /readyz answers 200 with them."""
    await load_fleet(broker, prefix)
    gateway: GatewayUnderTest = await start_gateway(SETTINGS, wait_connected=False)
    runtime = gateway.runtime
    async with asyncio.timeout(WAIT_S):
        await runtime.sync.complete.wait()
    # No await since the event was set: nothing else could have arrived meanwhile.
    devices = list(runtime.registry)
    assert len(devices) == FLEET
    assert all(d.meta is not None and d.status == "online" for d in devices)
    status, body = await gateway.get("/readyz")
    assert (status, body["broker"], body["synced"], body["devices"]) == (
        200,
        "connected",
        True,
        FLEET,
    )


#: A broker ACL that lets anonymous clients do anything but use the gateway's marker topic: the
#: ACL of docs/operations.md with its `iotgw/sync/#` line forgotten, as it were.
REFUSING_THE_MARKER = {"acl": f"topic readwrite #\ntopic deny {TOPIC_ROOT}#\n"}


@pytest.mark.parametrize(
    "own_broker", [REFUSING_THE_MARKER], ids=["acl-denies-marker"], indirect=True
)
async def test_a_marker_that_never_returns_holds_readiness_until_the_sync_timeout(
    start_gateway, own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """If the marker cannot come back (a broker ACL refusing its topic), /readyz answers 503
    while the link is up, then 200 after broker.sync_timeout_s, and the give-up is recorded and
    logged naming the topic."""
    # Not waiting for readiness, which is what this test is about (the fixture would).
    gateway = await start_gateway(
        {"broker.sync_timeout_s": 3.0}, on=own_broker, wait_connected=False
    )
    await gateway.connected_client()
    status, body = await gateway.get("/readyz")
    assert (status, body["broker"], body["synced"]) == (503, "connected", False)
    async with asyncio.timeout(WAIT_S):
        await gateway.runtime.sync.complete.wait()
    assert gateway.runtime.sync.timed_out
    assert (await gateway.get("/readyz"))[0] == 200
    topic = gateway.runtime.sync.topic
    assert [r for r in caplog.records if r.levelno == logging.WARNING and topic in r.getMessage()]


async def test_a_subscription_made_before_the_retained_state_arrived_gets_all_of_it(
    start_gateway, broker: Mosquitto, prefix: str
) -> None:
    """Subscribing while the link cannot connect yet: `subscribed` comes at once, the snapshot
    only once the retained state has arrived, and then it holds every device; no `device`
    frame precedes it."""
    await load_fleet(broker, prefix)
    async with FaultProxy(broker.port) as proxy:
        proxy.set_mode("reset")  # the gateway's connects fail until the proxy passes
        gateway = await start_gateway({**SETTINGS, "broker.url": proxy.url}, wait_connected=False)
        client = await gateway.connect()
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        assert gateway.runtime.status.holding_snapshots
        proxy.set_mode("pass")
        while (frame := await client.recv())["type"] == "gateway":
            pass  # the link coming up
        assert frame["type"] == "snapshot"
        assert gateway.runtime.sync.first.is_set()
        assert complete(frame["devices"])
        await gateway.stop()
