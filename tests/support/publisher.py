"""A stand-in for the broker link's publish, for the command path's unit tests."""

from __future__ import annotations

import asyncio


class FakePublisher:
    """Records publishes; `fail` makes publish raise; `published` is set after each one."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail
        self.published = asyncio.Event()

    async def publish(self, topic: str, payload: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((topic, payload))
        self.published.set()
