"""History through the gateway, for each durable backend: readings that arrive over MQTT are
stored, answered by WebSocket and REST (JSON, streamed CSV) within the token's read rights,
shown in /readyz and /metrics, and come back after a restart."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.gateway import GatewayUnderTest, announced
from tests.support.history import BACKENDS, history_settings

THERMO = {"type": "thermostat", "name": "Hall", "metrics": {}, "commands": {}}


@pytest.fixture(params=BACKENDS)
async def settings(request, tmp_path) -> dict[str, Any]:
    return await history_settings(request, tmp_path)


async def stored(gateway: GatewayUnderTest) -> None:
    """Wait until everything the gateway queued for history is committed."""
    await gateway.runtime.store.drained()


async def publish_series(add_device, device_id: str, start: float, count: int) -> None:
    device = await add_device(device_id, THERMO)
    for i in range(count):
        await device.telemetry({"temperature": 20.0 + i % 10, "mode": "heat"}, ts=start + i)


async def test_ws_ranged_history_answers_raw_then_buckets(start_gateway, add_device, settings):
    """A ranged `history` request answers raw points within max_points, buckets beyond."""
    gateway = await start_gateway(settings)
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["th-1"]}, "subscribed")
    start = time.time() - 200
    await publish_series(add_device, "th-1", start, 120)
    await client.readings(240, where=lambda r: r[0] == "th-1")
    await stored(gateway)
    raw = await client.request(
        {"type": "history", "device": "th-1", "metric": "temperature", "from": start - 1,
         "to": start + 200, "max_points": 500}, "history",
    )  # fmt: skip
    assert len(raw["points"]) == 120
    assert raw["points"][0] == [pytest.approx(start), 20.0]
    bucketed = await client.request(
        {"type": "history", "device": "th-1", "metric": "temperature", "from": start - 1,
         "to": start + 200, "max_points": 10}, "history",
    )  # fmt: skip
    assert len(bucketed["buckets"]) <= 10
    assert sum(b[4] for b in bucketed["buckets"]) == 120
    assert (min(b[1] for b in bucketed["buckets"]), max(b[2] for b in bucketed["buckets"])) == (
        20.0,
        29.0,
    )
    text = await client.request(
        {"type": "history", "device": "th-1", "metric": "mode", "from": start - 1,
         "max_points": 5}, "history",
    )  # fmt: skip
    assert text["truncated"] is True
    assert [p[1] for p in text["points"]] == ["heat"] * 5


async def test_ws_history_errors(start_gateway, add_device, settings):
    """Unknown metrics are not_found; mixed forms and inverted ranges are bad_request."""
    gateway = await start_gateway(settings)
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["th-2"]}, "subscribed")
    await publish_series(add_device, "th-2", time.time() - 10, 1)
    await client.readings(2, where=lambda r: r[0] == "th-2")
    await stored(gateway)
    base = {"type": "history", "device": "th-2"}
    missing = await client.request({**base, "metric": "nope", "from": 0}, "error")
    assert missing["code"] == "not_found"
    mixed = await client.request({**base, "metric": "temperature", "from": 0, "limit": 3}, "error")
    assert mixed["code"] == "bad_request"
    backwards = await client.request({**base, "metric": "temperature", "from": 10, "to": 5})
    assert backwards["code"] == "bad_request"
    recent = await client.request({**base, "metric": "temperature", "limit": 1}, "history")
    assert len(recent["points"]) == 1  # the in-memory form still works


async def test_rest_history_json_and_csv(start_gateway, add_device, settings):
    """REST answers JSON like the WebSocket, and streams every raw point as CSV."""
    gateway = await start_gateway(settings)
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["th-3"]}, "subscribed")
    start = time.time() - 100
    await publish_series(add_device, "th-3", start, 30)
    await client.readings(60, where=lambda r: r[0] == "th-3")
    await stored(gateway)
    path = f"/api/devices/th-3/history?metric=temperature&from={start - 1}&max_points=5"
    status, body = await gateway.get(path)
    assert status == 200
    assert sum(b[4] for b in body["buckets"]) == 30
    status, text = await gateway.get("/api/devices/th-3/history?metric=temperature&format=csv")
    assert status == 200
    lines = text.strip().split("\r\n")
    assert lines[0] == "time,value"
    assert len(lines) == 31
    assert float(lines[1].split(",")[0]) == pytest.approx(start)
    status, text = await gateway.get(
        "/api/devices/th-3/history?metric=mode", headers={"Accept": "text/csv"}
    )
    assert text.strip().split("\r\n")[1].endswith(",heat")
    status, body = await gateway.get("/api/devices/th-3/history?metric=temperature&from=x")
    assert (status, body["code"]) == (400, "bad_request")


async def test_rest_history_keeps_to_the_tokens_read_globs(start_gateway, add_device, settings):
    """A token reads history only of devices its read globs match (others are not_found)."""
    tokens = [{"name": "viewer", "token": "v-secret", "read": ["th-*"], "command": []}]
    gateway = await start_gateway({**settings, "auth.tokens": tokens})
    client = await gateway.connect()
    await client.request({"type": "auth", "token": "v-secret"}, "authenticated")
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    await publish_series(add_device, "pump-4", time.time() - 10, 1)
    await publish_series(add_device, "th-4", time.time() - 10, 1)
    await client.readings(2, where=lambda r: r[0] == "th-4")
    await stored(gateway)
    auth = {"Authorization": "Bearer v-secret"}
    status, body = await gateway.get("/api/devices/th-4/history?metric=temperature", headers=auth)
    assert status == 200
    assert len(body["points"]) == 1
    status, body = await gateway.get("/api/devices/pump-4/history?metric=temperature", headers=auth)
    assert (status, body["code"]) == (404, "not_found")
    status, _ = await gateway.get("/api/devices/th-4/history?metric=temperature")
    assert status == 401


async def test_readyz_and_metrics_show_the_store(start_gateway, add_device, settings):
    """/readyz carries the store's backend and state; /metrics counts written points."""
    gateway = await start_gateway(settings)
    status, body = await gateway.get("/readyz")
    assert status == 200
    assert body["history"] == {"backend": settings["history.backend"], "status": "ok", "reason": ""}
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["th-5"]}, "subscribed")
    await publish_series(add_device, "th-5", time.time() - 10, 3)
    await client.readings(6, where=lambda r: r[0] == "th-5")
    await stored(gateway)
    _, text = await gateway.get("/metrics")
    assert "iotgw_history_up 1.0" in text.splitlines()
    written = next(
        line for line in text.splitlines() if line.startswith("iotgw_history_points_written_total")
    )
    assert float(written.split()[-1]) >= 6


