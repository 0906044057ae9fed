"""The dashboard's pure JavaScript modules, tested by Node's own test runner
(tests/unit/js/*.test.mjs: no gateway needed; the JavaScript client's tests against a real one
are tests/js/, run by tests/clients/test_js_client.py). `node --test` runs here so that
scripts/test, and so CI, runs them with the rest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = ROOT / "tests" / "unit" / "js"


def test_dashboard_js_unit_tests_pass() -> None:
    """Every test in tests/unit/js passes under `node --test` (axis ticks, track geometry)."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is missing: apt-get install nodejs (scripts/test installs it)")
    files = sorted(str(p.relative_to(ROOT)) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no *.test.mjs in {JS_TESTS}"
    run = subprocess.run(
        [node, "--test", "--test-reporter=tap", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, f"node --test failed:\n{report}"
    assert "# fail 0" in report, report
    assert "# pass 0" not in report, report
