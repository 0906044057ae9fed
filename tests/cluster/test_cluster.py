"""Two `iotgw run` instances as one service (issue 14), every part real: the session's Mosquitto
and PostgreSQL, the instances as processes, the shipped nginx config in front of them. Live data
on both, commands answered where they were sent, history written once, registries that agree."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from tests.cluster.watchers import Watcher
from tests.reliability.helpers import eventually
from tests.support.cluster import Cluster, Instance
from tests.support.devices import THERMOSTAT_META, device_stand_ins, mqtt_client
from tests.support.gateway import WsClient
from tests.support.gateway import announced as is_announced
from tests.support.mosquitto import Mosquitto


async def subscribed(
    http: aiohttp.ClientSession,
    url: str,
    devices: list[str],
    until: Callable[[dict[str, Any]], bool] | None = None,
) -> WsClient:
    """A client of `url` subscribed to `devices`, past its snapshot, and (with `until`) once a
    device satisfies `until`, by the snapshot or a later device event."""
    client = WsClient(await http.ws_connect(url))
    client.hello = await client.expect(lambda f: f["type"] == "hello")
    await client.request({"type": "subscribe", "devices": devices}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    if until is not None and not any(until(d) for d in snapshot["devices"]):
        await client.event(lambda e: until(e["device"]))
    return client


def announced(device_id: str) -> Callable[[dict[str, Any]], bool]:
    """The device's retained meta and `online` status are both in."""
    return lambda d: d["id"] == device_id and is_announced(d)


async def both(cluster: Cluster) -> tuple[Instance, Instance]:
    a, b = await asyncio.gather(cluster.start("gw-a"), cluster.start("gw-b"))
    return a, b


async def test_readings_reach_clients_on_both_instances_and_registries_agree(
    cluster: Cluster, broker: Mosquitto, prefix: str
) -> None:
    """A reading published once reaches a subscriber on each instance; a device announced, and
    later withdrawn, changes both instances' /api/devices within 1 s of each other, to the same
    view."""
    a, b = await both(cluster)
    async with aiohttp.ClientSession() as http, mqtt_client(broker.host, broker.port) as mqtt:
        on_a, on_b = [await subscribed(http, i.ws_url, ["*"]) for i in (a, b)]
        assert (on_a.hello["instance"], on_b.hello["instance"]) == ("gw-a", "gw-b")

        async def seen(client: WsClient, event: str) -> float:
            await client.event(
                lambda e: e["device"]["id"] == "reg-1" and e["event"] == event
                and (event != "meta" or e["device"]["meta"] is not None)
            )  # fmt: skip
            return time.monotonic()

        meta = orjson.dumps(THERMOSTAT_META)
        await mqtt.publish(f"{prefix}/reg-1/status", b"online", qos=1, retain=True)
        await mqtt.publish(f"{prefix}/reg-1/meta", meta, qos=1, retain=True)
        t_a, t_b = await asyncio.gather(seen(on_a, "meta"), seen(on_b, "meta"))
        assert abs(t_a - t_b) <= 1.0
        views = [(await cluster.get(i, "/api/devices/reg-1"))[1] for i in (a, b)]
        assert views[0] == views[1]
        assert views[0]["meta"]["name"] == "Living room"

        await mqtt.publish(f"{prefix}/reg-1/telemetry", b'{"temperature": 21.5, "ts": 7}', qos=1)
        for client in (on_a, on_b):
            rows = await client.readings(1, where=lambda r: r[0] == "reg-1")
            assert rows == [["reg-1", "temperature", 7.0, 21.5]]

        # Withdrawn: retained status and meta cleared.
        await mqtt.publish(f"{prefix}/reg-1/status", b"", qos=1, retain=True)
        await mqtt.publish(f"{prefix}/reg-1/meta", b"", qos=1, retain=True)
        t_a, t_b = await asyncio.gather(seen(on_a, "removed"), seen(on_b, "removed"))
        assert abs(t_a - t_b) <= 1.0
        for instance in (a, b):
            status, body = await cluster.get(instance, "/api/devices")
            assert status == 200
            assert "reg-1" not in [d["id"] for d in body["devices"]]


