"""The hub: batching readings and device events into frames, encoding once per interest."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.config import RegistryConfig, WsConfig
from gateway.hub import Hub
from gateway.matching import Selector
from gateway.registry import Registry
from gateway.stream import Stream
from tests.support.fakes import RecordingStream

LONG_MS = 60_000.0  # a batch interval no test waits for


def join(hub: Hub, name: str, *selectors: Selector) -> RecordingStream:
    stream = RecordingStream(name, hub._config)
    for selector in selectors:
        stream.subscriptions[stream.new_subscription_id()] = selector
    hub.add(stream)
    hub.resubscribe(stream)
    return stream


def readings_offered(stream: RecordingStream) -> list[bytes]:
    """The bodies of the readings frames offered to `stream`."""
    return [batch.body for kind, batch in stream.offers if kind == "batch"]


def data_of(body: bytes) -> list:
    return orjson.loads(b"{%b}" % body)["data"]


def fleet(*ids: str) -> tuple[Registry, list]:
    registry = Registry(RegistryConfig())
    devices = []
    for device_id in ids:
        device, _ = registry.observe(device_id, "native")
        devices.append(device)
    return registry, devices


async def test_batch_is_encoded_once_per_distinct_interest_and_bytes_are_shared():
    """Sessions with identical subscriptions get the very same bytes object; the batch is encoded
    once per distinct interest, and each gets only the rows it wants."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    a1 = join(hub, "a1", Selector.of(["a-*"]))
    a2 = join(hub, "a2", Selector.of(["a-*"]))
    b = join(hub, "b", Selector.of(["b-*"], ["power"]))
    hub.add_readings([("a-1", "t", 1.0, 1), ("b-1", "power", 1.0, 5), ("b-1", "v", 1.0, 230)])
    hub.flush()
    assert hub.stats.encodings == 2
    [data_a1], [data_a2], [data_b] = map(readings_offered, (a1, a2, b))
    assert data_a1 is data_a2
    assert data_of(data_a1) == [["a-1", "t", 1.0, 1]]
    assert data_of(data_b) == [["b-1", "power", 1.0, 5]]


async def test_interests_that_match_everything_share_one_encoding():
    """Every interest that matches all readings reuses one encoding of the whole batch."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    s1 = join(hub, "s1", Selector.of(["*"]))
    s2 = join(hub, "s2", Selector.of(["*"]), Selector.of(["x"]))
    hub.add_readings([("a", "t", 1.0, 1), ("b", "t", 1.0, 2)])
    hub.flush()
    assert hub.stats.encodings == 1
    assert readings_offered(s1)[0] is readings_offered(s2)[0]


async def test_sessions_without_matching_rows_get_nothing():
    """A session whose interest matches no row of the batch is offered no frame."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    other = join(hub, "o", Selector.of(["z-*"]))
    idle = RecordingStream("idle", hub._config)
    hub.add(idle)  # connected, no subscription
    hub.add_readings([("a", "t", 1.0, 1)])
    hub.flush()
    assert other.offers == []
    assert idle.offers == []
    assert hub.stats.encodings == 0


async def test_lone_reading_is_flushed_without_waiting_for_the_interval():
    """With the gateway idle, one reading is offered on the next loop pass, not after the
    (here one minute long) batch interval."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["*"]))
    hub.add_readings([("a", "t", 1.0, 1)])
    assert session.offers == []  # deferred to the loop, so readings arriving together batch up
    hub.add_readings([("a", "h", 1.0, 2)])
    async with asyncio.timeout(5):
        await session.offered.wait()
    assert [data_of(d) for d in readings_offered(session)] == [
        [["a", "t", 1.0, 1], ["a", "h", 1.0, 2]]
    ]
    assert hub.stats.batches == 1


async def test_full_batch_is_flushed_immediately():
    """Reaching batch_max_readings flushes at once, inside add_readings."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS, batch_max_readings=3))
    session = join(hub, "s", Selector.of(["*"]))
    hub.add_readings([("a", "t", 1.0, 1), ("a", "t", 2.0, 2)])
    assert session.offers == []
    hub.add_readings([("a", "t", 3.0, 3)])
    assert hub.stats.batches == 1
    assert len(data_of(readings_offered(session)[0])) == 3


