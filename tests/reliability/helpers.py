"""Measuring the gateway process from inside the test (the gateway app runs in this process)."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Awaitable, Callable


def open_fds() -> int:
    """File descriptors this process holds (sockets included)."""
    return len(os.listdir("/proc/self/fd"))


def task_count() -> int:
    return len(asyncio.all_tasks())


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc/<pid>/status."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], within: float, what: str, step: float = 0.05
) -> float:
    """Poll `check` until true; return the seconds it took, or fail naming `what`.

    For states that no frame announces (fd counts, task counts, a socket gone); everything a
    client can see is waited for by its frame instead.
    """
    started = time.monotonic()
    deadline = started + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(step)


async def settled_counts() -> tuple[int, int]:
    """Task and fd counts once finished tasks and closed sockets have been collected."""
    for _ in range(3):
        await asyncio.sleep(0)  # let done-callbacks of just-finished tasks run
    gc.collect()
    return task_count(), open_fds()


def walk_stack(task: asyncio.Task) -> list[str]:
    """Where a task is suspended, through coroutines and async generators alike."""
    where, obj = [], task.get_coro()
    while obj is not None and not isinstance(obj, asyncio.Future):
        frame = getattr(obj, "cr_frame", None) or getattr(obj, "ag_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        obj = getattr(obj, "cr_await", None) or getattr(obj, "ag_await", None)
    return where


async def stop_within(stopping: asyncio.Task, within: float) -> str | None:
    """Wait for a gateway's stop; on a hang, say where its broker link is stuck and rescue it
    (cancel the link again) so that the failing test does not hang the whole suite."""
    done, _ = await asyncio.wait({stopping}, timeout=within)
    if done:
        stopping.result()
        return None
    stuck = [t for t in asyncio.all_tasks() if t.get_name().startswith("gateway.")]
    report = "; ".join(
        f"{t.get_name()} (cancelling={t.cancelling()}) at {' > '.join(walk_stack(t)[-3:])}"
        for t in stuck
    )
    for task in stuck:
        if task.get_name() == "gateway.ingest":
            task.cancel()
    await asyncio.wait({stopping}, timeout=within)
    return report or "no gateway task left, yet the stop did not finish"
