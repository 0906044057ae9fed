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


def _subscribe(resume: dict[str, Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"type": "subscribe", "devices": ["*"]}
    if resume is not None:
        request["resume"] = resume
    return request


async def _snapshot_of(client: WsClient, subscription: str) -> dict[str, Any]:
    return await client.expect(
        lambda f: f["type"] == "snapshot" and f["subscription"] == subscription
    )


async def test_a_bogus_resume_is_not_recovered_when_the_filter_is_already_subscribed(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """A subscribe whose resume names another epoch, an unknown session or a seq the stream never
    sent is told recovered false, with a fresh snapshot, even though this connection already
    holds a subscription with the same filter (issue 12, item 5a). Fails before the fix: the
    existing filter answered recovered true whatever the resume said."""
    await add_device("r-5")
    client, first = await _subscribed_client(gw)
    await _snapshot_of(client, first["subscription"])
    epoch, session = client.hello["epoch"], client.hello["session"]
    for bogus in (
        {"epoch": "not-this-run", "session": session, "seq": 1},
        {"epoch": epoch, "session": "c-nobody", "seq": 1},
        {"epoch": epoch, "session": session, "seq": 999},
    ):
        reply = await client.request(_subscribe(bogus), "subscribed")
        assert reply["recovered"] is False, bogus
        assert reply["subscription"] != first["subscription"]
        snapshot = await _snapshot_of(client, reply["subscription"])
        assert [d["id"] for d in snapshot["devices"]] == ["r-5"]


async def test_after_a_verified_resume_only_the_same_resume_recovers_again(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """Re-sending a subscribe of the adopted stream with the same resume is recovered (its
    subscription carried over); the same filter with a different session is not."""
    device = await add_device("r-6")
    client, _ = await _subscribed_client(gw)
    await device.telemetry({"n": 1})
    last_seq = await _read_until(client, 1)
    await client.ws.close()
    resume = {"epoch": client.hello["epoch"], "session": client.hello["session"], "seq": last_seq}
    resumed, reply = await _subscribed_client(gw, **resume)
    assert reply["recovered"] is True
    again = await resumed.request(_subscribe(resume), "subscribed")
    assert again == {**reply, "id": again["id"]}
    other = await resumed.request(_subscribe({**resume, "session": "c-other"}), "subscribed")
    assert other["recovered"] is False
    await _snapshot_of(resumed, other["subscription"])


async def test_an_event_sent_after_the_clients_seq_is_replayed_on_resume(
    gw: GatewayUnderTest, add_device: AddDevice
) -> None:
    """A device that went offline after the last frame the client processed: the resumed stream
    replays that event with its seq, so the client learns the device is offline (issue 12, item
    5b). Fails before the fix: device events were not sequenced, the resume said recovered true
    and the device stayed online in the client."""
    device = await add_device("r-7")
    client, _ = await _subscribed_client(gw)
    await device.telemetry({"n": 1})
    last_seq = await _read_until(client, 1)
    await device.client.publish(device.topic("status"), b"offline", qos=1, retain=True)
    await client.event(lambda e: e["device"]["id"] == "r-7" and e["device"]["status"] == "offline")
    await client.ws.close()  # as if the connection dropped before the client applied that frame

    resume = {"epoch": client.hello["epoch"], "session": client.hello["session"], "seq": last_seq}
    resumed, reply = await _subscribed_client(gw, **resume)
    assert reply["recovered"] is True
    event = await resumed.event(lambda e: e["device"]["id"] == "r-7")
    assert event["device"]["status"] == "offline"
    replayed = [f for f in resumed.seen if f["type"] == "readings"]
    assert replayed[0]["seq"] == last_seq + 1
    assert not [f for f in resumed.seen if f["type"] == "snapshot"]


async def test_a_coalesced_frame_is_replayed_with_its_notice(
    start_gateway: StartGateway, add_device: AddDevice
) -> None:
    """A client that fell behind got a coalesced frame; resumed from before it, the replay still
    says coalesced and how many readings were dropped (issue 12, item 5b: the lagging notice was
    not sequenced and a resume lost it)."""
    gw = await start_gateway({"ws.outbox_max_bytes": 1})  # every batch coalesces
    device = await add_device("r-8")
    client, _ = await _subscribed_client(gw)
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    for n in (1, 2, 3):
        await device.telemetry({"n": n})
    frames: list[dict[str, Any]] = []
    while not any(r[1] == "n" and r[3] == 3 for f in frames for r in f["data"]):
        frames.append(await client.expect(lambda f: f["type"] == "readings"))
    assert all(f.get("coalesced") for f in frames)
    await client.ws.close()
    resume = {"epoch": client.hello["epoch"], "session": client.hello["session"]}
    resumed, reply = await _subscribed_client(gw, **resume, seq=snapshot["seq"])
    assert reply["recovered"] is True
    for sent in frames:
        again = await resumed.expect(lambda f: f["type"] == "readings")
        assert again == sent
