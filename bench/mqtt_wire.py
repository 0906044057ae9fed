"""A minimal MQTT 3.1.1 client over a plain socket: QoS 0 publishing, one QoS 1 publish to wait
for, and a counting subscriber (CONNECT, PUBLISH, PUBACK, SUBSCRIBE, DISCONNECT).

The load generator's hot path: a tick's messages are encoded into one buffer and written with one
`sendall`, which costs a fraction of paho's per-publish locking and two syscalls (measured in
docs/performance.md). Keepalive is 0 so the broker expects no pings.
"""

from __future__ import annotations

import socket
import struct

from gateway.mqtt_reader import remaining_length


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


def publish_packet(topic: bytes, payload: bytes, retain: bool = False) -> bytes:
    """A QoS 0 PUBLISH; `topic` comes from topic_header()."""
    return (b"\x31" if retain else b"\x30") + varint(len(topic) + len(payload)) + topic + payload


def publish_qos1_packet(topic: bytes, packet_id: int, payload: bytes) -> bytes:
    """A QoS 1 PUBLISH (not retained); the broker answers with PUBACK `packet_id`."""
    body = topic + struct.pack("!H", packet_id) + payload
    return b"\x32" + varint(len(body)) + body


def subscribe_packet(packet_id: int, filters: list[str], qos: int) -> bytes:
    body = struct.pack("!H", packet_id) + b"".join(_string(f) + bytes([qos]) for f in filters)
    return b"\x82" + varint(len(body)) + body


def read_packets(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take every complete packet off the front of `buffer`: (first byte, body) each."""
    packets: list[tuple[int, bytes]] = []
    at = 0
    end = len(buffer)
    while end - at >= 2:
        header = remaining_length(buffer, at + 1, end)
        if header is None:
            break
        length, i = header
        if end - i < length:
            break
        packets.append((buffer[at], bytes(buffer[i : i + length])))
        at = i + length
    del buffer[:at]
    return packets


DISCONNECT = b"\xe0\x00"


class RawPublisher:
    def __init__(self, port: int, client_id: str, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id))
        self._buffer = bytearray()
        self._parsed: list[tuple[int, bytes]] = []
        _kind, body = self.expect({0x20})
        if body[1:2] != b"\x00":
            raise ConnectionError(f"broker refused the connection: {body!r}")

    def send(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def expect(self, kinds: set[int]) -> tuple[int, bytes]:
        """Read until a packet whose first byte is in `kinds` (others are skipped); the socket's
        timeout bounds every read."""
        while True:
            while self._parsed:
                kind, body = self._parsed.pop(0)
                if kind in kinds:
                    return kind, body
            self._receive()
            self._parsed = read_packets(self._buffer)

    def _receive(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("broker closed the connection")
        self._buffer += data

    def count_retained(self, filters: list[str], expected: int, quiet_s: float) -> int:
        """Subscribe (QoS 0) and count the retained PUBLISHes the broker sends, until `expected`
        or nothing arrived for `quiet_s` (a broker that dropped some never sends them)."""
        self.sock.sendall(subscribe_packet(1, filters, 0))
        self.sock.settimeout(quiet_s)
        count = 0
        try:
            while True:
                # 0x31: PUBLISH, QoS 0, retain flag set (MQTT 3.1.1 section 3.3.1).
                count += sum(1 for kind, _ in self._parsed if kind & 0xF7 == 0x31)
                self._parsed = []
                if count >= expected:
                    return count
                self._receive()
                self._parsed = read_packets(self._buffer)
        except TimeoutError:
            return count

    def confirm(self, topic: bytes, packet_id: int = 1) -> None:
        """Publish at QoS 1 and wait for its PUBACK: the broker handles one connection's packets
        in order, so everything sent before has been processed (retained messages stored)."""
        self.sock.sendall(publish_qos1_packet(topic, packet_id, b""))
        while True:
            _, body = self.expect({0x40})
            if body == struct.pack("!H", packet_id):
                return

    def close(self) -> None:
        try:
            self.sock.sendall(DISCONNECT)
        finally:
            self.sock.close()
