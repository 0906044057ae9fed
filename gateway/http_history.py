"""REST for history and the audit trail: ranged history (JSON), CSV export, command audit.

`GET /api/devices/{id}/history?metric=…&from=…&to=…&max_points=…` answers like the WebSocket's
ranged `history` request; with `format=csv` (or `Accept: text/csv`) it streams every raw point
in the range as CSV, chunk by chunk, so any range exports in bounded memory.
`GET /api/audit?device=…&from=…&to=…&limit=…` lists command records, newest first, for the
devices the caller may command. Read rights are the token's device globs, as for live data.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable

import orjson
from aiohttp import web

from gateway import keys
from gateway.http_api import request_principal
from gateway.models import AuditEntry, Value
from gateway.names import is_device_id
from gateway.protocol import DEFAULT_HISTORY_POINTS, MAX_HISTORY_POINTS
from gateway.store import HistoryStore, Point, QueryLimit, StoreUnavailable

DEFAULT_AUDIT_LIMIT = 1000
MAX_AUDIT_LIMIT = 10000
#: A cell starting with one of these is a formula to a spreadsheet (CSV injection): device
#: strings are untrusted, so such a cell gets a leading apostrophe.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _refusal(status: type[web.HTTPException], code: str, message: str) -> web.HTTPException:
    """An HTTP error whose body is the protocol's {code, message}."""
    return status(
        text=orjson.dumps({"code": code, "message": message}).decode(),
        content_type="application/json",
    )


def _number(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise _refusal(web.HTTPBadRequest, "bad_request", f"{name} must be a number")
    return value


def _count(request: web.Request, name: str, default: int, most: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= most:
        raise _refusal(web.HTTPBadRequest, "bad_request", f"{name} must be 1 to {most}")
    return int(raw)


def _range(request: web.Request) -> tuple[float, float]:
    end = _number(request, "to", time.time())
    start = _number(request, "from", 0.0)
    if end <= start:
        raise _refusal(web.HTTPBadRequest, "bad_request", "to must be after from")
    return start, end


def _unknown(device_id: str) -> web.HTTPException:
    return _refusal(web.HTTPNotFound, "not_found", f"unknown device {device_id!r:.80}")


async def device_history(request: web.Request) -> web.StreamResponse:
    principal = request_principal(request)
    device_id = request.match_info["device"]
    if not is_device_id(device_id) or not principal.may_read(device_id):
        raise _unknown(device_id)  # unreadable devices are unknown: no probing for ids
    metric = request.query.get("metric", "")
    if not 0 < len(metric) <= 128:
        raise _refusal(web.HTTPBadRequest, "bad_request", "metric is required")
    start, end = _range(request)
    csv_wanted = request.query.get("format") == "csv" or (
        "format" not in request.query and "text/csv" in request.headers.get("Accept", "")
    )
    store = request.app[keys.HISTORY]
    if csv_wanted:
        return await _export_csv(request, store, device_id, metric, start, end)
    max_points = _count(request, "max_points", DEFAULT_HISTORY_POINTS, MAX_HISTORY_POINTS)
    try:
        result = await store.query(device_id, metric, start, end, max_points)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    except QueryLimit:
        raise _busy() from None
    if result is None:
        raise _refusal(web.HTTPNotFound, "not_found", f"no metric {metric!r:.80}")
    body = {"device": device_id, "metric": metric, "from": start, "to": end, **result.fields()}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _unavailable(exc: StoreUnavailable) -> web.HTTPException:
    return _refusal(web.HTTPServiceUnavailable, "unavailable", f"history store: {exc.reason}")


def _busy() -> web.HTTPException:
    return _refusal(web.HTTPTooManyRequests, "rate_limited", "history is busy, retry later")


async def _export_csv(
    request: web.Request, store: HistoryStore, device_id: str, metric: str, start: float,
    end: float,
) -> web.StreamResponse:  # fmt: skip
    """Stream every raw point in the range: one chunk from the store, one write, repeated."""
    chunks = store.export(device_id, metric, start, end)
    try:
        first = await anext(chunks, None)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    except QueryLimit:
        raise _busy() from None
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{_filename(device_id, metric)}"',
        }
    )
    await response.prepare(request)
    await response.write(b"time,value\r\n")
    try:
        chunk = first
        while chunk is not None:
            await response.write(csv_rows(chunk))
            chunk = await anext(chunks, None)
    except StoreUnavailable:
        # Headers are gone: cut the response so the client sees a broken download, not a
        # short file that looks complete.
        if request.transport is not None:
            request.transport.close()
        return response
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


def csv_rows(points: list[Point]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows((repr(t), _cell(v)) for t, v in points)
    return out.getvalue().encode()


def _cell(value: Value) -> str | int | float:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return value


def _filename(device_id: str, metric: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{device_id}-{metric}")
    return f"{safe[:120]}.csv"


async def audit_trail(request: web.Request) -> web.Response:
    principal = request_principal(request)
    device_id = request.query.get("device")
    if device_id is not None:
        if not is_device_id(device_id) or not principal.may_read(device_id):
            raise _unknown(device_id)
        if not principal.may_command(device_id):
            raise _refusal(web.HTTPForbidden, "forbidden", f"not allowed to command {device_id}")
    start, end = _range(request)
    limit = _count(request, "limit", DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT)
    allowed: Callable[[str], bool] = principal.may_command
    try:
        entries = await request.app[keys.HISTORY].audit(device_id, allowed, start, end, limit)
    except StoreUnavailable as exc:
        raise _unavailable(exc) from None
    except QueryLimit:
        raise _busy() from None
    body = {"entries": [audit_fields(e) for e in entries]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def audit_fields(entry: AuditEntry) -> dict[str, object]:
    return {
        "ts": entry.ts, "principal": entry.principal, "remote": entry.remote, "via": entry.via,
        "device": entry.device, "command": entry.command, "params": entry.params,
        "command_id": entry.command_id, "status": entry.status, "rtt_ms": entry.rtt_ms,
        "error": entry.error,
    }  # fmt: skip


def add_history_routes(app: web.Application) -> None:
    """The history and audit routes, over keys.HISTORY and keys.AUTH."""
    app.router.add_get("/api/devices/{device}/history", device_history)
    app.router.add_get("/api/audit", audit_trail)
