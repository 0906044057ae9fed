"""The dashboard's pure JavaScript modules, tested by Node's own test runner (tests/js/*.test.mjs):
`node --test` runs here so that scripts/test, and so CI, runs them with the rest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
JS_TESTS = ROOT / "tests" / "js"


def test_dashboard_js_unit_tests_pass() -> None:
    """Every test in tests/js passes under `node --test` (the axis ticks among them)."""
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
