"""The worker side of the orchestrator's pipe, for asyncio workers: commands arrive as callbacks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

Handler = Callable[[str, Any], None]


def listen(conn: Connection, handler: Handler) -> Callable[[], None]:
    """Call `handler(command, args)` for each message on `conn`; returns the function that stops."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            command, args = conn.recv()
        except EOFError:  # the orchestrator is gone: behave as if told to stop
            command, args = "stop", None
        handler(command, args)

    loop.add_reader(conn.fileno(), readable)

    def stop() -> None:
        loop.remove_reader(conn.fileno())

    return stop
