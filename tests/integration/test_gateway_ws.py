"""The WebSocket protocol end to end: a real broker, the real gateway app, real clients."""

from __future__ import annotations

import asyncio
import socket
import time

import orjson
import pytest

from tests.support.gateway import announced, wait_for_device


async def test_hello_frame_describes_server_and_limits(gw):
    """A new connection is greeted with hello: protocol 1, server version, epoch, limits."""
    client = await gw.connect()
    hello = client.hello
    assert hello["protocol"] == 2
    assert hello["server"].startswith("iotgw ")
    assert hello["epoch"] == gw.runtime.status.epoch
    assert hello["auth"] == "none"
    assert hello["broker"] == "connected"
    assert hello["session"].startswith("c-")
    assert hello["limits"] == {
        "max_message_bytes": 65536,
        "max_subscriptions": 32,
        "history_length": 1000,
        "stale_after_s": 120.0,
        "history_rate": 20.0,
        "history_burst": 200,
        "history_in_flight": 4,
        "subscribe_rate": 5.0,
        "subscribe_burst": 64,
    }
    assert abs(hello["time"] - time.time()) < 60


async def test_subscribe_replies_subscribed_then_snapshot_then_live_readings(gw, add_device):
    """subscribe → subscribed → snapshot (retained meta/status, latest values) → readings."""
    watcher = await gw.connect()
    await watcher.request({"type": "subscribe", "devices": ["thermo-1"]}, "subscribed")
    device = await add_device("thermo-1")  # retained meta, then status, then the telemetry:
    await device.telemetry({"temperature": 21.4, "battery": {"volt": 3.7}}, ts=1000.5)
    await watcher.readings(2)  # ...so once these arrive, all three have been ingested

    client = await gw.connect()
    await client.send({"type": "subscribe", "id": "sub-a", "devices": ["thermo-*"]})
    subscribed = await client.recv()
    snapshot = await client.recv()
    assert subscribed == {"type": "subscribed", "id": "sub-a", "subscription": "s1"}
    assert snapshot["type"] == "snapshot"
    assert snapshot["seq"] == 1  # the stream's first sequenced frame
    assert snapshot["subscription"] == "s1"
    [entry] = snapshot["devices"]
    assert entry["id"] == "thermo-1"
    assert entry["status"] == "online"
    assert entry["name"] == "Living room"
    assert entry["type"] == "thermostat"
    assert entry["meta"] == device.meta
    assert entry["values"] == {"temperature": [1000.5, 21.4], "battery.volt": [1000.5, 3.7]}

    await device.telemetry({"temperature": 21.5, "humidity": 40, "mode": "heat"}, ts=1001.0)
    first = await client.expect(lambda f: f["type"] == "readings")
    await device.telemetry({"temperature": 21.6}, ts=1002.0)
    second = await client.expect(lambda f: f["type"] == "readings")
    assert first["seq"] == 2
    assert sorted(first["data"]) == sorted(
        [
            ["thermo-1", "temperature", 1001.0, 21.5],
            ["thermo-1", "humidity", 1001.0, 40],
            ["thermo-1", "mode", 1001.0, "heat"],
        ]
    )
    assert second == {
        "type": "readings",
        "seq": 3,
        "data": [["thermo-1", "temperature", 1002.0, 21.6]],
    }