async def test_device_events_travel_in_the_batch_with_the_readings_around_them():
    """A device event does not flush the batch: readings before and after it and the event
    share one frame, the event carrying the device's state at flush time."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["d-*"]))
    registry, [device] = fleet("d-1")
    hub.add_readings([("d-1", "t", 1.0, 1)])
    registry.set_online(device, False)
    hub.device_event(device, "status")
    hub.add_readings([("d-1", "t", 2.0, 2)])
    assert session.offers == []
    hub.flush()
    [frame] = session.batches()
    assert frame["data"] == [["d-1", "t", 1.0, 1], ["d-1", "t", 2.0, 2]]
    [event] = frame["events"]
    assert event["event"] == "status"
    assert event["device"]["id"] == "d-1"
    assert event["device"]["status"] == "offline"


async def test_a_lone_event_is_flushed_without_waiting_for_the_interval():
    """With the gateway idle, an event alone goes out on the next loop pass, with no data."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["*"]))
    _, [device] = fleet("d-1")
    hub.device_event(device, "meta")
    async with asyncio.timeout(5):
        await session.offered.wait()
    [frame] = session.batches()
    assert frame["data"] == []
    assert [e["event"] for e in frame["events"]] == ["meta"]


async def test_events_are_coalesced_per_device_and_encoded_once_per_interest():
    """Many events of many devices in one batch: one entry per device (the latest), one frame per
    stream, one encoding per distinct interest however many streams hold it."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    everyone = [join(hub, f"all{i}", Selector.of(["*"])) for i in range(50)]
    filtered = [join(hub, f"odd{i}", Selector.of(["d-*1", "d-*3"])) for i in range(50)]
    registry, devices = fleet(*(f"d-{i}" for i in range(200)))
    for device in devices:
        hub.device_event(device, "status")  # new
        registry.set_online(device, True)
        hub.device_event(device, "status")  # online
        hub.device_event(device, "meta")
    hub.flush()
    assert hub.stats.encodings == 2
    for stream in everyone + filtered:
        assert len(stream.offers) == 1
    assert everyone[0].offers[0][1] is everyone[-1].offers[0][1]
    assert filtered[0].offers[0][1] is filtered[-1].offers[0][1]
    [frame] = everyone[0].batches()
    assert [e["device"]["id"] for e in frame["events"]] == [f"d-{i}" for i in range(200)]
    assert {e["event"] for e in frame["events"]} == {"meta"}  # the latest of each device
    assert {e["device"]["status"] for e in frame["events"]} == {"online"}
    [odd] = filtered[0].batches()
    assert [e["device"]["id"] for e in odd["events"]] == [
        f"d-{i}" for i in range(200) if i % 10 in (1, 3)
    ]


async def test_device_event_goes_only_to_sessions_wanting_the_device():
    """Device events reach the streams whose interest includes the device, and no others."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    wants = join(hub, "w", Selector.of(["d-*"], ["only-this"]))
    other = join(hub, "o", Selector.of(["e-*"]))
    _, [device] = fleet("d-1")
    hub.device_event(device, "meta")
    hub.flush()
    assert [e["event"] for f in wants.batches() for e in f["events"]] == ["meta"]
    assert other.offers == []


async def test_a_removed_device_takes_its_batched_readings_with_it():
    """Readings of a device batched before its removal are not sent (no client sees it come
    back); a device removed and seen again in one batch is announced twice, removal first,
    with the readings from after its return."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["*"]))
    _, [gone, back, _kept] = fleet("gone", "back", "kept")
    hub.add_readings([("gone", "t", 1.0, 1), ("back", "t", 1.0, 1), ("kept", "t", 1.0, 1)])
    hub.device_event(gone, "removed")
    hub.device_event(back, "removed")
    again, _ = Registry(RegistryConfig()).observe("back", "native")
    hub.device_event(again, "status")
    hub.add_readings([("back", "t", 2.0, 2), ("kept", "t", 2.0, 2)])
    hub.flush()
    [frame] = session.batches()
    assert [(e["event"], e["device"]["id"]) for e in frame["events"]] == [
        ("removed", "back"),
        ("removed", "gone"),
        ("status", "back"),
    ]
    assert frame["data"] == [["kept", "t", 1.0, 1], ["back", "t", 2.0, 2], ["kept", "t", 2.0, 2]]


async def test_broadcast_reaches_every_connected_stream():
    """Gateway events go to every connected stream, subscribed or not; a parked one drops it
    (its next hello carries the broker state)."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    subscribed = join(hub, "s", Selector.of(["x"]))
    idle = RecordingStream("idle", hub._config)
    hub.add(idle)
    parked = join(hub, "p", Selector.of(["x"]))
    hub.park(parked, 30.0, 10)
    hub.broadcast({"type": "gateway", "broker": "disconnected"})
    for stream in (subscribed, idle):
        assert stream.queued_bytes > 0
    assert parked.queued_bytes == 0


