"""The broker link's read path (gateway.mqtt_reader) against a real broker.

It reads its socket in chunks and handles every complete packet in a chunk before it waits for
the socket again; PUBLISH packets at QoS 0 and 1 are decoded and acknowledged by the gateway,
everything else by paho. What these tests guard against: packets left in the buffer with no
further readable event to fetch them (the tail of a burst would arrive only with the next
message, or never), packets split across chunk boundaries, and missing acknowledgements (the
broker stops sending after `max_inflight_messages`, 20 by default, unacknowledged ones).
"""

from __future__ import annotations

import asyncio

import orjson

from gateway.mqtt_reader import READ_CHUNK

DEVICES = 10


def owner(n: int) -> str:
    return f"burst-{n % DEVICES}"


async def collect_n(client, count: int) -> dict[str, list[int]]:
    """Per device, the values of metric `n` in arrival order, until `count` have arrived."""
    rows = await client.readings(count, where=lambda row: row[1] == "n")
    arrived: dict[str, list[int]] = {}
    for device, _metric, _time, value in rows:
        arrived.setdefault(device, []).append(int(value))
    return arrived


def expected(numbers: range) -> dict[str, list[int]]:
    wanted: dict[str, list[int]] = {}
    for n in numbers:
        wanted.setdefault(owner(n), []).append(n)
    return wanted


async def test_a_burst_of_small_messages_arrives_complete_and_in_order(gw, publisher, prefix):
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    numbers = range(1, 3001)
    # ~30 bytes each, published all at once: many packets per chunk, the last one ends a burst.
    await asyncio.gather(
        *(
            publisher.publish(f"{prefix}/{owner(n)}/telemetry", orjson.dumps({"n": n}))
            for n in numbers
        )
    )
    assert await collect_n(client, len(numbers)) == expected(numbers)


async def test_packets_larger_than_a_read_chunk_and_split_across_chunks(gw, publisher, prefix):
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    numbers = range(1, 41)
    for n in numbers:
        # Valid JSON padded with whitespace to 0.3 to 2.3 read chunks, so packet boundaries fall
        # anywhere in a chunk and some packets need several reads.
        padding = b" " * (READ_CHUNK * (n % 3) + READ_CHUNK // 3 + n)
        await publisher.publish(f"{prefix}/{owner(n)}/telemetry", orjson.dumps({"n": n}) + padding)
    assert await collect_n(client, len(numbers)) == expected(numbers)


async def test_qos_1_messages_are_acknowledged(gw, publisher, prefix):
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    numbers = range(1, 201)  # ten times mosquitto's default in-flight window
    await asyncio.gather(
        *(
            publisher.publish(f"{prefix}/{owner(n)}/telemetry", orjson.dumps({"n": n}), qos=1)
            for n in numbers
        )
    )
    assert await collect_n(client, len(numbers)) == expected(numbers)


async def test_qos_2_messages_go_through_paho_and_are_completed(start_gateway, publisher, prefix):
    gateway = await start_gateway({"broker.qos": 2})
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    numbers = range(1, 61)
    await asyncio.gather(
        *(
            publisher.publish(f"{prefix}/{owner(n)}/telemetry", orjson.dumps({"n": n}), qos=2)
            for n in numbers
        )
    )
    assert await collect_n(client, len(numbers)) == expected(numbers)
