"""History through faults, for each durable backend: `iotgw run` killed with -9 keeps every
committed point, SIGTERM flushes the queue; a full disk or read-only file (SQLite) and a
PostgreSQL that goes away leave the gateway relaying with the store reported degraded, and the
store catches up when the fault ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.reliability.helpers import eventually
from tests.support.devices import mqtt_client
from tests.support.gateway import WsClient
from tests.support.history import BACKENDS, history_settings
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import PostgresServer, database_dsn
from tests.support.process import CliProcess, running

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=BACKENDS)
async def settings(request, tmp_path) -> dict[str, Any]:
    return await history_settings(request, tmp_path)


def env_for(broker: Mosquitto, prefix: str, port: int, settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
    env |= {
        "IOTGW_BROKER__URL": broker.url,
        "IOTGW_BROKER__RECONNECT_MAX_S": "0.5",
        "IOTGW_HTTP__PORT": str(port),
        "IOTGW_CONVENTIONS__NATIVE__PREFIX": prefix,
    }
    for key, value in settings.items():
        env["IOTGW_" + key.upper().replace(".", "__")] = str(value)
    return env


def gateway(env: dict[str, str]) -> contextlib.AbstractAsyncContextManager[CliProcess]:
    return running(CliProcess([sys.executable, "-m", "gateway", "run"], cwd=ROOT, env=env))


async def metric(http: aiohttp.ClientSession, base: str, name: str) -> float:
    async with http.get(base + "/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"no {name} in /metrics")


async def ready(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(base + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def publish(broker: Mosquitto, prefix: str, device: str, start: float, count: int) -> None:
    async with mqtt_client(broker.host, broker.port) as client:
        await client.publish(f"{prefix}/{device}/status", b"online", qos=1, retain=True)
        for i in range(count):
            payload = f'{{"v": {i}, "ts": {start + i}}}'
            await client.publish(f"{prefix}/{device}/telemetry", payload.encode(), qos=1)


async def stored_points(http: aiohttp.ClientSession, base: str, device: str) -> list[float]:
    async with http.get(f"{base}/api/devices/{device}/history?metric=v&format=csv") as response:
        assert response.status == 200, await response.text()
        rows = (await response.text()).strip().split("\r\n")[1:]
    return [float(row.split(",")[1]) for row in rows]


async def test_kill9_keeps_committed_points_and_sigterm_flushes_the_queue(broker, prefix, settings):
    """After kill -9, every point the store had committed is there on restart; points queued
    when SIGTERM arrives (commit interval one hour) are written on the way out."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = time.time() - 1000
    async with aiohttp.ClientSession() as http:
        env = env_for(broker, prefix, port, {**settings, "history.commit_interval_s": 0.2})
        async with gateway(env) as first:
            await eventually(lambda: ready(http, base), 20, "iotgw run ready")
            await publish(broker, prefix, "k-1", start, 100)
            await eventually(
                lambda: _at_least(http, base, "iotgw_history_points_written_total", 100),
                10,
                "100 points committed",
            )
            await publish(broker, prefix, "k-1", start + 100, 50)  # may die in the queue
            await first.kill()
        env = env_for(broker, prefix, port, {**settings, "history.commit_interval_s": 3600})
        async with gateway(env) as second:
            await eventually(lambda: ready(http, base), 20, "iotgw run ready again")
            after_kill = await stored_points(http, base, "k-1")
            assert after_kill[:100] == [float(i) for i in range(100)]
            assert len(after_kill) <= 150
            await publish(broker, prefix, "k-1", start + 200, 30)
            client = WsClient(await http.ws_connect(base.replace("http", "ws") + "/ws"))
            await client.request({"type": "subscribe", "devices": ["k-1"]}, "subscribed")
            await eventually(
                lambda: _at_least(http, base, "iotgw_readings_total", 30), 10, "30 readings in"
            )
            await client.close()
            assert await metric(http, base, "iotgw_history_points_written_total") == 0
            assert await second.stop(signal.SIGTERM) == 0
        async with gateway(env):
            await eventually(lambda: ready(http, base), 20, "iotgw run ready a third time")
            after_term = await stored_points(http, base, "k-1")
    assert after_term[-30:] == [float(i) for i in range(30)]


async def _at_least(http: aiohttp.ClientSession, base: str, name: str, count: float) -> bool:
    try:
        return await metric(http, base, name) >= count
    except aiohttp.ClientError:
        return False


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (root only), unmounted on the way out."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)


