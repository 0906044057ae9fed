"""The fault proxy itself: each mode does what the broker-link tests rely on."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.faultproxy import FaultProxy


@pytest.fixture
async def echo_server():
    """A TCP echo server on a free loopback port."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def roundtrip(port: int, payload: bytes, within: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        async with asyncio.timeout(within):
            return await reader.readexactly(len(payload))
    finally:
        writer.close()


async def test_pass_forwards_both_ways(echo_server):
    """In pass mode bytes reach the upstream and its answer comes back unchanged."""
    async with FaultProxy(echo_server) as proxy:
        assert await roundtrip(proxy.port, b"hello" * 1000) == b"hello" * 1000
        assert proxy.stats.bytes_up == proxy.stats.bytes_down == 5000


async def test_blackhole_swallows_then_pass_resumes(echo_server):
    """Blackholed bytes never arrive (checked over a bounded 0.3 s window); pass mode restores."""
    async with FaultProxy(echo_server) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.set_mode("blackhole")
        writer.write(b"lost")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):  # absence over a short bounded window
                await reader.read(1)
        proxy.set_mode("pass")
        writer.write(b"kept")
        async with asyncio.timeout(5):
            assert await reader.readexactly(4) == b"kept"
        writer.close()
        assert proxy.stats.bytes_dropped == 4


async def test_reset_aborts_open_and_new_connections(echo_server):
    """reset_all() aborts open connections with RST; reset mode refuses new ones the same way."""
    async with FaultProxy(echo_server) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await roundtrip(proxy.port, b"x") == b"x"
        writer.write(b"y")
        async with asyncio.timeout(5):
            assert await reader.readexactly(1) == b"y"
        assert proxy.reset_all() == 1
        async with asyncio.timeout(5):
            with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
                await reader.readexactly(1)
        proxy.set_mode("reset")
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await roundtrip(proxy.port, b"z")
        writer.close()


async def test_latency_delays_each_chunk(echo_server):
    """In latency mode a round trip takes at least twice the configured delay (both ways)."""
    async with FaultProxy(echo_server) as proxy:
        proxy.set_mode("latency", latency_ms=100)
        started = time.monotonic()
        assert await roundtrip(proxy.port, b"slow") == b"slow"
        assert time.monotonic() - started >= 0.2
