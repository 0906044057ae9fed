"""Logging set-up and a rate limit for warnings that a misbehaving device could repeat forever."""

from __future__ import annotations

import logging
import time

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class RateLimitedLog:
    """Log at most one message per key per `interval` seconds, reporting how many were held back."""

    def __init__(
        self, logger: logging.Logger, interval: float = 10.0, max_keys: int = 1000
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._max_keys = max_keys
        self._state: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed since)

    def warning(self, key: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last, suppressed = self._state.get(key, (-self._interval, 0))
        if now - last < self._interval:
            self._state[key] = (last, suppressed + 1)
            return
        if len(self._state) >= self._max_keys and key not in self._state:
            self._state.clear()  # keys come from a fixed set of reasons; this is only a backstop
        self._state[key] = (now, 0)
        if suppressed:
            message += " (%d similar suppressed)"
            args = (*args, suppressed)
        self._logger.warning(message, *args)


def configure_logging(level: str, fmt: str) -> None:
    """Human-readable lines by default; JSON lines with fmt='json'."""
    handler = logging.StreamHandler()
    if fmt == "json":
        from gateway.jsonlog import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class AccessLogger(AbstractAccessLogger):
    """One line per HTTP request, with any `token` query parameter redacted."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        target = request.rel_url
        if "token" in target.query:
            target = target.update_query(token="REDACTED")
        self.logger.info(
            '%s "%s %s" %d %.1fms',
            request.remote,
            request.method,
            target,
            response.status,
            time * 1000,
        )