async def test_sqlite_full_disk_and_read_only_file_degrade_then_recover(
    start_gateway, add_device, tmp_path
):
    """On a full disk, then a read-only filesystem, the gateway keeps relaying readings, reports
    the store degraded (with the reason) in /readyz and /metrics, and writes what it kept once
    the disk has room and is writable again."""
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        gateway = await start_gateway(
            {"history.backend": "sqlite", "history.data_dir": str(disk),
             "history.commit_interval_s": 0.1},
        )  # fmt: skip
        store = gateway.runtime.store
        client = await gateway.connect()
        await client.request({"type": "subscribe", "devices": ["f-1"]}, "subscribed")
        device = await add_device("f-1", {"type": "meter", "metrics": {}, "commands": {}})
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as f:
            while True:
                f.write(b"\0" * 65536)
        big = {f"s{k}": "x" * 250 for k in range(16)}  # strings are capped at 256 characters
        for i in range(40):
            await device.telemetry({"v": i, **big})
        rows = await client.readings(40, where=lambda r: r[0] == "f-1" and r[1] == "v")
        assert [r[3] for r in rows] == list(range(40))  # relaying goes on with the disk full
        await eventually(lambda: store.state == "degraded", 10, "store degraded")
        status, body = await gateway.get("/readyz")
        assert status == 200
        assert body["history"]["status"] == "degraded"
        assert body["history"]["reason"] == "disk full"
        _, text = await gateway.get("/metrics")
        assert "iotgw_history_up 0.0" in text.splitlines()
        filler.unlink()
        await eventually(lambda: store.state == "ok", 15, "store ok after space returned")
        await store.drained()
        await gateway.stop()
        # A filesystem with files open for writing cannot be remounted read-only: the next
        # gateway starts on it read-only.
        remount(disk, "ro")
        try:
            gateway = await start_gateway(
                {"history.backend": "sqlite", "history.data_dir": str(disk),
                 "history.commit_interval_s": 0.1},
            )  # fmt: skip
            store = gateway.runtime.store
            client = await gateway.connect()
            await client.request({"type": "subscribe", "devices": ["f-1"]}, "subscribed")
            await device.telemetry({"v": 100})
            await client.readings(1, where=lambda r: r[0] == "f-1" and r[1] == "v")
            await eventually(lambda: store.state == "degraded", 10, "degraded when read-only")
            assert store.reason == "read-only"
        finally:
            remount(disk, "rw")
        await eventually(lambda: store.state == "ok", 15, "store ok once writable")
        await store.drained()
        result = await store.query("f-1", "v", 0, time.time() + 10, 1000)
        assert result is not None
        assert [v for _, v in result.points] == [*range(40), 100]


async def test_postgres_that_goes_away_and_comes_back(start_gateway, add_device):
    """With its PostgreSQL stopped, the gateway relays on, reports the store degraded, keeps
    what it can in the queue, and writes it once the server is back."""
    server = PostgresServer().init()
    try:
        gateway = await start_gateway(
            {"history.backend": "postgres", "history.dsn": database_dsn(server.dsn, "postgres"),
             "history.commit_interval_s": 0.1},
        )  # fmt: skip
        store = gateway.runtime.store
        client = await gateway.connect()
        await client.request({"type": "subscribe", "devices": ["pg-1"]}, "subscribed")
        device = await add_device("pg-1", {"type": "meter", "metrics": {}, "commands": {}})
        await device.telemetry({"v": 0})
        await client.readings(1, where=lambda r: r[0] == "pg-1")
        await store.drained()
        await asyncio.to_thread(server.stop, "immediate")
        for i in range(1, 20):
            await device.telemetry({"v": i})
        assert len(await client.readings(19, where=lambda r: r[0] == "pg-1")) == 19
        await eventually(lambda: store.state == "degraded", 15, "store degraded")
        _, body = await gateway.get("/readyz")
        assert body["history"]["status"] == "degraded"
        assert "postgres" in body["history"]["reason"]
        await asyncio.to_thread(server.start)
        await eventually(lambda: store.state == "ok", 20, "store ok after postgres returned")
        await store.drained()
        result = await store.query("pg-1", "v", 0, time.time() + 10, 1000)
        assert result is not None
        assert [v for _, v in result.points] == list(range(20))
    finally:
        await asyncio.to_thread(server.cleanup)
