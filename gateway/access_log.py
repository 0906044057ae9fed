"""HTTP access logging: one line per request, `token` query values redacted."""

from __future__ import annotations

import logging
import re

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


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
            extra={"remote": request.remote},
        )


_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"]*")


class TokenRedactor(logging.Filter):
    """Redacts `token=` query values in any record (aiohttp's default access log writes the
    whole request line), for apps served without AccessLogger, e.g. web.run_app(create_app())."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "token=" in str(record.msg) or any("token=" in str(a) for a in record.args or ()):
            record.msg = _TOKEN_IN_URL.sub(r"\1REDACTED", record.getMessage())
            record.args = None
        return True


TOKEN_REDACTOR = TokenRedactor()


def redact_access_log() -> None:
    """Attach the redactor to aiohttp's access logger (once, however many apps are created)."""
    access = logging.getLogger("aiohttp.access")
    if TOKEN_REDACTOR not in access.filters:
        access.addFilter(TOKEN_REDACTOR)
