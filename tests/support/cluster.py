"""Several `iotgw run` processes as one cluster (cluster.enabled) on one broker and one PostgreSQL
database, for tests/cluster: start, SIGTERM, kill -9 and restart instances by name; read their
/metrics and the shared history tables. Readiness by event: an instance is up once it has logged
joining the writer group, and /readyz must then say 200."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from gateway.brokers import free_port
from tests.support.metrics import metric
from tests.support.mosquitto import Mosquitto
from tests.support.process import CliProcess

ROOT = Path(__file__).resolve().parents[2]
#: Starting a process (imports, PostgreSQL, the broker's retained state) on a busy machine.
START_S = 30.0


@dataclass
class Instance:
    name: str
    port: int
    process: CliProcess

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"


def report(instance: Instance) -> None:
    """The end of an instance's log, on the test's captured output (shown when it fails)."""
    print(f"===== {instance.name}, last lines:", *instance.process.lines[-40:], sep="\n")


@dataclass
class Cluster:
    broker: Mosquitto
    prefix: str
    dsn: str
    http: aiohttp.ClientSession
    settings: dict[str, Any] = field(default_factory=dict)
    instances: dict[str, Instance] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def port(self, name: str) -> int:
        """The HTTP port of instance `name`, the same across its restarts (nginx knows it)."""
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IOTGW_")}
        settings: dict[str, Any] = {
            "broker.url": self.broker.url,
            "broker.reconnect_min_s": 0.05,
            "broker.reconnect_max_s": 0.5,
            "http.port": self.port(name),
            "conventions.native.prefix": self.prefix,
            "history.backend": "postgres",
            "history.dsn": self.dsn,
            "history.commit_interval_s": 0.2,
            "cluster.enabled": True,
            "cluster.instance_id": name,
            "cluster.writer_group": f"iotgw-{self.prefix}",  # no other test's members
            "cluster.heartbeat_s": 0.5,
            **self.settings,
        }
        for key, value in settings.items():
            if isinstance(value, bool):
                value = str(value).lower()
            env["IOTGW_" + key.upper().replace(".", "__")] = str(value)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    async def start(self, name: str) -> Instance:
        """Start instance `name` and return once it is ready (in the writer group, /readyz 200)."""
        process = CliProcess([sys.executable, "-m", "gateway", "run"], cwd=ROOT, env=self.env(name))
        instance = Instance(name, self.port(name), process)
        self.instances[name] = instance
        await process.start()
        await process.line(lambda line: "joined the writer group" in line, within=START_S)
        status, body = await self.get(instance, "/readyz")
        assert status == 200, body
        return instance

    async def terminate(self, name: str) -> int:
        """SIGTERM, as a rolling restart does; the exit code."""
        instance = self.instances.pop(name)
        code = await instance.process.stop(signal.SIGTERM)
        report(instance)
        return code

    async def kill(self, name: str) -> None:
        """kill -9: no close frames, no flush, no leave."""
        await self.instances.pop(name).process.kill()

    async def close(self) -> None:
        for instance in list(self.instances.values()):
            report(instance)
            await instance.process.kill()
        self.instances.clear()

    async def get(self, instance: Instance, path: str) -> tuple[int, Any]:
        async with self.http.get(instance.base_url + path) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def metric(self, name: str, metric_name: str, **labels: str) -> float:
        status, text = await self.get(self.instances[name], "/metrics")
        assert status == 200
        return metric(text, metric_name, **labels)

    async def stored(self, device: str, metric_name: str) -> list[Any]:
        """Every stored value of one series, in time order (the shared database)."""
        db = await asyncpg.connect(self.dsn)
        try:
            rows = await db.fetch(
                "SELECT p.v FROM iotgw_points p JOIN iotgw_series s ON s.id = p.series "
                "WHERE s.device = $1 AND s.metric = $2 ORDER BY p.t",
                device,
                metric_name,
            )
        finally:
            await db.close()
        return [r["v"] for r in rows]