async def test_device_first_seen_after_subscribing_is_announced_before_its_readings(
    gw, publisher, prefix
):
    """A new device matching a subscription gets a `device` status event before its readings."""
    client = await gw.connect()
    await client.request({"type": "subscribe", "devices": ["new-*"]}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    assert snapshot["devices"] == []
    await publisher.publish(f"{prefix}/new-1/telemetry", b'{"power": 5, "ts": 7.0}', qos=1)
    frame = await client.expect(lambda f: f["type"] == "readings")
    [event] = frame["events"]  # announced in the frame of its first readings, applied first
    assert event["event"] == "status"
    assert event["device"]["id"] == "new-1"
    assert event["device"]["status"] == "unknown"
    assert frame["data"] == [["new-1", "power", 7.0, 5]]


async def test_metrics_filter_limits_snapshot_values_and_readings(gw, add_device):
    """With `metrics` globs, only matching metrics appear in the snapshot and in readings."""
    device = await add_device("meter-7")
    await device.telemetry({"power": 1, "voltage": 230}, ts=1.0)
    await wait_for_device(gw, "meter-7", announced)
    client = await gw.connect()
    await client.request(
        {"type": "subscribe", "devices": ["meter-*"], "metrics": ["pow*"]}, "subscribed"
    )
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    values = snapshot["devices"][0]["values"]
    assert "voltage" not in values
    await device.telemetry({"power": 2, "voltage": 231}, ts=2.0)
    await device.telemetry({"voltage": 232}, ts=3.0)
    await device.telemetry({"power": 4}, ts=4.0)
    # (ts 1.0 may come again: it can still be in the batch the snapshot was taken during)
    rows = await client.readings(2, where=lambda r: r[2] > 1.0)
    assert rows == [["meter-7", "power", 2.0, 2], ["meter-7", "power", 4.0, 4]]
    assert all(r[1] == "power" for f in client.seen if f["type"] == "readings" for r in f["data"])


async def test_unsubscribe_stops_readings_of_that_subscription(gw, publisher, prefix):
    """After `unsubscribed`, readings only the removed subscription matched are not sent."""
    client = await gw.connect()
    a = await client.request({"type": "subscribe", "devices": ["dev-a"]}, "subscribed")
    await client.request({"type": "subscribe", "devices": ["dev-b"]}, "subscribed")
    await publisher.publish(f"{prefix}/dev-a/telemetry", b'{"x": 1, "ts": 1}', qos=1)
    assert await client.readings(1) == [["dev-a", "x", 1.0, 1]]

    reply = await client.request({"type": "unsubscribe", "subscription": a["subscription"]})
    assert reply["type"] == "unsubscribed"
    assert reply["subscription"] == a["subscription"]
    # One publisher, so the broker keeps this order: a leaked dev-a reading would come first.
    await publisher.publish(f"{prefix}/dev-a/telemetry", b'{"x": 2, "ts": 2}', qos=1)
    await publisher.publish(f"{prefix}/dev-b/telemetry", b'{"y": 3, "ts": 3}', qos=1)
    rows = await client.readings(1, where=lambda r: r[0] == "dev-b")
    assert rows == [["dev-b", "y", 3.0, 3]]
    after = client.seen[client.seen.index(reply) :]
    assert not [r for f in after if f["type"] == "readings" for r in f["data"] if r[0] == "dev-a"]


async def test_unsubscribe_unknown_subscription_is_not_found(gw):
    """Unsubscribing an id the connection does not hold answers not_found."""
    client = await gw.connect()
    reply = await client.request({"type": "unsubscribe", "subscription": "s99"})
    assert reply["type"] == "error"
    assert reply["code"] == "not_found"


async def test_two_clients_with_the_same_subscription_both_receive(gw, publisher, prefix):
    """Clients with identical subscriptions each receive every reading."""
    clients = [await gw.connect(), await gw.connect()]
    for client in clients:
        await client.request({"type": "subscribe", "devices": ["pair-*"]}, "subscribed")
        await client.expect(lambda f: f["type"] == "snapshot")
    await publisher.publish(f"{prefix}/pair-1/telemetry", b'{"v": 1.5, "ts": 10}', qos=1)
    for client in clients:
        assert await client.readings(1) == [["pair-1", "v", 10.0, 1.5]]


async def test_history_returns_points_in_order_and_respects_limit_and_since(gw, add_device):
    """history answers the ring's points oldest first; limit keeps the newest; since filters."""
    device = await add_device("hist-1")
    client = await gw.connect()
    await client.request({"type": "subscribe", "devices": ["hist-1"]}, "subscribed")
    for i in range(1, 6):
        await device.telemetry({"temperature": 20 + i}, ts=float(i))
    await client.readings(5, where=lambda r: r[1] == "temperature")

    full = await client.request(
        {"type": "history", "device": "hist-1", "metric": "temperature"}, "history"
    )
    assert full["device"] == "hist-1"
    assert full["metric"] == "temperature"
    assert full["points"] == [[float(i), 20 + i] for i in range(1, 6)]
    limited = await client.request(
        {"type": "history", "device": "hist-1", "metric": "temperature", "limit": 2}, "history"
    )
    assert limited["points"] == [[4.0, 24], [5.0, 25]]
    since = await client.request(
        {"type": "history", "device": "hist-1", "metric": "temperature", "since": 3}, "history"
    )
    assert since["points"] == [[3.0, 23], [4.0, 24], [5.0, 25]]


@pytest.mark.parametrize(
    ("device", "metric"), [("hist-none", "temperature"), ("hist-2", "no-such-metric")]
)
async def test_history_of_unknown_device_or_metric_is_not_found(gw, add_device, device, metric):
    """history for a device or metric the registry does not hold answers not_found."""
    dev = await add_device("hist-2")
    client = await gw.connect()
    await client.request({"type": "subscribe", "devices": ["hist-2"]}, "subscribed")
    await dev.telemetry({"temperature": 1}, ts=1.0)
    await client.readings(1)
    reply = await client.request({"type": "history", "device": device, "metric": metric})
    assert reply["type"] == "error"
    assert reply["code"] == "not_found"


@pytest.mark.parametrize(
    ("raw", "code", "request_id"),
    [
        ("not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        ('{"type": "nope", "id": 7}', "unknown_type", 7),
        ('{"id": 8}', "unknown_type", 8),
        ('{"type": "subscribe", "id": 9}', "bad_request", 9),
        ('{"type": "subscribe", "id": 10, "devices": []}', "bad_request", 10),
        ('{"type": "history", "id": "h", "device": "x"}', "bad_request", "h"),
        (
            '{"type": "command", "id": 11, "device": "x", "command": "y", "params": 3}',
            "bad_request",
            11,
        ),
    ],
)
async def test_bad_message_gets_error_frame_and_connection_stays_usable(gw, raw, code, request_id):
    """A malformed request is answered with an error frame; a ping afterwards still gets a pong."""
    client = await gw.connect()
    await client.ws.send_str(raw)
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert error["id"] == request_id
    assert error["message"]
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"


async def test_binary_frame_is_refused_with_an_error(gw):
    """A binary frame gets a bad_request error; the connection stays usable."""
    client = await gw.connect()
    await client.ws.send_bytes(orjson.dumps({"type": "ping", "id": 1}))
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == "bad_request"
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_oversize_frame_closes_the_connection_with_1009(start_gateway):
    """A frame larger than ws.max_message_bytes closes the connection with code 1009."""
    gateway = await start_gateway({"ws.max_message_bytes": 1024})
    client = await gateway.connect()
    await client.send({"type": "ping", "id": 1, "pad": "x" * 2048})
    assert await client.closed() == 1009


async def test_too_many_subscriptions_is_refused(start_gateway):
    """Past ws.max_subscriptions, subscribe answers too_many."""
    gateway = await start_gateway({"ws.max_subscriptions": 2})
    client = await gateway.connect()
    for _ in range(2):
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    reply = await client.request({"type": "subscribe", "devices": ["*"]})
    assert reply["type"] == "error"
    assert reply["code"] == "too_many"


async def test_graceful_shutdown_closes_clients_with_1001(start_gateway):
    """Stopping the app closes every WebSocket client with 1001 (going away)."""
    gateway = await start_gateway()
    clients = [await gateway.connect(), await gateway.connect()]
    stopping = asyncio.create_task(gateway.stop())
    codes = [await client.closed() for client in clients]
    await stopping
    assert codes == [1001, 1001]
    assert all(c.ws.closed for c in clients)


@pytest.mark.parametrize("size", [65536, 0])
async def test_send_buffer_of_websocket_connections_follows_the_setting(start_gateway, size):
    """ws.send_buffer_bytes fixes SO_SNDBUF (Linux reports twice the value set); 0 leaves the
    kernel's default, autotuned buffer alone."""
    gateway = await start_gateway({"ws.send_buffer_bytes": size})
    client = await gateway.connect()
    await client.request({"type": "ping"}, "pong")
    handlers = [h for h in gateway.runner.server.connections if h.transport is not None]
    sizes = {
        h.transport.get_extra_info("socket").getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        for h in handlers
    }
    if size:
        assert sizes == {2 * size}
    else:
        assert sizes
        assert 2 * 65536 not in sizes


async def test_the_write_path_is_the_one_asked_for(gw, path_settings):
    """`--public-paths` really runs connections on aiohttp's send_frame and ping."""
    client = await gw.connected_client()
    (stream,) = gw.runtime.hub.streams
    assert stream.session is not None
    assert stream.session._socket._fast is path_settings.get("ws.fast_writer", True)
    await client.close()
