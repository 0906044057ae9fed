"""Durable history and the command audit trail (docs/operations.md#history).

`build_store(config, rings, instance)` picks the backend named by `history.backend`; the runtime
owns the HistoryStore it returns. Only the backend modules import a database driver: asyncpg is
imported when the postgres backend is chosen (the `postgres` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import Config
from gateway.store.base import (
    Backend,
    Bucket,
    HistoryResult,
    LostMember,
    MemberBeat,
    Point,
    RestoredSeries,
    Roster,
    RosterView,
    StoreUnavailable,
)
from gateway.store.memory import MemoryBackend, RingLookup
from gateway.store.sqlite import SqliteBackend
from gateway.store.store import HistoryStore, QueryLimit, StoreStats

__all__ = [
    "Backend",
    "Bucket",
    "HistoryResult",
    "HistoryStore",
    "LostMember",
    "MemberBeat",
    "Point",
    "QueryLimit",
    "RestoredSeries",
    "Roster",
    "RosterView",
    "StoreStats",
    "StoreUnavailable",
    "build_store",
]

DAY_S = 86400.0


def build_store(
    config: Config, rings: RingLookup, instance: str, clock: Callable[[], float] = time.time
) -> HistoryStore:
    """The store for `config.history`; construction does no I/O (HistoryStore.start does).
    `clock` is the wall clock retention counts from (tests move it by days)."""
    history = config.history
    backend: Backend
    if history.backend == "memory":
        backend = MemoryBackend(rings, history.audit_queue, history.audit_retention_days * DAY_S)
    elif history.backend == "postgres":
        # Imported here: asyncpg is an optional extra (pip install 'iotgw[postgres]').
        from gateway.store import postgres

        backend = postgres.PostgresBackend(history, instance, clock)
    else:
        backend = SqliteBackend(history, instance, clock)
    return HistoryStore(
        history, backend, history_length=config.registry.history_length, clock=clock
    )
