"""History settings for tests, one per durable backend: an SQLite file in the test's temp dir,
or a database of its own on the session's PostgreSQL server (tests/support/postgres.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.postgres import database_dsn, new_database_name

BACKENDS = ["sqlite", "postgres"]


async def history_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """`history.*` overrides for the backend named by the fixture's param."""
    if request.param == "sqlite":
        return {"history.backend": "sqlite", "history.data_dir": str(tmp_path / "data")}
    server: str = request.getfixturevalue("postgres_dsn")
    name = new_database_name()
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return {"history.backend": "postgres", "history.dsn": database_dsn(server, name)}
