"""Logging set-up (text or JSON lines) and a rate limit for warnings that a misbehaving device
could repeat forever. No HTTP here: the access logger lives with the HTTP code (access_log.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson


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
        self._log(logging.WARNING, key, message, args, exc_info=False)

    def exception(self, key: str, message: str, *args: object) -> None:
        """An error with the traceback of the exception being handled (call from `except`)."""
        self._log(logging.ERROR, key, message, args, exc_info=True)

    def _log(
        self, level: int, key: str, message: str, args: tuple[object, ...], exc_info: bool
    ) -> None:
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
        self._logger.log(level, message, *args, exc_info=exc_info)


#: Record attributes that describe the connection a line is about (set by ConnectionLog).
CONTEXT_FIELDS = ("session", "remote")


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for one client connection: every record carries its `session` id and `remote`
    address, which JSON lines write as fields and text lines append as `[session=… remote=…]`."""

    def __init__(self, logger: logging.Logger, session: str, remote: str) -> None:
        super().__init__(logger, {"session": session, "remote": remote})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        # LoggerAdapter replaces a call's own `extra`; keep both (Python 3.13's merge_extra).
        extra: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


class TextFormatter(logging.Formatter):
    """`12:00:00 INFO    gateway.ws: message [session=c-… remote=…]`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(
            f"{key}={getattr(record, key)}" for key in CONTEXT_FIELDS if hasattr(record, key)
        )
        return f"{line} [{context}]" if context else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, the connection context, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:  # the connection a line is about (ConnectionLog)
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def redact_url(url: str) -> str:
    """The URL with any password in it replaced, for logs (mqtt://user:***@host:1883)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def configure_logging(level: str, fmt: str) -> None:
    """Human-readable lines by default; JSON lines with fmt='json'."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
