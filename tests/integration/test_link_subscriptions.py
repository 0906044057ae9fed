"""BrokerLink's subscriptions changed at run time, against a real broker: added and removed now,
and kept that way across reconnects (conventions add a discovered device's topics and remove
them when its discovery config goes away)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.config import load_config
from gateway.ingest import BrokerLink
from tests.support.devices import mqtt_client
from tests.support.gateway import WAIT_S
from tests.support.mosquitto import Mosquitto


class Received:
    """What a link hands on, and its up/down changes, as queues to wait on."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.states: asyncio.Queue[bool] = asyncio.Queue()

    async def next(self) -> tuple[str, bytes]:
        async with asyncio.timeout(WAIT_S):
            return await self.messages.get()

    async def state(self) -> bool:
        async with asyncio.timeout(WAIT_S):
            return await self.states.get()


@contextlib.asynccontextmanager
async def running_link(
    broker: Mosquitto, topics: list[str], settings: dict[str, bool]
) -> AsyncIterator[tuple[BrokerLink, Received]]:
    config = load_config(
        env={},
        overrides={
            **settings,
            "broker.url": broker.url,
            "broker.reconnect_min_s": 0.05,
            "broker.reconnect_max_s": 0.5,
        },
    )
    received = Received()
    link = BrokerLink(
        config.broker,
        topics,
        lambda topic, payload: received.messages.put_nowait((topic, payload)),
        received.states.put_nowait,
    )
    task = asyncio.create_task(link.run(), name="test-link")
    try:
        assert await received.state() is True
        yield link, received
    finally:
        link.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_removed_subscriptions_stop_now_and_after_reconnects(
    own_broker, prefix, path_settings
):
    """remove_subscriptions unsubscribes at once (messages on the topic stop while the others
    flow) and the topic is not subscribed again after the broker restarts; add_subscriptions
    subscribes at once. Each change is known to have reached the broker when a retained marker
    subscribed after it arrives: the link sends its changes in order, the broker handles them so."""
    kept, extra = f"{prefix}/kept/#", f"{prefix}/extra/#"
    async with running_link(own_broker, [kept], path_settings) as (link, received):
        async with mqtt_client(own_broker.host, own_broker.port) as device:
            await device.publish(f"{prefix}/extra/a", b"retained", qos=1, retain=True)
            link.add_subscriptions([extra])
            assert await received.next() == (f"{prefix}/extra/a", b"retained")

            link.remove_subscriptions([extra, f"{prefix}/never/#"])  # not subscribed: ignored
            await device.publish(f"{prefix}/marker/1", b"m", qos=1, retain=True)
            link.add_subscriptions([f"{prefix}/marker/#"])
            assert await received.next() == (f"{prefix}/marker/1", b"m")
            assert link.subscriptions == [kept, f"{prefix}/marker/#"]

            await device.publish(f"{prefix}/extra/a", b"after removal", qos=1)
            await device.publish(f"{prefix}/kept/a", b"flows", qos=1)
            assert await received.next() == (f"{prefix}/kept/a", b"flows")

        own_broker.restart()  # no persistence: a fresh broker, the link subscribes afresh
        assert await received.state() is False
        assert await received.state() is True  # reported once its subscriptions are in place
        async with mqtt_client(own_broker.host, own_broker.port) as device:
            await device.publish(f"{prefix}/extra/a", b"after reconnect", qos=1)
            await device.publish(f"{prefix}/kept/a", b"still flows", qos=1)
            assert await received.next() == (f"{prefix}/kept/a", b"still flows")
    assert received.messages.empty()