async def test_a_command_through_each_instance_is_answered_once_to_its_own_client(
    cluster: Cluster, broker: Mosquitto, prefix: str
) -> None:
    """The device's results reach both instances: each instance's client gets exactly one
    command_result for its own command, and the other instance counts that answer as a peer's,
    never as an unmatched result."""
    a, b = await both(cluster)
    async with (
        aiohttp.ClientSession() as http,
        device_stand_ins(broker, prefix) as add_device,
    ):
        await add_device("cmd-1")
        clients = {
            i.name: await subscribed(http, i.ws_url, ["cmd-1"], announced("cmd-1")) for i in (a, b)
        }
        results: dict[str, dict[str, Any]] = {}
        for name, client in clients.items():
            command = {"type": "command", "device": "cmd-1", "command": "set_target"}
            results[name] = await client.request(
                {**command, "params": {"target": 20 if name == "gw-a" else 21}}, "command_result"
            )
        for name, result in results.items():
            assert result["status"] == "ok", result
            assert result["command_id"].startswith(f"c-{name}-")
        assert results["gw-a"]["result"] == {"target": 20}
        assert results["gw-b"]["result"] == {"target": 21}
        # Each instance saw the other's answer and let it be.
        for name in ("gw-a", "gw-b"):
            assert await cluster.metric(name, "iotgw_command_results_peer_total") == 1
            unmatched = await cluster.metric(
                name, "iotgw_decode_errors_total", reason="unmatched_result"
            )
            assert unmatched == 0
            assert await cluster.metric(name, "iotgw_commands_total", status="ok") == 1
        # Exactly one result per client: both answers were handled by both instances (counted
        # above), and what a client was sent before its pong has arrived.
        for client in clients.values():
            await client.request({"type": "ping"}, "pong")
            assert len([f for f in client.seen if f["type"] == "command_result"]) == 1


async def test_history_is_written_once_with_both_instances_up(
    cluster: Cluster, broker: Mosquitto, prefix: str
) -> None:
    """Readings without device timestamps (each instance would stamp its own receive time, so
    a reading stored twice could not be told apart by time) are stored exactly once: as many
    rows as were published, no value twice, and both instances stored a share."""
    await both(cluster)
    total = 400
    async with mqtt_client(broker.host, broker.port) as mqtt:
        for n in range(total):
            await mqtt.publish(f"{prefix}/h-1/telemetry", b'{"n": %d}' % n, qos=1)

    async def all_stored() -> bool:
        return len(await cluster.stored("h-1", "n")) >= total

    await eventually(all_stored, 20, f"{total} rows stored")
    values = await cluster.stored("h-1", "n")
    assert sorted(values) == [float(n) for n in range(total)]
    shares = [
        await cluster.metric(n, "iotgw_cluster_claimed_points_total") for n in cluster.instances
    ]
    assert sum(shares) == total
    assert all(share > 0 for share in shares), shares


class Counter:
    """Publishes `{"n": 0}`, `{"n": 1}`, ... on one device's telemetry at a steady rate, QoS 1
    (each after the previous PUBACK), without device timestamps; `reached(n)` waits for a
    count, `finish()` ends it after the publish in progress (`sent` is then exact)."""

    def __init__(self, broker: Mosquitto, topic: str, rate: float) -> None:
        self.broker = broker
        self.topic = topic
        self.interval = 1 / rate
        self.sent = 0
        self._progress = asyncio.Event()
        self._finish = False
        self._task: asyncio.Task[None] | None = None

    def start(self, total: int = 1_000_000) -> Counter:
        self._task = asyncio.create_task(self._run(total), name="test.counter")
        return self

    async def _run(self, total: int) -> None:
        loop = asyncio.get_running_loop()
        async with mqtt_client(self.broker.host, self.broker.port) as mqtt:
            started = loop.time()
            for n in range(total):
                if self._finish:
                    return
                await mqtt.publish(self.topic, b'{"n": %d}' % n, qos=1)
                self.sent = n + 1
                self._progress.set()
                # Paced: a load generator, not a wait for something to happen.
                await asyncio.sleep(max(0.0, started + (n + 1) * self.interval - loop.time()))

    async def reached(self, count: int, within: float = 30.0) -> None:
        async with asyncio.timeout(within):
            while self.sent < count:
                self._progress.clear()
                await self._progress.wait()

    async def finish(self) -> int:
        """Stop after the publish in progress (or wait for the total); how many were sent."""
        self._finish = True
        if self._task is not None:
            await self._task
        return self.sent

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def test_kill9_of_an_instance_loses_at_most_the_bound_the_survivor_reports(
    cluster: Cluster, broker: Mosquitto, prefix: str
) -> None:
    """Readings without device time published steadily while one instance is killed with -9:
    none is stored twice; the survivor reports the lost member once, with a bound; the readings
    missing are no more than that bound; and storing goes on (every reading published after the
    kill is stored)."""
    a, _ = await both(cluster)
    counter = Counter(broker, f"{prefix}/k-1/telemetry", rate=300)
    total = 1500
    counter.start(total)
    await counter.reached(600)
    await cluster.kill("gw-b")
    after_kill = counter.sent
    await counter.reached(total)
    line = await a.process.line(lambda text: "stopped without leaving" in text)
    assert "gw-b" in line

    async def last_stored() -> bool:
        return float(total - 1) in await cluster.stored("k-1", "n")

    await eventually(last_stored, 20, "the last reading stored by the survivor")
    values = await cluster.stored("k-1", "n")
    assert len(values) == len(set(values)), "a reading stored twice"
    lost = total - len(values)
    bound = await cluster.metric("gw-a", "iotgw_cluster_lost_points_bound_total")
    assert await cluster.metric("gw-a", "iotgw_cluster_members_lost_total") == 1
    assert 0 <= lost <= bound, (lost, bound, line)
    assert set(range(after_kill, total)) <= set(values), "a reading published after the kill"


