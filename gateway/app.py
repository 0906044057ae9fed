"""create_app(config): routes, the services under their typed keys, and the runtime's lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import keys
from gateway.access_log import AccessLogger, redact_access_log
from gateway.browsers import is_loopback
from gateway.config import Config
from gateway.http_api import add_routes
from gateway.http_dashboard import add_dashboard_routes
from gateway.http_guard import browser_guard
from gateway.http_history import add_history_routes
from gateway.metrics import add_metrics
from gateway.runtime import Runtime
from gateway.ws import websocket_handler

#: The runtime itself, for its lifecycle here (and for tests); handlers use gateway.keys.
RUNTIME = web.AppKey("runtime", Runtime)
log = logging.getLogger(__name__)


def create_app(config: Config) -> web.Application:
    redact_access_log()  # whichever access logger serves this app, tokens stay out of it
    app = web.Application(middlewares=[browser_guard])
    runtime = Runtime(config)
    app[RUNTIME] = runtime
    _provide(app, runtime)
    app.router.add_get("/ws", websocket_handler)
    add_routes(app)
    add_history_routes(app)
    add_metrics(app)
    add_dashboard_routes(app)  # last: its static files answer every path not taken before
    app.cleanup_ctx.append(_run_runtime)
    app.on_shutdown.append(_close_sessions)
    return app


def _provide(app: web.Application, runtime: Runtime) -> None:
    """Hand each service to the HTTP layer under its own key (gateway/keys.py)."""
    app[keys.CONFIG] = runtime.config
    app[keys.AUTH] = runtime.auth
    app[keys.ADMISSION] = runtime.admission
    app[keys.REGISTRY] = runtime.registry
    app[keys.HUB] = runtime.hub
    app[keys.HELD_SNAPSHOTS] = runtime.held_snapshots
    app[keys.COMMANDS] = runtime.commands
    app[keys.STATUS] = runtime.status
    app[keys.STATS] = runtime.stats
    app[keys.PIPELINE] = runtime.pipeline
    app[keys.HISTORY] = runtime.store
    if runtime.writers is not None:
        app[keys.WRITERS] = runtime.writers


async def _run_runtime(app: web.Application) -> AsyncIterator[None]:
    """Start the runtime task, wait until it runs (or fails), and stop it on cleanup."""
    runtime = app[RUNTIME]
    task = asyncio.create_task(runtime.run(), name="gateway.runtime")
    ready = asyncio.create_task(runtime.ready.wait(), name="gateway.runtime.ready")
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # raises what stopped the runtime
    yield
    await runtime.leave()  # a cluster member hands its share of the history writers on
    runtime.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sessions(app: web.Application) -> None:
    """on_shutdown: every client is told 1001 (going away; in a cluster 1012, service restart)
    before the runtime stops."""
    app[RUNTIME].close_sessions()


def exposure_warning(config: Config) -> str | None:
    """What to warn about at start: serving other machines with no tokens, so that anyone on the
    network reads and commands every device. None when the bind is loopback or tokens are set."""
    if config.auth.tokens or is_loopback(config.http.host):
        return None
    return (
        f"http.host {config.http.host} is not a loopback address and no [[auth.tokens]] are "
        f"configured: anyone who can reach port {config.http.port} can read and command every "
        "device (docs/security.md, Operators)"
    )


async def drain(runtime: Runtime, drain_s: float) -> None:
    """The first step of a shutdown: /readyz answers 503 from now on, and for `drain_s` seconds
    the gateway keeps serving, so that a load balancer polling /readyz stops sending new clients
    before the listener closes (cluster.drain_s; nginx does not poll: 0 behind it)."""
    runtime.status.draining = True
    if drain_s > 0:
        log.info("draining: /readyz answers 503; closing in %.1fs", drain_s)
        await asyncio.sleep(drain_s)


async def serve(
    config: Config,
    stop: asyncio.Event,
    started: asyncio.Event | None = None,
    *,
    wait_for_broker: bool = False,
) -> None:
    """Run the gateway until `stop` is set, then shut down gracefully: not ready, stop accepting,
    clients told to go (1001, in a cluster 1012), the history writer flushed, the broker left.

    `started` is set once HTTP is served and, with `wait_for_broker`, the broker link is up and
    subscribed (so publishers started after it lose nothing that is not retained).
    """
    tls = None
    if config.http.tls_cert_file:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(config.http.tls_cert_file, config.http.tls_key_file)
    # Bind first: a port in use is reported before the broker link starts and logs anything.
    listener = socket.create_server((config.http.host, config.http.port))
    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        shutdown_timeout=15,
        access_log_class=AccessLogger,
    )
    try:
        app = runner.app
        await runner.setup()
        await web.SockSite(runner, listener, ssl_context=tls).start()
        scheme = "https" if tls else "http"
        log.info(
            "serving %s://%s:%d/ (WebSocket at /ws)", scheme, config.http.host, config.http.port
        )
        exposed = exposure_warning(config)
        if exposed is not None:
            log.warning("%s", exposed)
        if wait_for_broker:
            await app[RUNTIME].linked.wait()
        if started is not None:
            started.set()
        await stop.wait()
        await drain(app[RUNTIME], config.cluster.drain_s)
    finally:
        await runner.cleanup()
        listener.close()
