"""gateway.ws_socket: the fence around the frames written to aiohttp's transport directly."""

from __future__ import annotations

import logging

import pytest

from gateway import ws_socket
from gateway.ws_socket import PING_FRAME, text_frame_header


def test_the_installed_aiohttp_frames_as_the_direct_writes_do():
    """aiohttp's own writer makes exactly our text and ping frames, without suspending."""
    assert ws_socket.fast_writer_problem() is None


@pytest.mark.parametrize(
    ("length", "header"),
    [(0, b"\x81\x00"), (125, b"\x81\x7d"), (126, b"\x81\x7e\x00\x7e"),
     (65535, b"\x81\x7e\xff\xff"), (65536, b"\x81\x7f" + (65536).to_bytes(8, "big"))],
)  # fmt: skip
def test_text_frame_headers_at_each_length_boundary(length, header):
    """RFC 6455 5.2: 7-bit, 16-bit and 64-bit payload lengths, unmasked, FIN set."""
    assert text_frame_header(length) == header
    assert PING_FRAME == b"\x89\x00"


def test_a_framing_difference_turns_the_direct_writes_off_with_one_warning(monkeypatch, caplog):
    """If aiohttp framed differently from our header (an upgrade that changed it), the fence
    says so, and connections use aiohttp's send_frame and ping, with one warning."""
    monkeypatch.setattr(ws_socket, "text_frame_header", lambda n: b"\x81" + bytes([n & 0x7F]))
    ws_socket.fast_writer_usable.cache_clear()
    try:
        caplog.set_level(logging.WARNING)
        assert "200-byte text frame differently" in (ws_socket.fast_writer_problem() or "")
        assert (ws_socket.fast_writer_usable(), ws_socket.fast_writer_usable()) == (False, False)
        (warning,) = caplog.records
        assert "direct WebSocket writes off" in warning.getMessage()
    finally:
        ws_socket.fast_writer_usable.cache_clear()


def test_an_unverified_aiohttp_turns_the_direct_writes_off(monkeypatch):
    """An aiohttp outside the verified range is named, and not written to directly."""
    monkeypatch.setitem(ws_socket.SUPPORTED, "aiohttp", ((9,), (10,)))
    assert "not in the verified range >=9,<10" in (ws_socket.fast_writer_problem() or "")