async def test_snapshots_are_shared_until_the_next_flush():
    """Hub.shared builds once per key until a flush (after which the batch holds the changes)."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    join(hub, "s", Selector.of(["*"]))
    built: list[int] = []

    def build() -> bytes:
        built.append(1)
        return b"snapshot"

    assert hub.shared("k", build) is hub.shared("k", build)
    assert len(built) == 1
    hub.flush()  # nothing batched: nothing changed
    hub.shared("k", build)
    assert len(built) == 1
    hub.add_readings([("a", "t", 1.0, 1)])
    hub.flush()
    hub.shared("k", build)
    assert len(built) == 2


async def test_unsubscribed_stream_stops_receiving_and_interest_is_dropped():
    """After its last subscription is removed, a session gets no readings and the hub forgets
    the interest it alone held."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["a"]))
    session.subscriptions.clear()
    hub.resubscribe(session)
    hub.add_readings([("a", "t", 1.0, 1)])
    hub.flush()
    assert session.offers == []
    assert hub._interests == {}
    assert len(hub) == 1
    hub.remove(session)
    assert len(hub) == 0


@pytest.mark.parametrize(
    ("clients", "interval_ms"), [(0, 5.0), (10, 5.0), (150, 15.0), (900, 20.0)]
)
def test_batch_interval_stretches_with_the_number_of_clients(clients, interval_ms):
    """Under load the batch interval is ws.batch_interval_ms, stretched by 0.1 ms per client up
    to ws.batch_interval_max_ms: every frame costs once per client."""
    hub = Hub(WsConfig(batch_interval_ms=5.0, batch_interval_max_ms=20.0))
    for i in range(clients):
        hub.add(Stream(f"s{i}", WsConfig()))
    assert hub._interval() == pytest.approx(interval_ms / 1000)


async def test_a_large_fan_out_is_handed_over_in_slices_in_order():
    """A flush whose frames add up to more than one slice reaches some streams at once and the
    rest on later passes of the loop, each stream getting its frames in flush order; subscribing
    delivers what is pending first."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    streams = [join(hub, f"s{i}", Selector.of(["*"])) for i in range(40)]
    big = [("d", f"m{i}", 1.0, "x" * 200) for i in range(2000)]  # ~0.5 MB per frame
    hub.add_readings(big[:1000])
    hub.flush()
    hub.add_readings(big[1000:])
    hub.flush()
    served = [len(s.offers) for s in streams]
    assert 0 < sum(served) < 80  # one slice of ~4 MB: not everyone yet
    for _ in range(100):  # passes of the loop, one slice each
        if not hub._deliveries:
            break
        await asyncio.sleep(0)
    assert not hub._deliveries
    for stream in streams:
        first, second = (orjson.loads(b"{%b}" % b.body)["data"] for _, b in stream.offers)
        assert (first[0][1], second[0][1]) == ("m0", "m1000")
    hub.add_readings(big[:1000])
    hub.flush()
    late = join(hub, "late", Selector.of(["*"]))  # resubscribe hands over the pending first
    assert all(len(s.offers) == 3 for s in streams)
    assert late.offers == []


async def test_the_next_flush_waits_for_a_hand_over_under_way():
    """While a large flush is still being handed over, readings that come in wait in the batch
    (no new frame for anyone meanwhile); once it is done they follow, none lost."""
    hub = Hub(WsConfig(batch_interval_ms=0.001, batch_interval_max_ms=0.001))
    streams = [join(hub, f"s{i}", Selector.of(["*"])) for i in range(40)]
    hub.add_readings([("d", f"m{i}", 1.0, "x" * 200) for i in range(1000)])
    hub.flush()
    passes = 0
    while hub._deliveries:
        hub.add_readings([("d", "late", 2.0, passes)])
        passes += 1
        await asyncio.sleep(0)
        if hub._deliveries:
            assert all(len(s.offers) <= 1 for s in streams)
    assert passes >= 2
    for _ in range(100):  # the waiting flush follows the hand-over within a few passes
        if sum(len(b["data"]) for b in streams[-1].batches()) >= 1000 + passes:
            break
        await asyncio.sleep(0)
    for stream in streams:
        late = [r[3] for b in stream.batches()[1:] for r in b["data"]]
        assert late == list(range(passes))
