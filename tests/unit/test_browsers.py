"""The browser rules as pure decisions: which Host and Origin headers a request may carry, which
bind addresses are loopback, and when the gateway warns that it is open to the network."""

from __future__ import annotations

import socket

import pytest

from gateway.admission import Admission
from gateway.app import exposure_warning
from gateway.auth import Authenticator
from gateway.browsers import BrowserPolicy, default_hosts, host_name, is_loopback, policy_for
from gateway.config import load_config
from gateway.errors import RequestRefused


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("gw.example", "gw.example"),
        ("GW.Example:8080", "gw.example"),
        ("localhost.:8080", "localhost"),
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("", None),
        ("evil.example:80:80", None),
        ("127.0.0.1@evil.example", None),
        ("evil.example/127.0.0.1", None),
        ("gw example", None),
        ("gw.example:port", None),
    ],
)
def test_host_name_takes_plain_host_and_port_only(header, name):
    """A Host value is a name, an IPv4 address or a bracketed IPv6 address, and a port."""
    assert host_name(header) == name


REBOUND = "evil.example:8080"


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        (REBOUND, False),
        ("gw.example:8080", True),
        ("GW.EXAMPLE", True),
        ("ops.example.org", True),
        ("example.org", True),
        ("badexample.org", False),
        ("localhost:8080", True),
        ("app.localhost:8080", True),
        ("127.0.0.1:8080", True),
        ("10.1.2.3:8080", True),
        ("[::1]:8080", True),
        ("[fe80::1]", True),
        ("127.0.0.1@evil.example", False),
        (None, True),
    ],
)
def test_hosts_are_listed_names_suffixes_loopback_or_ip_addresses(host, allowed):
    """Listed names and suffixes, localhost and any IP address pass; a rebinding name does not;
    no Host at all (not a browser) passes."""
    policy = BrowserPolicy([".localhost", "gw.example", ".example.org"], [])
    assert policy.host_allowed(host) is allowed


def test_a_star_allows_any_host():
    """`*` in allowed_hosts turns the Host check off."""
    assert BrowserPolicy(["*"], []).host_allowed(REBOUND)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "gw.example:8080", True),
        ("http://gw.example:8080", "gw.example:8080", True),
        ("http://GW.example:8080", "gw.EXAMPLE:8080", True),
        ("http://gw.example:8081", "gw.example:8080", False),
        ("https://plant.example", "gw.example:8080", True),
        ("http://evil.example", "gw.example:8080", False),
        ("null", "gw.example:8080", False),
        ("http://[oops", "gw.example:8080", False),
        ("http://gw.example:8080", None, False),
    ],
)
def test_origins_are_listed_or_on_the_requests_own_host(origin, host, allowed):
    """An Origin passes when listed or when it names the request's own Host; a malformed one
    is refused, not an error."""
    policy = BrowserPolicy(["gw.example"], ["https://plant.example"])
    assert policy.origin_allowed(origin, host) is allowed


def test_refusal_names_the_host_before_the_origin():
    """A rebinding page's request (its Origin on its own Host) is refused for its host."""
    policy = BrowserPolicy([".localhost"], [])
    assert policy.refusal(REBOUND, f"http://{REBOUND}") == "host"
    assert policy.refusal("localhost:8080", "http://evil.example") == "origin"
    assert policy.refusal("localhost:8080", "http://localhost:8080") is None


def test_default_hosts_are_localhost_the_bind_address_and_the_host_name():
    """Without configuration the gateway answers to localhost, its bind address and its host
    name; http.allowed_hosts adds to them."""
    machine = socket.gethostname().lower()
    assert {".localhost", "gw.lan", machine} <= set(default_hosts("gw.lan"))
    config = load_config(env={}, overrides={"http.allowed_hosts": ["proxy.example"]})
    policy = policy_for(config.http, config.auth)
    for host in ("localhost:8080", f"{machine}:8080", "proxy.example", "192.0.2.1:8080"):
        assert policy.host_allowed(host), host
    assert not policy.host_allowed(REBOUND)


@pytest.mark.parametrize(
    ("bind", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("gw.lan", False),
    ],
)
def test_loopback_binds(bind, loopback):
    """Only loopback addresses and localhost serve this machine alone; a name may be anything."""
    assert is_loopback(bind) is loopback


def test_binding_the_network_without_tokens_is_warned_about():
    """A non-loopback bind without tokens gets a start-up warning naming the address and port;
    loopback, or tokens, do not."""
    open_config = load_config(env={}, overrides={"http.host": "0.0.0.0", "http.port": 9000})
    warning = exposure_warning(open_config)
    assert warning is not None
    assert "0.0.0.0" in warning
    assert "9000" in warning
    assert "every device" in warning
    assert exposure_warning(load_config(env={})) is None
    tokens = {"http.host": "0.0.0.0", "auth.tokens": [{"token": "t", "name": "ops"}]}
    assert exposure_warning(load_config(env={}, overrides=tokens)) is None


def admission() -> Admission:
    config = load_config(env={})
    return Admission(config.ws, Authenticator(config.auth), policy_for(config.http, config.auth))


@pytest.mark.parametrize(
    ("method", "content_type", "has_body", "refused"),
    [
        ("POST", "application/json", True, None),
        ("POST", "application/json; charset=utf-8", True, None),
        ("POST", "Application/JSON", True, None),
        ("POST", None, False, None),
        ("DELETE", None, False, None),
        ("POST", None, True, "content_type"),
        ("POST", "text/plain", False, "content_type"),
        ("POST", "application/jsonp", True, "content_type"),
        ("PUT", "text/json", True, "content_type"),
        ("PATCH", "application/x-www-form-urlencoded", True, "content_type"),
        ("GET", "text/plain", True, None),
        ("HEAD", None, False, None),
    ],
)
def test_state_changing_requests_must_declare_json(method, content_type, has_body, refused):
    """Any method but GET, HEAD and OPTIONS with a body or a declared type must declare
    application/json (parameters allowed); each refusal is counted by reason."""
    gate = admission()
    request = {"method": method, "content_type": content_type, "has_body": has_body}
    if refused is None:
        gate.check_request(host="localhost:8080", origin=None, **request)
        assert gate.stats.requests_refused == {}
    else:
        with pytest.raises(RequestRefused) as refusal:
            gate.check_request(host="localhost:8080", origin=None, **request)
        assert refusal.value.reason == refused
        assert gate.stats.requests_refused == {refused: 1}


def test_safe_methods_need_only_a_known_host():
    """A GET from a foreign Origin is let in (a read; the browser keeps the answer from the
    page), a GET with a foreign Host is not."""
    gate = admission()
    request = {"method": "GET", "content_type": None, "has_body": False}
    gate.check_request(host="localhost:8080", origin="http://evil.example", **request)
    with pytest.raises(RequestRefused) as refused:
        gate.check_request(host="evil.example:8080", origin=None, **request)
    assert refused.value.reason == "host"
