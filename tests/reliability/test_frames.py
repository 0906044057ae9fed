"""Frame-level abuse on /ws: oversize and fragmented frames, invalid UTF-8, bad close codes,
binary frames, ping floods. The abusive connection is closed (or, for binary frames and pings,
answered) and the gateway and a healthy client beside it carry on unaffected."""

from __future__ import annotations

import struct

import orjson
import pytest

from tests.reliability.helpers import eventually
from tests.reliability.rawws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    RawWebSocket,
)
from tests.support.gateway import GatewayUnderTest

MAX_MESSAGE = 4096


@pytest.fixture
async def abused(start_gateway):
    """A gateway with a small ws.max_message_bytes."""
    return await start_gateway({"ws.max_message_bytes": MAX_MESSAGE})


async def raw(gateway: GatewayUnderTest) -> RawWebSocket:
    host, port = gateway.base_url.removeprefix("http://").split(":")
    client = await RawWebSocket.connect(host, int(port))
    hello = (await client.recv()).json()
    assert hello["type"] == "hello"
    client.session = str(hello["session"])
    return client


async def healthy_client_still_served(gateway, client, publisher, prefix, n: int) -> None:
    """The bystander gets a fresh reading, and its seq (snapshot, readings) has no gap."""
    await publisher.publish(f"{prefix}/bystander/telemetry", orjson.dumps({"n": n, "ts": n}))
    assert await client.readings(1, where=lambda r: r[3] == n) == [["bystander", "n", float(n), n]]
    seqs = [f["seq"] for f in client.seen if "seq" in f]
    assert seqs == list(range(1, len(seqs) + 1))
    assert (await gateway.get("/healthz"))[0] == 200


@pytest.fixture
async def bystander(abused):
    client = await abused.connected_client()
    await client.request({"type": "subscribe", "devices": ["bystander"]}, "subscribed")
    return client


async def gone(gateway: GatewayUnderTest, session: str) -> None:
    await eventually(
        lambda: session not in {s.id for s in gateway.runtime.hub.streams},
        10,
        f"session {session} removed",
    )


async def test_oversize_frame_closes_1009(abused, bystander, publisher, prefix):
    """A text frame over ws.max_message_bytes closes that connection with 1009; others carry on."""
    client = await raw(abused)
    client.send(OP_TEXT, b'{"type":"ping","id":1,"pad":"' + b"x" * MAX_MESSAGE + b'"}')
    _, code = await client.recv_until_close()
    assert code == 1009
    await client.close()
    await gone(abused, client.session)
    await healthy_client_still_served(abused, bystander, publisher, prefix, 1)


async def test_fragmented_oversize_message_closes_1009(abused, bystander, publisher, prefix):
    """Continuation frames that add up past ws.max_message_bytes close with 1009 too."""
    client = await raw(abused)
    client.send(OP_TEXT, b"[" + b"1," * 500, fin=False)
    for _ in range(10):
        client.send(OP_CONT, b"1," * 500, fin=False)
    _, code = await client.recv_until_close()
    assert code == 1009
    await client.close()
    await healthy_client_still_served(abused, bystander, publisher, prefix, 2)


async def test_invalid_utf8_text_frame_is_closed(abused, bystander, publisher, prefix):
    """A text frame that is not UTF-8 closes that connection (1007, invalid payload data)."""
    client = await raw(abused)
    client.send(OP_TEXT, b'{"type":"ping","id":"\xff\xfe"}')
    _, code = await client.recv_until_close()
    assert code == 1007
    await client.close()
    await gone(abused, client.session)
    await healthy_client_still_served(abused, bystander, publisher, prefix, 3)


@pytest.mark.parametrize(
    "payload",
    [
        struct.pack("!H", 999),
        struct.pack("!H", 1004),
        struct.pack("!H", 1005),
        struct.pack("!H", 1006),
        struct.pack("!H", 2999),
        struct.pack("!H", 65535),
        b"\x03",  # one byte: not a close code at all
        struct.pack("!H", 1000) + b"\xff",  # reason not UTF-8
    ],
    ids=["999", "1004", "1005", "1006", "2999", "65535", "short", "bad-reason"],
)
async def test_bad_close_frames_end_only_that_connection(
    abused, bystander, publisher, prefix, payload, figures
):
    """A close frame with a reserved or malformed code ends that connection (the gateway answers
    or drops it) and nothing else; its session is removed."""
    client = await raw(abused)
    client.send(OP_CLOSE, payload)
    _, code = await client.recv_until_close()
    figures(f"close payload {payload!r} answered with {code}")
    await client.close()
    await gone(abused, client.session)
    await healthy_client_still_served(abused, bystander, publisher, prefix, 4)


async def test_binary_frame_is_answered_and_connection_kept(abused, bystander, publisher, prefix):
    """A binary frame gets a bad_request error and the connection stays usable."""
    client = await raw(abused)
    client.send(OP_BINARY, orjson.dumps({"type": "ping", "id": 1}))
    reply = (await client.recv()).json()
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    client.send(OP_TEXT, orjson.dumps({"type": "ping", "id": 2}))
    assert (await client.recv()).json() == {"type": "pong", "id": 2}
    await client.close()
    await healthy_client_still_served(abused, bystander, publisher, prefix, 5)


async def test_ping_flood_is_answered_and_hurts_no_one(abused, bystander, publisher, prefix):
    """20,000 WebSocket pings in a burst, their pongs left unread meanwhile: the gateway answers
    every one, in order, with the ping's payload (aiohttp's autoping; pings are not rate-limited
    and are no protocol error), keeps the flooding connection open and answers its next request;
    the bystander keeps getting readings throughout."""
    client = await raw(abused)
    for _ in range(20):
        for _ in range(1000):
            client.send(OP_PING, b"flood-flood-flood")
        await client.drain()
        await healthy_client_still_served(abused, bystander, publisher, prefix, 6)
    client.send(OP_TEXT, orjson.dumps({"type": "ping", "id": 7}))
    pongs = 0
    # A close frame or a reset here fails the test: the flooding client is not cut off.
    while (frame := await client.recv(within=10)).opcode == OP_PONG:
        assert frame.payload == b"flood-flood-flood"
        pongs += 1
    assert pongs == 20_000
    assert frame.json() == {"type": "pong", "id": 7}
    assert client.session in {s.id for s in abused.runtime.hub.streams}
    await client.close()
    await healthy_client_still_served(abused, bystander, publisher, prefix, 8)


async def test_refusals_are_not_protocol_violations(abused):
    """Well-formed requests that are refused (unknown device, 30 in a row) get their error each
    and the connection stays open: 4501 is for malformed frames, not for answers a client cannot
    foresee (a device that just went away, a rate limit)."""
    client = await abused.connected_client()
    for i in range(30):
        reply = await client.request({"type": "history", "device": f"gone-{i}", "metric": "t"})
        assert (reply["type"], reply["code"]) == ("error", "not_found")
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_malformed_frames_in_a_row_close_4501(abused):
    """Twenty frames in a row that are not valid requests close the connection with 4501."""
    client = await abused.connected_client()
    for _ in range(25):
        await client.ws.send_str("{not json")
    assert await client.closed() == 4501
