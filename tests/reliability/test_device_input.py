"""Whatever devices publish: a flood of distinct ids against the registry cap, and hostile
payloads and topics through a real broker. Each refusal is counted by reason, nothing refused
reaches a client, ingest carries on, memory and /metrics stay bounded."""

from __future__ import annotations

import orjson
import pytest

from tests.reliability.helpers import rss_bytes
from tests.support.metrics import metric

MAX_DEVICES = 2000
ROUND = 25_000  # distinct ids per round; two rounds


async def scrape(gateway) -> str:
    status, body = await gateway.get("/metrics")
    assert status == 200
    return body


async def sentinel_seen(client, publisher, prefix: str, n: int) -> None:
    """Publish one good reading after whatever came before, on the same connection, and wait for
    it: MQTT keeps one publisher's order, so everything before it has been through ingest."""
    await publisher.publish(f"{prefix}/zz-sentinel/telemetry", orjson.dumps({"n": n, "ts": n}))
    await client.readings(1, within=60, where=lambda r: r[0] == "zz-sentinel" and r[3] == n)


async def test_device_id_flood_is_capped(start_gateway, publisher, prefix, figures):
    """50,000 distinct device ids at QoS 0 against registry.max_devices=2000: the registry stops
    at the cap, iotgw_devices_refused counts every refused id, /metrics stays small with no
    per-device label, and resident memory plateaus (the second 25,000 ids add next to nothing)."""
    gateway = await start_gateway({"registry.max_devices": MAX_DEVICES})
    runtime = gateway.runtime
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["zz-sentinel"]}, "subscribed")
    await sentinel_seen(client, publisher, prefix, 0)
    refused_before = runtime.registry.stats.devices_refused
    ok_before = runtime.pipeline.stats.messages[("native", "ok")]
    rss = [rss_bytes()]
    body = b'{"t": 1}'
    for r in range(2):
        for i in range(ROUND):
            await publisher.publish(f"{prefix}/flood-{r}-{i}/telemetry", body, qos=0)
        await sentinel_seen(client, publisher, prefix, r + 1)
        rss.append(rss_bytes())
    delivered = runtime.pipeline.stats.messages[("native", "ok")] - ok_before - 2  # sentinels
    refused = runtime.registry.stats.devices_refused - refused_before
    assert len(runtime.registry) == MAX_DEVICES
    assert refused == delivered - (MAX_DEVICES - 1)  # the sentinel holds one place
    assert delivered >= ROUND  # the broker may drop QoS 0 under load, not most of it
    text = await scrape(gateway)
    assert metric(text, "iotgw_devices_refused_total") == runtime.registry.stats.devices_refused
    assert "flood-" not in text
    assert len(text) < 32_768, f"/metrics is {len(text)} bytes"
    growth = rss[2] - rss[1]
    figures(
        f"{delivered} ids delivered, registry {len(runtime.registry)}, refused {refused};"
        f" /metrics {len(text)} bytes; RSS {rss[0] >> 20} -> {rss[1] >> 20} -> {rss[2] >> 20} MiB"
        f" (second round +{growth / 2**20:.1f} MiB)"
    )
    assert growth < 16 * 2**20, f"RSS grew {growth >> 20} MiB over the second {ROUND} ids"


HOSTILE = [
    # (case, topic leaf or None for telemetry of "bad-1", payload, counted reason or None)
    ("invalid JSON", "bad-1/telemetry", b'{"t": ', "invalid_json"),
    ("invalid UTF-8", "bad-1/telemetry", b'{"t": "\xff\xfe"}', "invalid_json"),
    ("NaN", "bad-1/telemetry", b'{"t": NaN}', "invalid_json"),
    ("Infinity", "bad-1/telemetry", b'{"t": -Infinity}', "invalid_json"),
    ("1e400", "bad-1/telemetry", b'{"t": 1e400}', "invalid_json"),
    ("2^53+1", "bad-1/telemetry", b'{"t": 9007199254740993}', "bad_value"),
    ("-2^63", "bad-1/telemetry", b'{"t": -9223372036854775808}', "bad_value"),
    # orjson before 3.10 parses objects of any depth (the gateway's own depth cap refuses them);
    # newer orjson stops at 1,024 levels: either way the message is counted, never forwarded.
    (
        "1025-deep objects",
        "bad-1/telemetry",
        b'{"a":' * 1025 + b"1" + b"}" * 1025,
        ("too_deep", "invalid_json"),
    ),
    (
        "1025-deep array",
        "bad-1/telemetry",
        b'{"t":' + b"[" * 1025 + b"]" * 1025 + b"}",
        ("bad_value", "invalid_json"),  # the same orjson difference, for arrays
    ),
    ("9 deep", "bad-1/telemetry", b'{"a":' * 10 + b"1" + b"}" * 10, "too_deep"),
    ("array value", "bad-1/telemetry", b'{"t": [1, 2]}', "bad_value"),
    ("control-char metric", "bad-1/telemetry", b'{"t\\u0001": 1}', "bad_metric_name"),
    ("not an object", "bad-1/telemetry", b"[1, 2, 3]", "bad_payload"),
    ("empty telemetry", "bad-1/telemetry", b"", "invalid_json"),
    ("oversize", "bad-1/telemetry", b'{"t": "' + b"x" * 20_000 + b'"}', "oversize"),
    ("huge id", "d" * 65 + "/telemetry", b'{"t": 1}', "bad_device_id"),
    # Mosquitto itself drops a client publishing a topic with control characters, so those ids
    # are covered by test_fuzz.py; a space or a non-ASCII letter does get through.
    ("space in id", "a b/telemetry", b'{"t": 1}', "bad_device_id"),
    ("unicode id", "thermo-é/telemetry", b'{"t": 1}', "bad_device_id"),
    ("extra levels", "bad-1/x/telemetry", b'{"t": 1}', None),  # no subscription matches
    ("unknown leaf", "bad-1/secrets", b'{"t": 1}', None),
    ("bad status", "bad-1/status", b"maybe", "bad_status"),
    ("bad meta", "bad-1/meta", b'{"commands": 5}', "bad_meta"),
    ("bad result", "bad-1/result", b'{"id": 5}', "bad_result"),
]


