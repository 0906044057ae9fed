"""Worker processes (publishers, subscribers, commanders) and the pipe that steers each one."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

CTX = mp.get_context("spawn")


class Worker:
    def __init__(self, name: str, entry: Callable[[Any, Connection], None], config: Any) -> None:
        self.name = name
        self.conn, child = CTX.Pipe()
        self.process: BaseProcess = CTX.Process(
            target=entry, args=(config, child), name=name, daemon=True
        )
        self._child = child

    def start(self, nice: int = 0) -> None:
        self.process.start()
        self._child.close()
        if nice and self.process.pid is not None:
            # Lower priority than the target: on a busy machine the load generators, not the
            # target, wait for the CPU (--nice-load).
            os.setpriority(os.PRIO_PROCESS, self.process.pid, nice)

    def send(self, command: str, args: Any = None) -> None:
        self.conn.send((command, args))

    def expect(self, kind: str, timeout: float) -> Any:
        """The next message, which must be `kind`; raises if the worker died or took too long."""
        if not self.conn.poll(timeout):
            alive = "alive" if self.process.is_alive() else f"exit {self.process.exitcode}"
            raise TimeoutError(f"{self.name}: no {kind!r} after {timeout:.0f}s ({alive})")
        try:
            got, payload = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"{self.name} died (exit {self.process.exitcode})") from None
        if got != kind:
            raise RuntimeError(f"{self.name}: expected {kind!r}, got {got!r}")
        return payload

    def stop(self) -> None:
        if self.process.is_alive():
            with contextlib.suppress(OSError):
                self.send("stop")
            self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class Workers:
    """A group of workers, stopped together on exit of the `with` block."""

    def __init__(self, nice: int = 0) -> None:
        self.all: list[Worker] = []
        self.nice = nice

    def add(self, worker: Worker) -> Worker:
        self.all.append(worker)
        worker.start(self.nice)
        return worker

    def __enter__(self) -> Workers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for worker in self.all:
            worker.stop()


def gather(workers: list[Worker], kind: str, timeout: float) -> list[Any]:
    return [worker.expect(kind, timeout) for worker in workers]


def broadcast(workers: list[Worker], command: str, args: Any = None) -> None:
    for worker in workers:
        worker.send(command, args)
