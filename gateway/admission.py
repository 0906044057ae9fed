"""Who may come in. Every HTTP request: the browser rules (Host and Origin, gateway/browsers.py;
for requests that change state, a JSON body). A WebSocket: those, the new-connection rate and
the connection caps. It counts every request and upgrade it refuses and every connection the
gateway closes, by reason.
"""

from __future__ import annotations

from gateway.auth import Authenticator, Principal
from gateway.browsers import BrowserPolicy
from gateway.config import WsConfig
from gateway.errors import RequestRefused, UpgradeRefused
from gateway.limits import ConnectionCaps, TokenBucket
from gateway.stats import ConnectionStats

#: The connection-cap holder for connections that have not authenticated yet.
UNAUTHENTICATED = "(unauthenticated)"
#: Methods that change nothing (RFC 9110, 9.2.1): for these, the Host check only.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Admission:
    def __init__(self, config: WsConfig, auth: Authenticator, browsers: BrowserPolicy) -> None:
        self._auth = auth
        self._browsers = browsers
        self._connect_rate = TokenBucket(config.connect_rate, config.connect_burst)
        self._caps = ConnectionCaps(config.max_connections, config.max_connections_per_token)
        self.stats = ConnectionStats()

    @property
    def open(self) -> int:
        """Connections counted against the caps now."""
        return self._caps.open

    @property
    def auth_required(self) -> bool:
        return self._auth.required

    def admit(self, *, host: str | None, origin: str | None, token: str | None) -> Principal | None:
        """Let an upgrade request in (counted against its holder's cap: release it when the
        connection ends) and return its principal, None until it authenticates; raise
        UpgradeRefused (counted) when it may not open. `host`, `origin`: the headers;
        `token`: the `?token=` query value."""
        browser_refusal = self._browsers.refusal(host, origin)
        if browser_refusal is not None:
            raise self._refuse(browser_refusal, f"{browser_refusal} not allowed")
        if not self._connect_rate.take():
            raise self._refuse("rate", "too many new connections")
        principal = None
        if token is not None:
            principal = self._auth.authenticate(token)
            if principal is None:
                raise self._refuse("unauthorized", "bad token")
        elif not self._auth.required:
            principal = self._auth.authenticate(None)
        refusal = self._caps.admit(holder(principal))
        if refusal is not None:
            raise self._refuse("connection_cap", refusal)
        return principal

    def check_request(
        self,
        *,
        method: str,
        host: str | None,
        origin: str | None,
        content_type: str | None,
        has_body: bool,
    ) -> None:
        """Let an HTTP request other than the upgrade in, or raise RequestRefused (counted). It
        must name a Host the gateway answers to; one that changes state (any method but GET,
        HEAD and OPTIONS) must also come from an allowed Origin and, when it has a body or
        declares a type, declare `application/json`: a cross-site form or a no-cors fetch can
        send neither an allowed Origin nor that type without a CORS preflight, which the gateway
        never grants. A body-less POST or DELETE needs no Content-Type (no browser sends one
        cross-site without an Origin)."""
        if not self._browsers.host_allowed(host):
            raise self._refuse_request("host", "host not allowed (see http.allowed_hosts)")
        if method in SAFE_METHODS:
            return
        if not self._browsers.origin_allowed(origin, host):
            raise self._refuse_request("origin", "origin not allowed")
        if (has_body or content_type is not None) and not _is_json(content_type):
            raise self._refuse_request("content_type", "Content-Type must be application/json")

    def authenticate(self, token: str) -> Principal | None:
        """The principal for an `auth` frame's token, or None."""
        return self._auth.authenticate(token)

    def move(self, principal: Principal | None, to: Principal) -> str | None:
        """Count a connection against `to`'s cap instead of `principal`'s (at `auth`); return why
        it is refused (the connection stays counted where it was), or None."""
        refusal = self._caps.admit(to.name)
        if refusal is None:
            self._caps.release(holder(principal))
        return refusal

    def release(self, principal: Principal | None) -> None:
        """A connection admitted for `principal` ended."""
        self._caps.release(holder(principal))

    def closed(self, reason: str) -> None:
        """Count a connection the gateway closed (a protocol.CloseReason)."""
        self.stats.closed[reason] += 1

    def _refuse(self, reason: str, message: str) -> UpgradeRefused:
        self.stats.refused[reason] += 1
        return UpgradeRefused(reason, message)

    def _refuse_request(self, reason: str, message: str) -> RequestRefused:
        self.stats.requests_refused[reason] += 1
        return RequestRefused(reason, message)


def _is_json(content_type: str | None) -> bool:
    """`application/json`, with or without parameters (`; charset=utf-8`)."""
    if content_type is None:
        return False
    return content_type.partition(";")[0].strip().lower() == "application/json"


def holder(principal: Principal | None) -> str:
    """Whose connection cap a connection counts against."""
    return principal.name if principal is not None else UNAUTHENTICATED
