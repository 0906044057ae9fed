"""axe-core, the accessibility engine, for the e2e suite: installed from the npm registry into a
test-only folder (never served to users) and run inside the page under test.

The folder is `.cache/e2e-npm` in the checkout (git-ignored), or IOTGW_TEST_NPM_DIR; the version
is pinned here. It is installed once and reused while the pinned version is the one there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[2]
AXE_VERSION = "4.14.1"
NPM_DIR = Path(os.environ.get("IOTGW_TEST_NPM_DIR", ROOT / ".cache" / "e2e-npm"))
#: The impacts that fail the audit (axe's scale: minor, moderate, serious, critical).
FAILING = ("serious", "critical")


class AxeUnavailable(RuntimeError):
    """axe-core could not be installed: the message says why and what to do."""


def axe_script() -> Path:
    """The path of axe.min.js at the pinned version, installing it with npm when missing."""
    package = NPM_DIR / "node_modules" / "axe-core"
    script = package / "axe.min.js"
    if script.is_file():
        installed = json.loads((package / "package.json").read_text())["version"]
        if installed == AXE_VERSION:
            return script
    npm = shutil.which("npm")
    if npm is None:
        raise AxeUnavailable(
            "npm is missing: the accessibility audit installs axe-core from the npm registry "
            f"into {NPM_DIR}. Install it (apt-get install npm; scripts/test does when missing)."
        )
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(
        [npm, "install", "--prefix", str(NPM_DIR), "--no-save", "--no-audit", "--no-fund",
         "--no-package-lock", f"axe-core@{AXE_VERSION}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if run.returncode != 0 or not script.is_file():
        raise AxeUnavailable(
            f"npm could not install axe-core@{AXE_VERSION} into {NPM_DIR} "
            f"(exit {run.returncode}):\n{run.stderr.strip()[-2000:]}"
        )
    return script


async def add_axe(context: BrowserContext, script: Path) -> None:
    """Make `axe` available in every page of the context. Injected by the browser itself, before
    the page's own scripts, so the page's Content-Security-Policy needs no exception for it."""
    await context.add_init_script(path=script)


async def audit(page: Page) -> list[dict[str, Any]]:
    """Run axe on the page as it is now; the serious and critical violations, summarised."""
    result: dict[str, Any] = await page.evaluate(
        "axe.run(document, { resultTypes: ['violations'] })"
    )
    return [
        {
            "id": v["id"],
            "impact": v["impact"],
            "help": v["help"],
            "nodes": [
                {"target": n["target"], "summary": n.get("failureSummary", "")}
                for n in v["nodes"][:5]
            ],
        }
        for v in result["violations"]
        if v["impact"] in FAILING
    ]
