"""Typed application keys: each service the HTTP layer uses, built once by Runtime.

app.py puts them on the application; ws.py, http_api.py and metrics.py take what they need from
here and nothing else (never the runtime itself), so they depend on services, not on app.py.
"""

from __future__ import annotations

from aiohttp import web

from gateway.admission import Admission
from gateway.auth import Authenticator
from gateway.config import Config
from gateway.control import CommandService
from gateway.hub import Hub
from gateway.pipeline import Pipeline
from gateway.registry import Registry
from gateway.snapshots import HeldSnapshots
from gateway.stats import GatewayStats
from gateway.status import GatewayStatus
from gateway.store import HistoryStore
from gateway.writer_group import WriterGroup

CONFIG = web.AppKey("config", Config)
AUTH = web.AppKey("auth", Authenticator)
ADMISSION = web.AppKey("admission", Admission)
REGISTRY = web.AppKey("registry", Registry)
HUB = web.AppKey("hub", Hub)
HELD_SNAPSHOTS = web.AppKey("held_snapshots", HeldSnapshots)
COMMANDS = web.AppKey("commands", CommandService)
STATUS = web.AppKey("status", GatewayStatus)
STATS = web.AppKey("stats", GatewayStats)
PIPELINE = web.AppKey("pipeline", Pipeline)  # forgets devices (DELETE /api/devices/{id})
HISTORY = web.AppKey("history", HistoryStore)
#: A cluster member's history writers (only set when it has them: cluster with durable history).
WRITERS = web.AppKey("writers", WriterGroup)
