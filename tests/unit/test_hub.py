"""The hub: batching readings into frames, encoding once per interest, events in order."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.config import RegistryConfig, WsConfig
from gateway.hub import Hub
from gateway.matching import Selector
from gateway.registry import Registry
from gateway.session import Session
from tests.support.fakes import RecordingSession

LONG_MS = 60_000.0  # a batch interval no test waits for


def join(hub: Hub, name: str, *selectors: Selector) -> RecordingSession:
    session = RecordingSession(name, hub._config)
    for selector in selectors:
        session.subscriptions[session.new_subscription_id()] = selector
    hub.add(session)
    hub.resubscribe(session)
    return session


def readings_offered(session: RecordingSession) -> list[bytes]:
    return [data for kind, data in session.offers if kind == "readings"]


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
    assert orjson.loads(data_a1) == [["a-1", "t", 1.0, 1]]
    assert orjson.loads(data_b) == [["b-1", "power", 1.0, 5]]


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
    idle = RecordingSession("idle", hub._config)
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
    assert [orjson.loads(d) for d in readings_offered(session)] == [
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
    assert len(orjson.loads(readings_offered(session)[0])) == 3


async def test_device_event_flushes_pending_readings_first():
    """Readings batched before a device event are offered before the event frame."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    session = join(hub, "s", Selector.of(["d-*"]))
    registry = Registry(RegistryConfig())
    device, _ = registry.observe("d-1", "native")
    hub.add_readings([("d-1", "t", 1.0, 1)])
    registry.set_online(device, False)
    hub.device_event(device, "status")
    kinds = [kind for kind, _ in session.offers]
    assert kinds == ["readings", "frame"]
    event = orjson.loads(session.offers[1][1])
    assert event["type"] == "device"
    assert event["event"] == "status"
    assert event["device"]["status"] == "offline"


async def test_device_event_goes_only_to_sessions_wanting_the_device():
    """Device events reach the sessions whose interest includes the device, and no others."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    wants = join(hub, "w", Selector.of(["d-*"], ["only-this"]))
    other = join(hub, "o", Selector.of(["e-*"]))
    device, _ = Registry(RegistryConfig()).observe("d-1", "native")
    hub.device_event(device, "meta")
    assert [k for k, _ in wants.offers] == ["frame"]
    assert other.offers == []


async def test_broadcast_reaches_every_session():
    """Gateway events go to every connected session, subscribed or not."""
    hub = Hub(WsConfig(batch_interval_ms=LONG_MS))
    subscribed = join(hub, "s", Selector.of(["x"]))
    idle = RecordingSession("idle", hub._config)
    hub.add(idle)
    hub.broadcast({"type": "gateway", "broker": "disconnected"})
    for session in (subscribed, idle):
        assert [orjson.loads(p) for _, p in session.offers] == [
            {"type": "gateway", "broker": "disconnected"}
        ]


async def test_unsubscribed_session_stops_receiving_and_interest_is_dropped():
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
        hub.add(Session(f"s{i}", WsConfig()))
    assert hub._interval() == pytest.approx(interval_ms / 1000)
