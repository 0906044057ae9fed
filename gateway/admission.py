"""Who may come in. Every HTTP request: the browser rules (Host and Origin, gateway/browsers.py;
for requests that change state, a JSON body). A WebSocket: those, the new-connection rate and
the connection caps (per token, and per address for connections not authenticated yet). It
counts every request and upgrade it refuses and every connection the gateway closes, by reason.
"""

from __future__ import annotations

from gateway.auth import Authenticator, Principal
from gateway.browsers import BrowserPolicy
from gateway.config import WsConfig
from gateway.errors import RequestRefused, UpgradeRefused
from gateway.limits import ConnectionCaps, TokenBucket
from gateway.stats import ConnectionStats

#: Methods that change nothing (RFC 9110, 9.2.1): for these, the Host check only.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Admission:
    def __init__(self, config: WsConfig, auth: Authenticator, browsers: BrowserPolicy) -> None:
        self._auth = auth
        self._browsers = browsers
        self._connect_rate = TokenBucket(config.connect_rate, config.connect_burst)
        self._caps = ConnectionCaps(config.max_connections)
        self._per_token = config.max_connections_per_token
        self._unauthenticated_per_address = config.max_unauthenticated_per_address
        self.stats = ConnectionStats()

    @property
    def open(self) -> int:
        """Connections counted against the caps now."""
        return self._caps.open

    @property
    def auth_required(self) -> bool:
        return self._auth.required

    def admit(
        self, *, host: str | None, origin: str | None, token: str | None, remote: str
    ) -> Principal | None:
        """Let an upgrade request in (counted against its holder's cap: release it when the
        connection ends) and return its principal, None until it authenticates; raise
        UpgradeRefused (counted) when it may not open. `host`, `origin`: the headers;
        `token`: the `?token=` query value; `remote`: the peer's address."""
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
        refusal = self._count(principal, remote)
        if refusal is not None:
            raise self._refuse(*refusal)
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

    def move(self, principal: Principal | None, to: Principal, remote: str) -> str | None:
        """Count a connection from `remote` against `to`'s cap instead of `principal`'s (at
        `auth`); return why it is refused (the connection stays counted where it was), or None."""
        refusal = self._count(to, remote)
        if refusal is not None:
            return refusal[1]
        self._caps.release(_holder(principal, remote))
        return None

    def release(self, principal: Principal | None, remote: str) -> None:
        """A connection from `remote`, counted for `principal`, ended."""
        self._caps.release(_holder(principal, remote))

    def _count(self, principal: Principal | None, remote: str) -> tuple[str, str] | None:
        """Count a connection against the caps; (refusal reason, message) when one is full.
        Until it authenticates, a connection counts against its address, with a cap of its own:
        idle sockets that never send `auth` cannot crowd out anyone else."""
        if principal is None:
            limit = self._unauthenticated_per_address
            reason, whose = "unauthenticated_cap", "unauthenticated connections from this address"
        else:
            limit = self._per_token
            reason, whose = "connection_cap", f"connections for {principal.name}"
        full = self._caps.admit(_holder(principal, remote), limit)
        if full == "total":
            return "connection_cap", "connection limit reached"
        if full == "holder":
            return reason, f"limit of {limit} {whose} reached"
        return None

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


def _holder(principal: Principal | None, remote: str) -> str:
    """Whose connection cap a connection counts against: its token's, or, until it
    authenticates, its address's (the prefixes keep a token's name from being an address)."""
    return f"token:{principal.name}" if principal is not None else f"unauthenticated:{remote}"
