"""The dashboard: its static files, the settings the page reads at start (`/dashboard.json`), and
the Content-Security-Policy that keeps it to its own origin (docs/security.md, rule 10)."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from gateway import keys
from gateway.config import DashboardConfig


def _dashboard_dir() -> Path:
    """Installed, the page is the gateway.dashboard package; in a checkout, ../dashboard."""
    here = Path(__file__).resolve().parent
    installed = here / "dashboard"
    return installed if (installed / "index.html").is_file() else here.parent / "dashboard"


DASHBOARD_DIR = _dashboard_dir()
#: The policy, computed once from the configuration.
CSP = web.AppKey("dashboard_csp", str)


#: Our answers whose policy the middleware sets: only HTML documents are governed by one.
_DOCUMENT_TYPES = frozenset({"text/html"})


def content_security_policy(dashboard: DashboardConfig) -> str:
    """Scripts, styles, connections (the WebSocket and the REST API) and images from the gateway
    itself; images from the map tile server too, when an operator configured one."""
    images = " ".join(filter(None, ("'self'", dashboard.map_tiles_origin())))
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"img-src {images}",
            "connect-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def page_settings(dashboard: DashboardConfig) -> dict[str, object]:
    """What the page needs to know that the WebSocket's hello does not say."""
    tiles = (
        {"tiles": dashboard.map_tiles, "attribution": dashboard.map_attribution}
        if dashboard.map_tiles
        else None
    )
    return {"map": tiles}


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(DASHBOARD_DIR / "index.html")


async def settings(request: web.Request) -> web.Response:
    body = orjson.dumps(page_settings(request.app[keys.CONFIG].dashboard))
    return web.Response(
        body=body, content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


async def _policy(request: web.Request, response: web.StreamResponse) -> None:
    """Every HTML document the gateway serves (/, /index.html) carries the policy."""
    if response.content_type in _DOCUMENT_TYPES:
        response.headers["Content-Security-Policy"] = request.app[CSP]


def add_dashboard_routes(app: web.Application) -> None:
    """The page and its settings (after every other route: the static files take the rest)."""
    app[CSP] = content_security_policy(app[keys.CONFIG].dashboard)
    app.on_response_prepare.append(_policy)
    app.router.add_get("/dashboard.json", settings)
    if (DASHBOARD_DIR / "index.html").is_file():
        app.router.add_get("/", index)
        # follow_symlinks stays off: only files inside the dashboard directory are served.
        app.router.add_static("/", DASHBOARD_DIR, show_index=False)
