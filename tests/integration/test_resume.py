"""Reconnecting clients resume their stream without holes, or are told they could not."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import AddDevice, StartGateway
from tests.support.gateway import GatewayUnderTest, WsClient


async def _subscribed_client(
    gw: GatewayUnderTest, **resume: Any
) -> tuple[WsClient, dict[str, Any]]:
    client = await gw.connected_client()
    request: dict[str, Any] = {"type": "subscribe", "devices": ["*"]}
    if resume:
        request["resume"] = resume
    reply = await client.request(request, "subscribed")
    return client, reply


async def _read_until(client: WsClient, value: int) -> int:
    """Read readings frames until `value` of metric n arrives; return the last seq seen."""
    while True:
        frame = await client.expect(lambda f: f["type"] == "readings")
        if any(row[1] == "n" and row[3] == value for row in frame["data"]):
            return int(frame["seq"])


async def test_resume_replays_what_was_missed_with_continuous_seq(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """Readings published while a client was away arrive after resume, seq continuing unbroken."""
    device = await add_device("r-1")
    client, _ = await _subscribed_client(gw)
    await device.telemetry({"n": 1})
    last_seq = await _read_until(client, 1)
    session = client.hello["session"]
    await client.ws.close()

    for n in range(2, 6):  # published while no connection exists
        await device.telemetry({"n": n})
    resumed, reply = await _subscribed_client(
        gw, epoch=client.hello["epoch"], session=session, seq=last_seq
    )
    assert reply["recovered"] is True
    values: list[int] = []
    seqs: list[int] = []
    while 5 not in values:
        frame = await resumed.expect(lambda f: f["type"] in ("readings", "snapshot"))
        assert frame["type"] == "readings", "a recovered stream gets no new snapshot"
        seqs.append(frame["seq"])
        values.extend(row[3] for row in frame["data"] if row[1] == "n")
    assert values == [2, 3, 4, 5]
    assert seqs == list(range(last_seq + 1, last_seq + 1 + len(seqs)))


async def test_resume_with_a_stale_epoch_sends_a_fresh_snapshot(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """An epoch from an earlier gateway run cannot resume: recovered false, then a snapshot."""
    await add_device("r-2")
    client, reply = await _subscribed_client(gw, epoch="not-this-run", session="c-x", seq=3)
    assert reply["recovered"] is False
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    assert [d["id"] for d in snapshot["devices"]] == ["r-2"]


async def test_resume_fails_when_the_buffer_lost_frames(
    start_gateway: StartGateway, add_device: AddDevice
) -> None:
    """If frames after the client's seq left the resume buffer, it is told recovered false."""
    gw = await start_gateway({"ws.resume_buffer_bytes": 1})  # keeps only the newest frame
    device = await add_device("r-3")
    client, _ = await _subscribed_client(gw)
    await device.telemetry({"n": 1})
    first = await _read_until(client, 1)
    await device.telemetry({"n": 2})
    await _read_until(client, 2)
    await client.ws.close()
    resumed, reply = await _subscribed_client(
        gw, epoch=client.hello["epoch"], session=client.hello["session"], seq=first - 1
    )
    assert reply["recovered"] is False
    await resumed.expect(lambda f: f["type"] == "snapshot")