@pytest.fixture
async def hostile_gateway(start_gateway):
    return await start_gateway({"broker.max_payload_bytes": 16384})


async def test_hostile_device_input_is_counted_and_never_forwarded(
    hostile_gateway, publisher, prefix, figures
):
    """Each hostile payload or topic is refused, counted under its reason in
    iotgw_decode_errors_total, forwarded to no client, and ingest keeps working after it."""
    gateway = hostile_gateway
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    await sentinel_seen(client, publisher, prefix, 0)
    counted = {}
    for n, (case, leaf, payload, reason) in enumerate(HOSTILE, start=1):
        before = await scrape(gateway)
        await publisher.publish(f"{prefix}/{leaf}", payload, qos=1)
        await sentinel_seen(client, publisher, prefix, n)
        after = await scrape(gateway)
        if reason is not None:
            reasons = reason if isinstance(reason, tuple) else (reason,)
            delta = sum(
                metric(after, "iotgw_decode_errors_total", reason=r)
                - metric(before, "iotgw_decode_errors_total", reason=r)
                for r in reasons
            )
            assert delta >= 1, f"{case}: not counted as {' or '.join(reasons)}"
            counted[case] = reason
    forwarded = [r for f in client.seen if f["type"] == "readings" for r in f["data"]]
    assert {r[0] for r in forwarded} == {"zz-sentinel"}, forwarded[:5]
    devices = {e["device"]["id"] for e in client.seen_events()}
    assert devices <= {"zz-sentinel", "bad-1"}, devices
    figures(f"{len(counted)} hostile inputs counted by reason; 0 forwarded; ingest alive")


async def test_empty_retained_payloads_clear_state(hostile_gateway, publisher, prefix):
    """Empty retained status and meta clear the device's state (status unknown, meta null): device
    events, not decode errors."""
    gateway = hostile_gateway
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["clr-1"]}, "subscribed")
    meta = {"type": "lamp", "name": "Lamp", "metrics": {}, "commands": {}}
    await publisher.publish(f"{prefix}/clr-1/meta", orjson.dumps(meta), qos=1, retain=True)
    await publisher.publish(f"{prefix}/clr-1/status", b"online", qos=1, retain=True)
    await client.event(lambda e: e["device"]["status"] == "online" and e["device"]["meta"])
    errors_before = sum(gateway.runtime.pipeline.stats.decode_errors.values())
    await publisher.publish(f"{prefix}/clr-1/status", b"", qos=1, retain=True)
    await client.event(lambda e: e["event"] == "status" and e["device"]["status"] == "unknown")
    await publisher.publish(f"{prefix}/clr-1/meta", b"", qos=1, retain=True)
    # Status and meta both cleared: the device is forgotten too, and in one batch its `meta`
    # event and its removal coalesce to the latter, which carries the cleared meta.
    cleared = await client.event(lambda e: e["device"]["meta"] is None)
    assert cleared["event"] in ("meta", "removed")
    assert sum(gateway.runtime.pipeline.stats.decode_errors.values()) == errors_before


async def test_device_clock_errors_are_flagged_not_trusted(hostile_gateway, publisher, prefix):
    """A non-numeric ts is counted (bad_ts) and replaced by the receive time; a ts years off is
    kept as the device's claim but counted (clock_skew); both readings still arrive."""
    gateway = hostile_gateway
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["clk-1"]}, "subscribed")
    topic = f"{prefix}/clk-1/telemetry"
    await publisher.publish(topic, b'{"t": 1, "ts": "yesterday"}', qos=1)
    (row,) = await client.readings(1)
    assert row[1:] == ["t", row[2], 1]
    assert abs(row[2] - gateway.runtime.status.broker_changed_at) < 3600 * 24 * 365
    await publisher.publish(topic, b'{"t": 2, "ts": 1.0}', qos=1)
    assert await client.readings(1) == [["clk-1", "t", 1.0, 2]]
    errors = gateway.runtime.pipeline.stats.decode_errors
    assert errors[("native", "bad_ts")] == 1
    assert errors[("native", "clock_skew")] == 1
