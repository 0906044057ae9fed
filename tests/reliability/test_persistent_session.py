"""An optional persistent MQTT session: what devices publish while the gateway is away arrives."""

from __future__ import annotations

import secrets

import orjson

from tests.integration.conftest import StartGateway


async def test_readings_published_while_the_gateway_was_away_arrive_on_its_return(
    start_gateway: StartGateway, publisher, prefix: str
) -> None:
    """With broker.persistent_session, QoS 1 telemetry published between two gateway runs (same
    client id) is delivered by the broker when the second run connects."""
    settings = {"broker.persistent_session": True, "broker.client_id": f"gw-{secrets.token_hex(4)}"}
    first = await start_gateway(settings)
    await first.stop()  # a clean disconnect: the broker keeps the session and queues for it
    for n in (1, 2, 3):
        await publisher.publish(
            f"{prefix}/away-1/telemetry", orjson.dumps({"n": n, "ts": 1764090000.0 + n}), qos=1
        )
    second = await start_gateway(settings)
    client = await second.connected_client()
    await client.request({"type": "subscribe", "devices": ["away-1"]}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    latest = snapshot["devices"][0]["values"]["n"][1] if snapshot["devices"] else 0
    if latest != 3:  # the queued messages were still on their way: they come as readings
        await client.readings(1, where=lambda row: row[1] == "n" and row[3] == 3)
    history = await client.request({"type": "history", "device": "away-1", "metric": "n"})
    assert [value for _, value in history["points"]] == [1, 2, 3]
