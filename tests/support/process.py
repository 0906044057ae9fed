"""A command-line process under test, its stderr read line by line as it is written.

Readiness is by event: `line(predicate)` returns as soon as the process has written a matching
line (the gateway logs where it serves and which broker it joined), never after a guessed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.brokers import free_port
from tests.support.gateway import WAIT_S


class CliProcess:
    """One child process; `lines` holds its stderr so far, `stdout` its output so far (all of it
    after `stop`)."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.lines: list[str] = []
        self.stdout = b""
        self._more = asyncio.Event()
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._out_reader: asyncio.Task[None] | None = None

    async def start(self) -> CliProcess:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
            env=self.env,
        )
        self._reader = asyncio.create_task(self._read(), name="test.cli-process.stderr")
        self._out_reader = asyncio.create_task(self._read_out(), name="test.cli-process.stdout")
        return self

    async def _read_out(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        while chunk := await self._process.stdout.read(65536):
            self.stdout += chunk
            self._more.set()
        self._more.set()

    async def _read(self) -> None:
        assert self._process is not None
        assert self._process.stderr is not None
        async for raw in self._process.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))
            self._more.set()
        self._more.set()

    async def line(self, predicate: Callable[[str], bool], within: float = WAIT_S) -> str:
        """The first stderr line matching `predicate`, waiting for it to be written."""
        seen = 0
        async with asyncio.timeout(within):
            while True:
                for line in self.lines[seen:]:
                    if predicate(line):
                        return line
                seen = len(self.lines)
                assert self._reader is not None
                if self._reader.done():
                    raise AssertionError(f"process ended without that line: {self.lines}")
                self._more.clear()
                await self._more.wait()

    async def output(self, predicate: Callable[[str], bool], within: float = WAIT_S) -> str:
        """The first stdout line matching `predicate`, waiting for it to be written."""
        async with asyncio.timeout(within):
            while True:
                for line in self.stdout.decode(errors="replace").splitlines():
                    if predicate(line):
                        return line
                assert self._out_reader is not None
                if self._out_reader.done():
                    raise AssertionError(f"process ended without that output: {self.stdout!r}")
                self._more.clear()
                await self._more.wait()

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        """Send `sig` (SIGTERM), read the output to its end, and return the exit code."""
        assert self._process is not None
        assert self._reader is not None
        assert self._out_reader is not None
        self._process.send_signal(sig)
        async with asyncio.timeout(30):
            await self._out_reader
            await self._reader
            return await self._process.wait()

    async def kill(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
        if self._reader is not None:
            await self._reader
        if self._out_reader is not None:
            await self._out_reader


@contextlib.asynccontextmanager
async def running(process: CliProcess) -> AsyncIterator[CliProcess]:
    """Start `process`; kill it on the way out if the test did not stop it."""
    try:
        yield await process.start()
    finally:
        await process.kill()


@dataclass(frozen=True)
class Demo:
    """A running `iotgw demo`: where it serves, and the first line it printed."""

    port: int
    first_line: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def running_demo(*args: str) -> AsyncIterator[Demo]:
    """`iotgw demo --port P ARGS` as a user starts it, once it has printed its first line. When
    the block ends, Ctrl-C (SIGINT): the demo must exit 0. Killed if the block failed."""
    port = free_port()
    if "--data-dir" not in args:  # its history in a directory of its own, never the checkout
        args = (*args, "--data-dir", tempfile.mkdtemp(prefix="iotgw-demo-"))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", "--port", str(port), *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(WAIT_S * 2):
            line = (await process.stdout.readline()).decode()
        yield Demo(port, line)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(WAIT_S * 2):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
