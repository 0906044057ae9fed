"""Run a module with its garbage-collector pauses measured.

python -m bench.gcprobe OUT MODULE ARGS...

Each collection's duration is recorded by generation (gc.callbacks); at exit a JSON summary goes to
OUT: count, total and longest pause per generation, and the tracked-object count at the end. Used
with `bench run --gc-probe` to tell event-loop stalls caused by the collector from other stalls.
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import sys
import time
from typing import Any

_started: list[float] = [0.0]
_pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _pauses[info["generation"]].append(time.perf_counter() - _started[0])


def _write(path: str) -> None:
    summary = {
        f"gen{gen}": {
            "count": len(p),
            "total_ms": round(1000 * sum(p), 1),
            "max_ms": round(1000 * max(p, default=0.0), 2),
            "over_10ms": sum(x > 0.01 for x in p),
        }
        for gen, p in _pauses.items()
    }
    summary["tracked_objects_at_exit"] = {"count": len(gc.get_objects())}
    with open(path, "w") as f:
        json.dump(summary, f)


def main() -> None:
    out, module, *args = sys.argv[1:]
    gc.callbacks.append(_callback)
    atexit.register(_write, out)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
