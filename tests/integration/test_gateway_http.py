"""The HTTP side (health, readiness, device REST API, /metrics) and ingest of bad MQTT input."""

from __future__ import annotations

import pytest

from tests.support.gateway import announced, wait_for_device


def counter(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    sample = name + (wanted if labels else "")
    for line in metrics_text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return 0.0


async def test_healthz_and_readyz_report_ok_when_connected(gw):
    """/healthz is 200 ok and names the instance; /readyz is 200 with broker connected."""
    instance = gw.runtime.instance_id
    assert await gw.get("/healthz") == (200, {"status": "ok", "instance": instance})
    status, body = await gw.get("/readyz")
    assert status == 200
    assert body["broker"] == "connected"


async def test_device_list_and_detail_have_the_snapshot_shape(gw, add_device):
    """GET /api/devices and /api/devices/{id} return devices with status, meta and values."""
    device = await add_device("rest-1")
    client = await gw.connect()
    await client.request({"type": "subscribe", "devices": ["rest-1"]}, "subscribed")
    await device.telemetry({"temperature": 19.5}, ts=50.0)
    await client.readings(1)

    status, listing = await gw.get("/api/devices")
    assert status == 200
    [entry] = [d for d in listing["devices"] if d["id"] == "rest-1"]
    assert entry["status"] == "online"
    assert entry["meta"] == device.meta
    assert entry["values"] == {"temperature": [50.0, 19.5]}
    status, detail = await gw.get("/api/devices/rest-1")
    assert status == 200
    assert detail == entry


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/devices/ghost"),
        ("post", "/api/devices/ghost/commands/toggle"),
        ("post", "/api/devices/rest-2/commands/no_such_command"),
    ],
)
async def test_unknown_device_or_command_is_404_not_found(gw, add_device, method, path):
    """REST calls naming an unknown device or command answer 404 with code not_found."""
    await add_device("rest-2")
    await wait_for_device(gw, "rest-2", announced)
    status, body = await getattr(gw, method)(path, **({"json": {}} if method == "post" else {}))
    assert status == 404
    assert body["code"] == "not_found"


async def test_post_command_round_trip(gw, add_device, prefix):
    """POST /api/devices/{id}/commands/{name} publishes the command and returns the result."""
    device = await add_device("rest-3")
    await wait_for_device(gw, "rest-3", announced)
    status, body = await gw.post(
        "/api/devices/rest-3/commands/set_target", json={"params": {"target": 22}}
    )
    received = device.commands.get_nowait()
    assert status == 200
    assert body["status"] == "ok"
    assert body["result"] == {"target": 22}
    assert body["command_id"] == received.id
    assert body["rtt_ms"] > 0
    assert received.topic == f"{prefix}/rest-3/cmd/set_target"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"params": {"target": 500}}, "bad_params"),
        ({"params": {"target": 20}, "timeout_ms": -1}, "bad_request"),
        ({"params": {"target": 20}, "timeout_ms": True}, "bad_request"),
        ([1, 2], "bad_request"),
    ],
)
async def test_post_command_refused_is_400(gw, add_device, body, code):
    """A refused REST command answers 400 with the protocol's error code."""
    await add_device("rest-4")
    await wait_for_device(gw, "rest-4", announced)
    status, reply = await gw.post("/api/devices/rest-4/commands/set_target", json=body)
    assert (status, reply["code"]) == (400, code)


@pytest.mark.parametrize(
    ("topic_leaf", "payload", "reason"),
    [
        ("dev-1/telemetry", b"{not json", "invalid_json"),
        ("dev-1/telemetry", b'{"x": 1e400}', "invalid_json"),
        ("dev-1/telemetry", b"[1, 2]", "bad_payload"),
        ("dev-1/telemetry", b'{"x": "' + b"y" * 2000 + b'"}', "oversize"),
        ("bad$id/telemetry", b'{"x": 1}', "bad_device_id"),
        ("dev-1/status", b"maybe", "bad_status"),
        ("dev-1/meta", b'{"commands": []}', "bad_meta"),
        ("dev-1/result", b'{"id": "c-nobody", "status": "ok"}', "unmatched_result"),
    ],
)
async def test_malformed_mqtt_payload_is_counted_and_ingest_continues(
    start_gateway, publisher, prefix, topic_leaf, payload, reason
):
    """A bad MQTT message is counted in iotgw_decode_errors_total by reason; a good reading
    published after it is still delivered."""
    gateway = await start_gateway({"broker.max_payload_bytes": 1024})
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    await publisher.publish(f"{prefix}/{topic_leaf}", payload, qos=1)
    await publisher.publish(f"{prefix}/dev-2/telemetry", b'{"ok": 1, "ts": 5}', qos=1)
    assert await client.readings(1, where=lambda r: r[0] == "dev-2") == [["dev-2", "ok", 5.0, 1]]
    status, text = await gateway.get("/metrics")
    assert status == 200
    assert counter(text, "iotgw_decode_errors_total", convention="native", reason=reason) == 1


async def test_metrics_endpoint_exposes_gateway_counters(gw):
    """/metrics serves Prometheus text with the broker and client gauges, and names the
    instance the hello frame names."""
    client = await gw.connect()
    status, text = await gw.get("/metrics")
    assert status == 200
    instance = client.hello["instance"]
    assert (
        counter(
            text, "iotgw_instance_info", instance_id=instance, version=gw.runtime.status.version
        )
        == 1
    )
    assert counter(text, "iotgw_broker_connected") == 1
    assert counter(text, "iotgw_ws_clients") == 1
