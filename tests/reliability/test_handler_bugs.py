"""A bug on the telemetry path: the message that trips it is dropped, the gateway keeps serving.

The fault is injected into the registry (one method patched to raise for one device) because
the gateway has no such bug to trip on purpose; it stands for any bug past decoding (registry,
hub, command results). What is under test is everything around it, all real: a real broker
delivering a retained message, the read path, the link's guard, the pipeline, the WebSocket
client. The patched method is not the thing under test, it is the fault.
"""

from __future__ import annotations

import logging

import orjson


async def test_a_bug_on_a_retained_message_neither_loops_nor_stops_ingest(
    start_gateway, publisher, prefix, caplog, monkeypatch
):
    """A retained message whose handling raises is dropped and counted, logged once with its
    traceback (a second one within the minute is counted, not logged); the link stays up (no
    reconnect, so no loop on the retained message), and the next good message is delivered."""
    gateway = await start_gateway()
    registry = gateway.runtime.registry
    apply_samples = registry.apply_samples

    def buggy(device, samples, now):
        if device.id == "bug-1":
            raise RuntimeError("injected bug")
        return apply_samples(device, samples, now)

    monkeypatch.setattr(registry, "apply_samples", buggy)
    caplog.set_level(logging.ERROR, logger="gateway.ingest")
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    bad = f"{prefix}/bug-1/telemetry"
    try:
        for n in (1, 2):
            await publisher.publish(bad, orjson.dumps({"n": n}), qos=1, retain=True)
        good = orjson.dumps({"n": 3, "ts": 1764090000})
        await publisher.publish(f"{prefix}/good-1/telemetry", good, qos=1)
        # The broker keeps one connection's messages in order: the bad ones were handled first.
        assert await client.readings(1) == [["good-1", "n", 1764090000, 3.0]]
    finally:
        await publisher.publish(bad, b"", qos=1, retain=True)
    link = gateway.runtime.link
    assert (link.connected, link.stats.connects, link.stats.connect_failures) == (True, 1, 0)
    assert link.stats.message_errors == 2
    logged = [r for r in caplog.records if r.exc_info and "injected bug" in str(r.exc_info[1])]
    assert len(logged) == 1
    assert "bug-1" in logged[0].getMessage()
    status, text = await gateway.get("/metrics")
    assert status == 200
    assert "iotgw_message_errors_total 2.0" in text
