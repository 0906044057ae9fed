"""A minimal MQTT 3.1.1 QoS 0 publisher over a plain socket (CONNECT, PUBLISH, DISCONNECT).

The load generator's hot path: a tick's messages are encoded into one buffer and written with one
`sendall`, which costs a fraction of paho's per-publish locking and two syscalls (measured in
docs/performance.md). Nothing is read after CONNACK; keepalive is 0 so the broker expects no pings.
"""

from __future__ import annotations

import socket
import struct


def varint(n: int) -> bytes:
    """MQTT's remaining-length encoding (MQTT 3.1.1 section 2.2.3)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str) -> bytes:
    # Protocol name "MQTT", level 4, flags: clean session; keepalive 0 (disabled).
    body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 0) + _string(client_id)
    return b"\x10" + varint(len(body)) + body


def topic_header(topic: str) -> bytes:
    """The topic part of a QoS 0 PUBLISH, precomputed once per device."""
    return _string(topic)


def publish_packet(topic: bytes, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH; `topic` comes from topic_header()."""
    return b"\x30" + varint(len(topic) + len(payload)) + topic + payload


DISCONNECT = b"\xe0\x00"


class RawPublisher:
    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        connack = self.sock.recv(4)
        if len(connack) != 4 or connack[0] != 0x20 or connack[3] != 0:
            raise ConnectionError(f"broker refused the connection: {connack!r}")

    def send(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def close(self) -> None:
        try:
            self.sock.sendall(DISCONNECT)
        finally:
            self.sock.close()