async def test_values_and_history_come_back_after_a_restart(start_gateway, add_device, settings):
    """A gateway started on the same store has the device's last values and recent points
    before it is ready, with no device publishing anything."""
    first = await start_gateway(settings)
    client = await first.connect()
    await client.request({"type": "subscribe", "devices": ["th-6"]}, "subscribed")
    start = time.time() - 50
    await publish_series(add_device, "th-6", start, 20)
    await client.readings(40, where=lambda r: r[0] == "th-6")
    await first.stop()
    second = await start_gateway({**settings, "conventions.native.prefix": "nobody-publishes"})
    status, device = await second.get("/api/devices/th-6")
    assert status == 200
    assert device["values"]["temperature"] == [pytest.approx(start + 19), 29.0]
    assert device["values"]["mode"][1] == "heat"
    again = await second.connect()
    recent = await again.request(
        {"type": "history", "device": "th-6", "metric": "temperature"}, "history"
    )
    assert len(recent["points"]) == 20


async def test_commands_are_audited_and_shown_to_those_who_may_command(
    start_gateway, add_device, settings
):
    """A WebSocket and a REST command each leave one audit record (principal, address, params,
    outcome, rtt); /api/audit shows them to a token that may command the device, refuses a
    read-only token for that device, and lists nothing of it to that token."""
    tokens = [
        {"name": "operator", "token": "op-secret", "read": ["*"], "command": ["pump-*"]},
        {"name": "viewer", "token": "view-secret", "read": ["*"], "command": []},
    ]
    gateway = await start_gateway({**settings, "auth.tokens": tokens})
    client = await gateway.connect()
    await client.request({"type": "auth", "token": "op-secret"}, "authenticated")
    await client.request({"type": "subscribe", "devices": ["pump-1"]}, "subscribed")
    await add_device("pump-1")
    await client.event(lambda e: announced(e["device"]))
    result = await client.request(
        {"type": "command", "device": "pump-1", "command": "set_target",
         "params": {"target": 19}}, "command_result",
    )  # fmt: skip
    assert result["status"] == "ok"
    operator = {"Authorization": "Bearer op-secret"}
    status, _ = await gateway.post(
        "/api/devices/pump-1/commands/set_target", json={"params": {"target": 20}},
        headers=operator,
    )  # fmt: skip
    assert status == 200
    await stored(gateway)
    status, body = await gateway.get("/api/audit?device=pump-1", headers=operator)
    assert status == 200
    entries = body["entries"]
    assert [(e["via"], e["params"], e["status"]) for e in entries] == [
        ("rest", {"target": 20}, "ok"),
        ("ws", {"target": 19}, "ok"),
    ]
    assert {e["principal"] for e in entries} == {"operator"}
    assert all(e["remote"] == "127.0.0.1" and e["rtt_ms"] > 0 for e in entries)
    viewer = {"Authorization": "Bearer view-secret"}
    status, body = await gateway.get("/api/audit?device=pump-1", headers=viewer)
    assert (status, body["code"]) == (403, "forbidden")
    status, body = await gateway.get("/api/audit", headers=viewer)
    assert (status, body["entries"]) == (200, [])


async def test_ten_thousand_metrics_on_one_device_are_capped_by_the_registry(
    start_gateway, add_device, settings
):
    """A device sending 10,000 different metrics gets at most max_metrics_per_device series in
    the store; the rest are refused and counted, not stored."""
    gateway = await start_gateway({**settings, "registry.max_metrics_per_device": 64})
    client = await gateway.connect()
    await client.request({"type": "subscribe", "devices": ["wide-1"]}, "subscribed")
    device = await add_device("wide-1", THERMO)
    now = time.time() - 5
    for chunk in range(10):
        await device.telemetry({f"m{chunk * 1000 + i}": i for i in range(1000)}, ts=now)
    await device.telemetry({"m0": -1}, ts=now + 1)  # a last message, to know all arrived
    # Messages arrive in order: the last one's reading means every earlier one was handled.
    await client.readings(1, where=lambda r: r[0] == "wide-1" and r[1] == "m0" and r[3] == -1)
    await stored(gateway)
    store = gateway.runtime.store
    assert gateway.runtime.registry.stats.metrics_refused == 10_000 - 64
    assert await store.query("wide-1", "m63", 0, now + 10, 10) is not None
    assert await store.query("wide-1", "m64", 0, now + 10, 10) is None
    assert store.stats.written == 65
