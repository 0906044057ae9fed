"""Token authentication and the Origin check, on the real gateway."""

from __future__ import annotations

import aiohttp
import pytest

TOKENS = {"auth.tokens": [{"token": "s3cret", "read": ["a-*"], "command": []}]}


@pytest.fixture
async def secured(start_gateway, add_device):
    """A gateway with one token that may read a-* and command nothing; devices a-1 and b-1."""
    gateway = await start_gateway(TOKENS)
    client = await gateway.connected_client(params={"token": "s3cret"})  # query-string token
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    # b-1 first, from the same publisher order: once a-1's reading is in, both are registered.
    for device_id in ("b-1", "a-1"):
        device = await add_device(device_id)
        await device.telemetry({"temperature": 20}, ts=1.0)
    await client.readings(1, where=lambda r: r[0] == "a-1")
    await client.close()
    return gateway


async def authenticated(gateway):
    client = await gateway.connect()
    assert client.hello["auth"] == "required"
    reply = await client.request({"type": "auth", "token": "s3cret"})
    assert reply["type"] == "authenticated"
    return client


async def test_request_before_auth_closes_with_4500(secured):
    """With tokens configured, a first request other than auth is refused and closes 4500."""
    client = await secured.connect()
    await client.send({"type": "subscribe", "id": 1, "devices": ["*"]})
    assert await client.closed() == 4500
    assert not [f for f in client.seen if f["type"] in ("subscribed", "snapshot")]


async def test_bad_token_closes_with_4500(secured):
    """An auth frame with a wrong token is refused and the connection closed with 4500."""
    client = await secured.connect()
    await client.send({"type": "auth", "id": 1, "token": "wrong"})
    assert await client.closed() == 4500


async def test_snapshot_and_readings_limited_to_readable_devices(secured, add_device):
    """An authenticated client subscribed to * sees only devices its token may read."""
    client = await authenticated(secured)
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    assert [d["id"] for d in snapshot["devices"]] == ["a-1"]
    b = await add_device("b-1")
    a = await add_device("a-1")
    await b.telemetry({"temperature": 30}, ts=2.0)
    await a.telemetry({"temperature": 31}, ts=3.0)  # after b-1's, from another connection
    rows = await client.readings(1, where=lambda r: r[3] == 31)
    assert rows == [["a-1", "temperature", 3.0, 31]]
    seen = {r[0] for f in client.seen if f["type"] == "readings" for r in f["data"]}
    seen |= {e["device"]["id"] for e in client.seen_events()}
    assert "b-1" not in seen


async def test_unreadable_device_history_is_not_found(secured):
    """history of a device outside the token's read globs answers not_found (no probing)."""
    client = await authenticated(secured)
    reply = await client.request({"type": "history", "device": "b-1", "metric": "temperature"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")


async def test_command_without_command_grant_is_forbidden(secured):
    """A token with an empty command list gets forbidden for a readable device."""
    client = await authenticated(secured)
    reply = await client.request({"type": "command", "device": "a-1", "command": "toggle"})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")


async def test_rest_requires_bearer_token(secured):
    """REST calls without a Bearer token are 401; with it, only readable devices are listed."""
    status, body = await secured.get("/api/devices")
    assert status == 401
    assert body["code"] == "unauthorized"
    status, body = await secured.get("/api/devices", headers={"Authorization": "Bearer s3cret"})
    assert status == 200
    assert [d["id"] for d in body["devices"]] == ["a-1"]
    status, _ = await secured.get("/api/devices/b-1", headers={"Authorization": "Bearer s3cret"})
    assert status == 404


async def test_cross_site_origin_is_refused_on_upgrade(gw):
    """A WebSocket upgrade with an Origin from another site is refused with 403."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await gw.connect(headers={"Origin": "http://evil.example"})
    assert refused.value.status == 403
    same_site = await gw.connect(headers={"Origin": gw.base_url})
    assert same_site.hello["type"] == "hello"