async def watching(
    http: aiohttp.ClientSession, url: str, device: str, count: int
) -> tuple[list[Watcher], asyncio.Event, list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    watchers = [Watcher(http, url, device) for _ in range(count)]
    tasks = [asyncio.create_task(w.run(stop), name=f"test.watcher[{i}]") for i, w in
             enumerate(watchers)]  # fmt: skip
    return watchers, stop, tasks


async def stopped(stop: asyncio.Event, tasks: list[asyncio.Task[None]]) -> None:
    stop.set()
    await asyncio.gather(*tasks)


def has_readings(watcher: Watcher) -> bool:
    return bool(watcher.connections) and watcher.current.readings >= 3


async def test_kill9_under_load_clients_behind_nginx_reconnect_to_the_survivor_without_gaps(
    cluster: Cluster, broker: Mosquitto, prefix: str, nginx: Any
) -> None:
    """50 clients through the shipped nginx config, a steady stream, one instance killed with
    -9: every client it served is back, subscribed on the survivor, within 3 s of the kill, told
    `recovered: false` with a fresh snapshot; no client's stream has a silent gap."""
    a, b = await both(cluster)
    proxy = nginx([a.port, b.port])
    counter = Counter(broker, f"{prefix}/w-1/telemetry", rate=100)
    async with aiohttp.ClientSession() as http:
        watchers, stop, tasks = await watching(http, proxy.ws_url, "w-1", 50)
        counter.start()
        try:
            for watcher in watchers:
                await watcher.wait_for(has_readings, within=20)
            on_b = [w for w in watchers if w.current.instance == "gw-b"]
            assert 0 < len(on_b) < 50, "round robin spreads the clients over both instances"
            killed_at = time.monotonic()
            await cluster.kill("gw-b")
            for watcher in on_b:
                await watcher.wait_for(
                    lambda w: w.current.instance == "gw-a" and w.current.snapshot
                    and w.current.readings >= 3, within=20,
                )  # fmt: skip
        finally:
            counter.cancel()
            await stopped(stop, tasks)
    took = [w.connections[-1].subscribed_at - killed_at for w in on_b]  # type: ignore[operator]
    # The bound; measured from events, ~0.1 s on an idle machine.
    assert max(took) <= 3.0, sorted(took)[-5:]
    for watcher in on_b:
        assert [c.instance for c in watcher.connections] == ["gw-b", "gw-a"]
        assert watcher.connections[-1].recovered is False  # another epoch: said so
    for watcher in watchers:
        assert watcher.silent_gaps == []
    assert all(len(w.connections) == 1 for w in watchers if w not in on_b)


async def test_rolling_restart_loses_no_stored_reading_and_leaves_no_silent_gap(
    cluster: Cluster, broker: Mosquitto, prefix: str, nginx: Any
) -> None:
    """Under a steady stream with 20 clients behind nginx, A is restarted (SIGTERM, exit 0,
    started again and ready), then B: every reading published is stored exactly once, the
    clients of each stopping instance are closed with 1012 and carry on through the other, and
    no client's stream has a silent gap."""
    a, b = await both(cluster)
    proxy = nginx([a.port, b.port])
    counter = Counter(broker, f"{prefix}/r-1/telemetry", rate=300).start()
    async with aiohttp.ClientSession() as http:
        watchers, stop, tasks = await watching(http, proxy.ws_url, "r-1", 20)
        try:
            for watcher in watchers:
                await watcher.wait_for(has_readings, within=20)
            for name in ("gw-a", "gw-b"):
                assert await cluster.terminate(name) == 0
                await cluster.start(name)
            for watcher in watchers:  # everyone is back on the stream
                await watcher.wait_for(has_readings, within=20)
            total = await counter.finish()
            for watcher in watchers:  # ...and saw it to its end
                await watcher.wait_for(lambda w: w.last_n == total - 1, within=20)
        finally:
            counter.cancel()
            await stopped(stop, tasks)

    async def all_stored() -> bool:
        return len(await cluster.stored("r-1", "n")) >= total

    await eventually(all_stored, 20, f"{total} rows stored")
    assert sorted(await cluster.stored("r-1", "n")) == [float(n) for n in range(total)]
    for watcher in watchers:
        assert watcher.silent_gaps == []
        for ended, following in zip(watcher.connections, watcher.connections[1:], strict=False):
            assert ended.close_code == 1012, ended
            assert following.recovered is False or following.snapshot
    moved = [w for w in watchers if len(w.connections) > 1]
    assert moved, "some clients were on a restarted instance"


async def test_a_discovered_device_is_served_stored_once_and_commanded_on_both_instances(
    cluster: Cluster, broker: Mosquitto, prefix: str
) -> None:
    """Home Assistant discovery (retained config, state topics outside the discovery prefix,
    subscribed at run time): both instances' /api/devices agree on the device, its states are
    stored exactly once (the writer group follows the topics discovery added), and a relay
    command, confirmed by the device's state report, is answered once, on its own instance."""
    discovery, node = f"ha-{prefix}", f"esp-{prefix}/node"
    cluster.settings.update({
        "conventions.homeassistant.enabled": True,
        "conventions.homeassistant.discovery_prefix": discovery,
        "conventions.homeassistant.allowed_topics": [f"esp-{prefix}/#"],
    })  # fmt: skip
    a, b = await both(cluster)
    device = {"ids": ["esp-1"], "name": "Node"}
    configs = {
        f"{discovery}/sensor/node/t/config": {
            "~": node, "name": "t", "stat_t": "~/t/state", "uniq_id": "esp-1-t", "dev": device,
        },
        f"{discovery}/switch/node/relay/config": {
            "~": node, "name": "relay", "stat_t": "~/relay/state", "cmd_t": "~/relay/set",
            "uniq_id": "esp-1-relay", "dev": device,
        },
    }  # fmt: skip
    async with aiohttp.ClientSession() as http, mqtt_client(broker.host, broker.port) as esp:
        await esp.subscribe(f"{node}/relay/set", qos=1)
        for topic, config in configs.items():
            await esp.publish(topic, orjson.dumps(config), qos=1, retain=True)
        await esp.publish(f"{node}/relay/state", b"OFF", qos=1)

        def both_entities(d: dict[str, Any]) -> bool:
            return len((d["meta"] or {}).get("metrics", {})) == 2

        clients = {
            i.name: await subscribed(http, i.ws_url, ["ha.*"], both_entities) for i in (a, b)
        }
        ids = [[d["id"] for d in (await cluster.get(i, "/api/devices"))[1]["devices"]]
               for i in (a, b)]  # fmt: skip
        assert ids[0] == ids[1] == ["ha.esp-1"]

        total = 200
        for n in range(total):
            await esp.publish(f"{node}/t/state", b"%d" % n, qos=1)

        async def all_stored() -> bool:
            return len(await cluster.stored("ha.esp-1", "t")) >= total

        await eventually(all_stored, 20, f"{total} states stored")
        assert sorted(await cluster.stored("ha.esp-1", "t")) == [float(n) for n in range(total)]

        async def device() -> None:  # answers the relay command with its new state
            async for message in esp.messages:
                if message.topic.value == f"{node}/relay/set":
                    assert isinstance(message.payload, bytes)
                    await esp.publish(f"{node}/relay/state", message.payload, qos=1)
                    return

        answering = asyncio.create_task(device(), name="test.esp")
        command = {"type": "command", "device": "ha.esp-1", "command": "set_relay"}
        result = await clients["gw-b"].request(
            {**command, "params": {"state": "ON"}}, "command_result"
        )
        await answering
        assert result["status"] == "ok"
        assert result["command_id"].startswith("c-gw-b-")
        for client in clients.values():
            await client.request({"type": "ping"}, "pong")
        assert [f["type"] for f in clients["gw-a"].seen].count("command_result") == 0
        assert [f["type"] for f in clients["gw-b"].seen].count("command_result") == 1
        for name in ("gw-a", "gw-b"):
            unmatched = await cluster.metric(
                name, "iotgw_decode_errors_total", reason="unmatched_result"
            )
            assert unmatched == 0
        for topic in configs:  # retained configs outlive the test
            await esp.publish(topic, b"", qos=1, retain=True)
