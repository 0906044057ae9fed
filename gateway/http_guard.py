"""The browser rules for every HTTP request but the WebSocket upgrade (docs/security.md, rule 4):
one middleware, so that a route added later is covered without asking (Admission decides)."""

from __future__ import annotations

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import keys
from gateway.errors import RequestRefused

#: Answered whatever the Host: probes and scrapers reach the gateway by whatever name they have
#: (a service name, a pod address), and these hold no device data (/metrics has its own token).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
#: The upgrade's checks are admission's own (gateway/ws.py), counted with the refused upgrades.
UPGRADE_PATH = "/ws"

#: HTTP status and error code for each refusal reason.
_ANSWERS = {
    "host": (403, "forbidden"),
    "origin": (403, "forbidden"),
    "content_type": (415, "bad_request"),
}


@web.middleware
async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS or request.path == UPGRADE_PATH:
        return await handler(request)
    try:
        request.app[keys.ADMISSION].check_request(
            method=request.method,
            host=request.headers.get("Host"),  # request.host falls back to the server's name
            origin=request.headers.get("Origin"),
            content_type=request.headers.get("Content-Type"),
            has_body=request.body_exists,
        )
    except RequestRefused as refused:
        status, code = _ANSWERS[refused.reason]
        body = orjson.dumps({"code": code, "message": refused.message})
        return web.Response(body=body, status=status, content_type="application/json")
    return await handler(request)
