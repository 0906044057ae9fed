"""Two `iotgw run` instances as one service (issue 14), every part real: the session's Mosquitto
and PostgreSQL, the instances as processes, the shipped nginx config in front of them. Live data
on both, commands answered where they were sent, history written once, registries that agree."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson

from tests.reliability.helpers import eventually
from tests.support.cluster import Cluster, Instance
from tests.support.devices import THERMOSTAT_META, device_stand_ins, mqtt_client
from tests.support.gateway import WsClient
from tests.support.gateway import announced as is_announced
from tests.support.mosquitto import Mosquitto


async def subscribed(
    http: aiohttp.ClientSession, url: str, devices: list[str], announced: str | None = None
) -> WsClient:
    """A client of `url` subscribed to `devices`, past its snapshot, and (if named) once the
    `announced` device's meta and online status are in (by the snapshot or a device event)."""
    client = WsClient(await http.ws_connect(url))
    client.hello = await client.expect(lambda f: f["type"] == "hello")
    await client.request({"type": "subscribe", "devices": devices}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    if announced is not None and not any(
        d["id"] == announced and is_announced(d) for d in snapshot["devices"]
    ):
        await client.expect(
            lambda f: f["type"] == "device" and f["device"]["id"] == announced
            and is_announced(f["device"])
        )  # fmt: skip
    return client


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
            await client.expect(
                lambda f: f["type"] == "device" and f["event"] == event
                and f["device"]["id"] == "reg-1" and f["device"]["meta"] is not None
                if event == "meta" else f["type"] == "device" and f["event"] == event
                and f["device"]["id"] == "reg-1"
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
        clients = {i.name: await subscribed(http, i.ws_url, ["cmd-1"], "cmd-1") for i in (a, b)}
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
