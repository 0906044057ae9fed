"""Tokens and what they allow: which devices a client may read and which it may command.

Tokens are compared in constant time and never logged: a principal is known by its name only.
"""

from __future__ import annotations

import hmac
import re

from gateway.config import AuthConfig
from gateway.matching import compile_globs


class Principal:
    """Who a client is, by name, the device globs it may read and command (None: all), and
    whether it may administer devices (forget them)."""

    __slots__ = ("_command_re", "_read_re", "admin", "command", "name", "read")

    def __init__(
        self,
        name: str,
        read: tuple[str, ...] | None,
        command: tuple[str, ...] | None,
        admin: bool = False,
    ) -> None:
        self.name = name
        self.read = read
        self.command = command
        self.admin = admin
        self._read_re = _compile(read)
        self._command_re = _compile(command)

    def may_read(self, device: str) -> bool:
        return self._read_re is None or self._read_re.fullmatch(device) is not None

    def may_command(self, device: str) -> bool:
        return self._command_re is None or self._command_re.fullmatch(device) is not None


def _compile(globs: tuple[str, ...] | None) -> re.Pattern[str] | None:
    if globs is None:
        return None
    # An empty list allows nothing: a pattern no device id can match (ids never hold NUL).
    return compile_globs(globs) if globs else re.compile("\x00")


# Without tokens anyone may read and command, but nobody administers: forgetting a device takes a
# token with `admin = true`, which a cross-site request cannot carry either.
ANONYMOUS = Principal("anonymous", read=None, command=None)


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._config = config
        self._tokens = [
            (
                token.secret().encode(),
                Principal(
                    token.name or f"token-{i + 1}",
                    tuple(token.read),
                    tuple(token.command),
                    token.admin,
                ),
            )
            for i, token in enumerate(config.tokens)
        ]

    @property
    def required(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal for `token`, ANONYMOUS when no auth is configured, else None."""
        if not self._tokens:
            return ANONYMOUS
        if not token:
            return None
        try:
            offered = token.encode()
        except UnicodeEncodeError:
            # aiohttp hands header bytes that are not UTF-8 on as surrogates: no token has them.
            return None
        found = None
        for secret, principal in self._tokens:
            # Check every token so the time taken does not tell which one was close.
            if hmac.compare_digest(secret, offered):
                found = principal
        return found
