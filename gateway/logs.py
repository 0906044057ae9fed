"""Logging set-up (text or JSON lines) and a rate limit for warnings that a misbehaving device
could repeat forever. No HTTP here: the access logger lives with the HTTP code (access_log.py)."""

from __future__ import annotations

import hashlib
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
CONTEXT_FIELDS = ("conn", "remote")


def connection_label(session_id: str) -> str:
    """A connection's name in logs: a short hash of its session id. The id itself is a resume
    handle (whoever holds it may continue the stream), so it is logged at DEBUG only."""
    return hashlib.blake2b(session_id.encode(), digest_size=4).hexdigest()


class ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for one client connection: every record carries its `conn` label (see
    connection_label) and `remote` address, which JSON lines write as fields and text lines
    append as `[conn=… remote=…]`."""

    def __init__(self, logger: logging.Logger, session: str, remote: str) -> None:
        self.conn = connection_label(session)
        super().__init__(logger, {"conn": self.conn, "remote": remote})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        # LoggerAdapter replaces a call's own `extra`; keep both (Python 3.13's merge_extra).
        extra: Mapping[str, object] = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


#: Characters no log line writes as they are: the C0 and C1 controls and DEL, and the Unicode line
#: and paragraph separators (str.splitlines() breaks lines at every one of them, and a terminal
#: obeys the escape sequences), each mapped to its Python escape.
_CONTROLS = {
    code: repr(chr(code))[1:-1] for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
}


def escape_controls(text: str) -> str:
    """`text` with every control character written as an escape (`\\n`, `\\x1b`, `\\u2028`), so
    that nothing a device or a client sends can start a log line of its own or steer a terminal."""
    return text.translate(_CONTROLS)


class _EscapingFormatter(logging.Formatter):
    """What both formats write, escaped once here for every record whatever its source: the
    message, the connection context, and the traceback or stack (line by line: their own line
    breaks are kept, and everything inside a line is escaped). With an `instance`, every line
    names the gateway instance that wrote it (a cluster's lines end up in one place)."""

    instance: str | None = None

    def message(self, record: logging.LogRecord) -> str:
        return escape_controls(record.getMessage())

    def context(self, record: logging.LogRecord) -> dict[str, str]:
        found = {
            key: escape_controls(str(getattr(record, key)))
            for key in CONTEXT_FIELDS
            if hasattr(record, key)
        }
        if self.instance is not None:
            found["instance"] = self.instance  # checked by config: no controls to escape
        return found

    def details(self, record: logging.LogRecord) -> list[str]:
        """The traceback and the stack, if the record has them, as escaped lines."""
        blocks = []
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        return [escape_controls(line) for block in blocks for line in block.split("\n")]


class TextFormatter(_EscapingFormatter):
    """`12:00:00 INFO    gateway.ws: message [conn=… remote=…]`; a traceback follows on lines
    indented by two spaces, so that only a record's first line starts at the margin."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.message = self.message(record)
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        context = " ".join(f"{key}={value}" for key, value in self.context(record).items())
        if context:
            line = f"{line} [{context}]"
        return "\n  ".join((line, *self.details(record)))


class JsonFormatter(_EscapingFormatter):
    """One JSON object per line: ts, level, logger, message, the connection context, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.message(record),
        }
        entry.update(self.context(record))  # the connection a line is about (ConnectionLog)
        details = self.details(record)
        if details:
            entry["exc"] = "\n".join(details)
        # orjson escapes the C0 controls in strings itself but writes DEL, the C1 controls and
        # U+2028/2029 as they are: the escaping above is what keeps those out of the line.
        return orjson.dumps(entry).decode()


def redact_url(url: str) -> str:
    """The URL with any password in it replaced, for logs (mqtt://user:***@host:1883)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def configure_logging(level: str, fmt: str, instance: str | None = None) -> None:
    """Human-readable lines by default; JSON lines with fmt='json'. With `instance`, every line
    carries it (`instance` in JSON, `[instance=…]` in text)."""
    handler = logging.StreamHandler()
    formatter: _EscapingFormatter = JsonFormatter() if fmt == "json" else TextFormatter()
    formatter.instance = instance
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
