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
import socket

import orjson

from gateway.mqtt_reader import READ_CHUNK
from tests.support.devices import mqtt_client

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


async def small_after_big(device, topics: tuple[str, str], arrived) -> float:
    """Seconds from publishing a 48 MiB message to the arrival of a 30-byte one published after
    it (`arrived()` returns once the small one is in)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    await device.publish(topics[0], BIG, qos=1)
    await device.publish(topics[1], SMALL, qos=1)
    await arrived()
    return loop.time() - started


BIG = b'{"blob": "' + b"x" * (48 << 20) + b'"}'
SMALL = orjson.dumps({"n": 1, "ts": 1764090000.0})


async def test_an_oversize_publish_does_not_stall_ingest(start_gateway, roomy_broker, prefix):
    """A 48 MiB PUBLISH over broker.max_payload_bytes is dropped as it streams in and counted as
    oversize: a small reading published after it arrives within a few times what a plain MQTT
    client on the same broker needs to receive both (it once took 24 s at 100% CPU), and the link
    stays up. The broker's own message_size_limit is lifted so that the gateway meets the packet."""
    async with mqtt_client(roomy_broker.host, roomy_broker.port) as device:
        # The machine's pace: a plain client reading both messages whole, with no cap.
        async with mqtt_client(roomy_broker.host, roomy_broker.port) as plain:
            await plain.subscribe(f"base/{prefix}/#", qos=1)

            async def plain_got_small() -> None:
                async for message in plain.messages:
                    if message.payload == SMALL:
                        return

            base = f"base/{prefix}"
            baseline = await small_after_big(
                device, (f"{base}/big/telemetry", f"{base}/small/telemetry"), plain_got_small
            )

        gateway = await start_gateway(on=roomy_broker)
        client = await gateway.connected_client()
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        took = await small_after_big(
            device,
            (f"{prefix}/big-1/telemetry", f"{prefix}/small-1/telemetry"),
            lambda: client.readings(1, where=lambda row: row[0] == "small-1"),
        )
    assert took <= 5 * baseline, f"small reading after {took:.2f}s; a plain client {baseline:.2f}s"
    assert gateway.runtime.pipeline.stats.decode_errors[("native", "oversize")] == 1
    assert gateway.runtime.link.stats.connects == 1


async def test_the_broker_socket_sends_without_delay(gw):
    """TCP_NODELAY is on the link's socket on either read path (aiomqtt sets socket options only
    on a plain socket, and the fast path hands it a view): without it a command's PUBLISH waits
    for the ACK of the gateway's previous packet, ~40 ms on Linux."""
    client = gw.runtime.link._client
    assert client is not None
    sock = client._client.socket()  # paho's public accessor: the view or the socket itself
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_the_read_path_is_the_one_asked_for(gw, path_settings):
    """`--public-paths` really runs the public read path (and by default the fast one)."""
    assert gw.runtime.link.fast_reader is path_settings.get("broker.fast_reader", True)
