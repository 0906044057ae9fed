"""gateway.paho_compat: the fence around paho's and aiomqtt's internals, and its fallback."""

from __future__ import annotations

import logging

import pytest

from gateway import paho_compat
from gateway.config import BrokerConfig
from gateway.ingest import BrokerLink
from gateway.paho_compat import PahoSocket
from gateway.versions import unsupported_versions, version_of

SUBACK = b"\x90\x03\x00\x01\x01"


def test_the_installed_libraries_pass_the_fence():
    """The versions this tree installs are the verified ones, and their internals behave."""
    paho_compat.fast_reader_problem.cache_clear()
    assert paho_compat.fast_reader_problem() is None


@pytest.mark.parametrize(
    ("installed", "expected"),
    [
        ((2, 2, 0), None),
        ((2, 2, 9), None),
        ((2, 3), "paho-mqtt 2.3 is not in the verified range >=2.2,<2.3"),
        ((2, 1, 0), "paho-mqtt 2.1.0 is not in the verified range >=2.2,<2.3"),
    ],
)
def test_versions_outside_the_verified_range_are_named(installed, expected):
    """An upgrade (or downgrade) past the verified range is reported with the version."""
    supported = {"paho-mqtt": ((2, 2), (2, 3))}
    assert unsupported_versions(supported, lambda _: installed) == expected


def test_an_unverified_version_falls_back_to_the_public_path_with_one_warning(monkeypatch, caplog):
    """With paho outside the verified range the link reads through aiomqtt's iterator, and
    says so once; broker.fast_reader = false chooses that path without a warning."""
    monkeypatch.setitem(paho_compat.SUPPORTED, "paho-mqtt", ((9,), (10,)))
    paho_compat.fast_reader_problem.cache_clear()
    try:
        caplog.set_level(logging.WARNING)
        link = BrokerLink(BrokerConfig(), [], lambda topic, payload: None, lambda up: None)
        assert link.fast_reader is False
        (warning,) = [r for r in caplog.records if "fast MQTT read path off" in r.getMessage()]
        assert "not in the verified range" in warning.getMessage()
        caplog.clear()
        forced = BrokerConfig(fast_reader=False)
        link = BrokerLink(forced, [], lambda topic, payload: None, lambda up: None)
        assert (link.fast_reader, caplog.records) == (False, [])
    finally:
        paho_compat.fast_reader_problem.cache_clear()


def test_paho_socket_serves_the_fed_packet_then_says_try_later():
    """paho reads exactly the packet fed to the view, then is told to wait; errors and the end
    of the stream reach paho as if it had read the socket itself."""
    view = PahoSocket(sock=None)
    view.feed(SUBACK)
    assert [view.recv(1), view.recv(1), view.recv(3)] == [b"\x90", b"\x03", b"\x00\x01\x01"]
    assert view.consumed
    with pytest.raises(BlockingIOError):
        view.recv(1)
    assert view.pending() == 0
    view.feed_error(None)
    assert view.recv(1) == b""  # end of stream: paho reports the connection lost
    view.feed_error(ConnectionResetError())
    with pytest.raises(ConnectionResetError):
        view.recv(1)


def test_version_of_reads_the_leading_numbers():
    """Pre-releases and local suffixes count by their numbers (2.5.1rc1 is 2.5.1)."""
    assert version_of("paho-mqtt")[:2] >= (2, 0)
    assert all(isinstance(n, int) for n in version_of("aiohttp"))
