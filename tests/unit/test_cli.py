"""`iotgw`'s process-level helpers that need no broker: the event loop it runs on."""

from __future__ import annotations

import asyncio
import sys
import traceback

from gateway.cli import run_until_signal


def test_exceptions_inside_the_gateway_carry_no_import_error_context(monkeypatch):
    """Without uvloop, an exception raised and logged inside the running gateway has no context:
    its traceback does not end with "No module named 'uvloop'" (the loop used to run inside the
    `except ImportError`)."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    caught: list[BaseException] = []

    async def main(stop: asyncio.Event) -> None:
        try:
            raise ValueError("a bug in some task")
        except ValueError as exc:
            caught.append(exc)

    run_until_signal(main)
    [exc] = caught
    assert exc.__context__ is None
    assert "uvloop" not in "".join(traceback.format_exception(exc))


def test_the_loop_runs_until_main_returns(monkeypatch):
    """Without uvloop, run_until_signal runs `main` to its end on asyncio's own loop, closed
    on the way out."""
    monkeypatch.setitem(sys.modules, "uvloop", None)
    loops: list[asyncio.AbstractEventLoop] = []

    async def main(stop: asyncio.Event) -> None:
        loops.append(asyncio.get_running_loop())

    run_until_signal(main)
    assert len(loops) == 1
    assert loops[0].is_closed()
