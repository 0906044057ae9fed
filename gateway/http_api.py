"""HTTP routes: health, readiness and the device REST API (the dashboard: http_dashboard.py)."""

from __future__ import annotations

import math
from typing import Any

import orjson
from aiohttp import web

from gateway import keys
from gateway.auth import Principal
from gateway.control import CommandRequest
from gateway.errors import CommandError, ProtocolError
from gateway.protocol import parse_command_body


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json({"code": code, "message": message}, status)


def request_principal(request: web.Request) -> Principal:
    """The caller's principal from `Authorization: Bearer`, or a 401 response."""
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else None
    principal = request.app[keys.AUTH].authenticate(token)
    if principal is None:
        raise web.HTTPUnauthorized(
            text='{"code":"unauthorized","message":"missing or bad token"}',
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok", "instance": request.app[keys.STATUS].instance})


async def readyz(request: web.Request) -> web.Response:
    """200 once the broker link is up and its retained state has arrived (gateway/sync.py), in a
    cluster once the instance stores its share of history; 503 again while it shuts down."""
    status = request.app[keys.STATUS]
    store = request.app[keys.HISTORY]
    body = {
        "broker": status.broker_state,
        "since": status.broker_changed_at,
        "synced": status.synced,
        "devices": len(request.app[keys.REGISTRY]),
        # Readiness does not wait for history: a degraded store still relays (operations.md).
        "history": {"backend": store.backend.name, "status": store.state, "reason": store.reason},
    }
    if status.draining:
        body["draining"] = True  # shutting down: clients are being sent elsewhere
    if status.writer_state is not None:
        body["writer"] = status.writer_state  # a cluster member storing its share of history
    return _json(body, 200 if status.ready else 503)


async def list_devices(request: web.Request) -> web.Response:
    principal = request_principal(request)
    devices = [d.snapshot() for d in request.app[keys.REGISTRY] if principal.may_read(d.id)]
    return _json({"devices": devices})


async def get_device(request: web.Request) -> web.Response:
    principal = request_principal(request)
    device_id = request.match_info["device"]
    device = request.app[keys.REGISTRY].get(device_id)
    if device is None or not principal.may_read(device_id):
        return _error(404, "not_found", f"unknown device {device_id!r:.80}")
    return _json(device.snapshot())


#: HTTP status for each command refusal code (docs/protocol.md).
_REFUSAL_STATUS = {
    "not_found": 404,
    "forbidden": 403,
    "bad_params": 400,
    "bad_request": 400,
    "rate_limited": 429,
    "too_many": 503,
    "unavailable": 503,
}


async def post_command(request: web.Request) -> web.Response:
    """Translate the request into one call of the command service and its answer back."""
    principal = request_principal(request)
    try:
        body = orjson.loads(await request.read()) if request.can_read_body else {}
        params, timeout_ms = parse_command_body(body)
    except orjson.JSONDecodeError:
        return _error(400, "bad_request", "body is not valid JSON")
    except ProtocolError as exc:
        return _error(400, exc.code, exc.message)
    command = CommandRequest(
        principal,
        request.remote or "",
        "rest",
        request.match_info["device"],
        request.match_info["command"],
        params,
        timeout_ms,
    )
    try:
        outcome = await request.app[keys.COMMANDS].submit(command)
    except CommandError as exc:
        response = _error(_REFUSAL_STATUS.get(exc.code, 400), exc.code, exc.message)
        if exc.retry_after_s is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(min(exc.retry_after_s, 3600))))
        return response
    return _json(outcome.fields())


async def delete_device(request: web.Request) -> web.Response:
    """Forget a device (admin tokens only): registry, clients (`removed`), its convention's state.
    It comes back when it speaks again or its retained messages are delivered again."""
    principal = request_principal(request)
    device_id = request.match_info["device"]
    if request.app[keys.REGISTRY].get(device_id) is None or not principal.may_read(device_id):
        return _error(404, "not_found", f"unknown device {device_id!r:.80}")
    if not principal.admin:
        return _error(403, "forbidden", "forgetting a device needs a token with admin = true")
    request.app[keys.PIPELINE].forget(device_id)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/devices", list_devices)
    app.router.add_get("/api/devices/{device}", get_device)
    app.router.add_delete("/api/devices/{device}", delete_device)
    app.router.add_post("/api/devices/{device}/commands/{command}", post_command)
