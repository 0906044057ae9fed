"""Fixtures for the cluster tests: real processes only. The session's Mosquitto and PostgreSQL
(tests/conftest.py), a database of each test's own, `iotgw run` instances started by name
(tests/support/cluster.py) and the shipped nginx config in front of them
(tests/support/nginx.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import asyncpg
import pytest

from tests.support.cluster import Cluster
from tests.support.mosquitto import Mosquitto
from tests.support.nginx import Nginx
from tests.support.postgres import database_dsn, new_database_name


@pytest.fixture
def prefix() -> str:
    """A topic prefix (and writer group) no other test uses."""
    return f"t{secrets.token_hex(5)}"


@pytest.fixture
async def database(postgres_dsn: str) -> str:
    """A database of this test's own on the session's PostgreSQL."""
    name = new_database_name()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return database_dsn(postgres_dsn, name)


@pytest.fixture
async def cluster(broker: Mosquitto, prefix: str, database: str) -> AsyncIterator[Cluster]:
    """Instances started by name (`await cluster.start("gw-a")`), killed when the test ends."""
    async with aiohttp.ClientSession() as http:
        built = Cluster(broker, prefix, database, http)
        try:
            yield built
        finally:
            await built.close()


@pytest.fixture
def nginx() -> Iterator[Callable[[list[int]], Nginx]]:
    """Start the shipped deploy/nginx-cluster.conf in front of the given ports."""
    started: list[Nginx] = []

    def start(upstreams: list[int]) -> Nginx:
        server = Nginx(upstreams).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.cleanup()
