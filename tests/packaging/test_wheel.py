"""The built wheel, installed into a fresh virtual environment, runs the gateway on its own.

Nothing from the source tree is importable there: the dashboard's files must travel inside the
wheel (as gateway.dashboard), the simulators too, and the dependencies come from the package
index. This is what `pip install iotgw` gives a user.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.brokers import free_port
from tests.support.mosquitto import Mosquitto
from tests.support.process import CliProcess, running

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
#: Not part of a source distribution: caches, VCS data and stale build output. A stale build/lib
#: would otherwise slip into the wheel files that no longer exist in the source.
IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
    ".benchmarks", "test-artifacts", "node_modules",
)  # fmt: skip


def _run(*argv: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True, text=True, cwd=cwd, env=_clean_env(), timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_env() -> dict[str, str]:
    """The caller's environment without gateway settings or a virtualenv of its own."""
    drop = ("IOTGW_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel built from a clean copy of the source installed; its bin/."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", ".", "-w", work / "dist",
         cwd=source)  # fmt: skip
    [wheel] = (work / "dist").glob("iotgw-*.whl")
    _run(sys.executable, "-m", "venv", work / "venv", cwd=work)
    bin_dir = work / "venv" / "bin"
    _run(bin_dir / "python", "-m", "pip", "install", "-q", wheel, cwd=work)
    return bin_dir


def test_installed_iotgw_reports_its_version(installed: Path) -> None:
    """`iotgw --version` from the installed wheel prints `iotgw <version>` and exits 0."""
    script = "import importlib.metadata as m; print(m.version('iotgw'))"
    version = _run(installed / "python", "-c", script, cwd=installed)
    done = _run(installed / "iotgw", "--version", cwd=installed)
    assert done.stdout == f"iotgw {version.stdout.strip()}\n"
    assert re.fullmatch(r"iotgw \d+\.\d+\.\d+\S*\n", done.stdout)


def test_installed_simulator_is_available(installed: Path) -> None:
    """The wheel ships the simulators: `iotgw simulate --help` works from the venv."""
    done = _run(installed / "iotgw", "simulate", "--help", cwd=installed)
    assert "--devices" in done.stdout


async def test_installed_gateway_serves_dashboard_and_health_then_stops_on_sigterm(
    installed: Path, broker: Mosquitto
) -> None:
    """`iotgw run` from the venv serves the dashboard page and its assets at /, /healthz 200,
    joins the broker, and exits 0 on SIGTERM."""
    port = free_port()
    argv = [installed / "iotgw", "run", "--port", str(port), "--broker", broker.url]
    base = f"http://127.0.0.1:{port}"
    process = CliProcess([str(a) for a in argv], cwd=installed, env=_clean_env())
    async with running(process) as gateway:
        await gateway.line(lambda line: f"serving {base}/" in line)
        await gateway.line(lambda line: "connected to broker" in line)
        status, page = _get(base + "/")
        assert status == 200
        assert "<title>" in page
        assets = re.findall(r'(?:src|href)="(?!https?:|#)/?([^"]+\.(?:js|css|svg))"', page)
        assert assets, "the page references no scripts or styles"
        fetched: set[str] = set()
        while assets:  # the page's files, and the modules its scripts import
            asset = assets.pop()
            status, body = _get(f"{base}/{asset}")
            assert status == 200, asset
            fetched.add(asset)
            if asset.endswith(".js"):
                assets += set(re.findall(r'from "\./([^"]+\.js)"', body)) - fetched
        assert len(fetched) > 3
        status, health = _get(base + "/healthz")
        assert status == 200
        assert json.loads(health)["status"] == "ok"
        assert await gateway.stop() == 0
    assert not [line for line in gateway.lines if "Traceback" in line]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()
