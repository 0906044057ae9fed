"""The JavaScript client under Node's own test runner (tests/js/), against a real gateway,
broker and fleet run here (tests/support/chaos.py) and controlled over loopback HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.chaos import chaos_harness, control_app
from tests.support.gateway import bound_socket

ROOT = Path(__file__).resolve().parents[2]
#: Small enough limits that the pacing test sends 3x the burst in a couple of seconds.
HISTORY_LIMITS = {"ws.history_rate": 60.0, "ws.history_burst": 40}


async def test_js_client_under_node_test(figures: Any) -> None:
    """`node --test tests/js/` passes: subscribe, history, commands, pacing past the history
    burst, and the chaos run (20 restarts, 2 broker kills, 3 cut connections)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20+: apt-get install nodejs)")
    async with chaos_harness(gateway_overrides=HISTORY_LIMITS) as harness:
        runner = web.AppRunner(control_app(harness))
        await runner.setup()
        sock = bound_socket()
        await web.SockSite(runner, sock).start()
        try:
            env = {**os.environ, "IOTGW_CONTROL": f"http://127.0.0.1:{sock.getsockname()[1]}"}
            process = await asyncio.create_subprocess_exec(
                node, "--experimental-websocket", "--no-warnings", "--test",
                str(ROOT / "tests" / "js"),
                cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            async with asyncio.timeout(240):
                output, _ = await process.communicate()
        finally:
            await runner.cleanup()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-4000:]
    assert re.search(r"^# fail 0$", text, re.M), text[-4000:]
    passed = re.search(r"^# pass (\d+)$", text, re.M)
    assert passed is not None, text[-4000:]
    assert int(passed.group(1)) == 3, text[-4000:]
    chaos = re.search(r"CHAOS (\{.*\})", text)
    assert chaos is not None, text[-4000:]
    figures(f"node: {json.loads(chaos.group(1))}")
