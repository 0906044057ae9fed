"""Which `Host` and `Origin` a request may carry: the browser rules of docs/security.md (rule 4).

Any web page the user visits can make the browser send requests to the gateway. A foreign page's
WebSocket upgrade or POST carries that page's `Origin` (cross-site WebSocket hijacking, cross-site
requests). A page on a name the attacker points at the gateway's address (DNS rebinding) is
same-origin to the browser, and so its `Origin` matches `Host`, but both carry the attacker's
name. So a request must name a host the gateway answers to, and an `Origin` on that very host or
one the operator listed. Pure functions of header values: admission.py counts and refuses.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from gateway.config import AuthConfig, HttpConfig

#: A Host header value: a name or an IPv4 address, or an IPv6 address in brackets, and a port.
_HOST = re.compile(r"(?P<name>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")


def host_name(host: str) -> str | None:
    """The name in a Host header value, lowercased, without its port, brackets or final dot;
    None when the value is not a plain `host[:port]`."""
    match = _HOST.fullmatch(host)
    if match is None:
        return None
    return match["name"].strip("[]").rstrip(".").lower() or None


def is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback(bind: str) -> bool:
    """True when binding `bind` (http.host) serves this machine alone."""
    if bind.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume the network can reach it


def default_hosts(bind: str) -> tuple[str, ...]:
    """The names the gateway answers to without configuration, besides any IP address:
    localhost and the names under it (RFC 6761), the bind address, and this machine's host name
    (with `.local`, its mDNS name, when the host name is a single label)."""
    machine = socket.gethostname().lower()
    names = [".localhost", bind, machine]
    if machine and "." not in machine:
        names.append(f"{machine}.local")
    return tuple(name for name in names if name)


class BrowserPolicy:
    """The hosts and origins a request may name.

    `allowed_hosts` entries are names (`gw.example`), a name with a leading dot for it and every
    name under it (`.example.org`), or `*` for any host (the check is off). Any IP address is
    allowed: a rebinding page cannot make the browser send one, since the browser sends the
    name in the page's address. `allowed_origins` entries are exact origins, or `*` for any.
    """

    def __init__(self, allowed_hosts: Iterable[str], allowed_origins: Iterable[str]) -> None:
        hosts = [entry.rstrip(".").lower() for entry in allowed_hosts]
        self._any_host = "*" in hosts
        self._hosts = frozenset(h for h in hosts if not h.startswith("."))
        self._suffixes = tuple(h for h in hosts if h.startswith("."))
        self._origins = frozenset(allowed_origins)
        self._any_origin = "*" in self._origins

    def host_allowed(self, host: str | None) -> bool:
        """A Host the gateway answers to. No Host at all passes: every browser sends one, so a
        request without it is not a browser's."""
        if host is None or self._any_host:
            return True
        name = host_name(host)
        if name is None:
            return False
        if name in self._hosts or is_ip_address(name):
            return True
        return any(name.endswith(suffix) or name == suffix[1:] for suffix in self._suffixes)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """No Origin passes (not a browser, or a browser's same-origin GET); otherwise it must be
        listed, or be on the request's own Host (which host_allowed vouches for)."""
        if origin is None or self._any_origin or origin in self._origins:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # "http://[…" is no URL
            return False
        return host is not None and bool(netloc) and netloc.lower() == host.lower()

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """Why a request with these headers is refused (`host` or `origin`), or None."""
        if not self.host_allowed(host):
            return "host"
        if not self.origin_allowed(origin, host):
            return "origin"
        return None


def policy_for(http: HttpConfig, auth: AuthConfig) -> BrowserPolicy:
    """The policy a configuration asks for: the default hosts plus `http.allowed_hosts`, and
    `auth.allowed_origins`."""
    return BrowserPolicy((*default_hosts(http.host), *http.allowed_hosts), auth.allowed_origins)
