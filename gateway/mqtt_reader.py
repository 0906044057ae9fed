"""The broker link's fast read path: the broker's socket read a chunk at a time, PUBLISH packets
handed straight to the pipeline, everything else to paho.

Why it exists (docs/performance.md, "Ingest"): paho reads a packet a byte or two at a time
(command, each length byte, then the body: three `recv()` calls), aiomqtt's reader callback
handles one packet per readable event, and paho spends ~25 µs of Python on a QoS 0 PUBLISH
(locks, a logging call, an MQTTMessage, topic-filter matching) — together most of ingest's cost.

How it fits in: paho keeps owning the connection — connect, subscribe, publish, keepalive,
QoS 2, acknowledgements, errors and disconnects. This module only frames the byte stream; what it
needs of paho and aiomqtt beyond their public API (feeding paho a packet, its keepalive clock,
reporting a lost connection) it gets through `gateway.paho_compat.PahoHooks`, the fence that
checks those internals and makes the link fall back to aiomqtt's public message iterator when they
are not what this code was verified with. A PUBLISH at QoS 0 or 1 (MQTT 3.1.1, the protocol the
link speaks) is decoded here — fixed header, topic, packet id, payload — and a QoS 1 one is
acknowledged after the pipeline has taken it, through paho's public `ack()`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from gateway import paho_compat
from gateway.paho_compat import PahoHooks, SocketOption

log = logging.getLogger(__name__)

#: One readable event reads at most this much. 16 KiB is ~150 telemetry messages, a few
#: milliseconds of work before the event loop runs anything else again.
READ_CHUNK = 16 * 1024

PUBLISH = 0x30
_RETAIN = 0x01
_QOS_BITS = 0x06
_ANY_PUBLISH = 0xF0
_TRY_AGAIN = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

Handle = Callable[[str, bytes], None]
#: Told the topic and payload size of a PUBLISH too large to handle (it is dropped).
Oversize = Callable[[str, int], None]


class MalformedPacket(ConnectionError):
    """The broker sent bytes that are not MQTT 3.1.1: the connection is no use any more."""


def remaining_length(data: bytes | bytearray, start: int, end: int) -> tuple[int, int] | None:
    """Decode the remaining length that begins at `data[start]` (MQTT 3.1.1 section 2.2.3: 1 to 4
    bytes of 7 bits each, least significant first, the high bit saying another byte follows).

    Returns (length, index of the first byte after it), or None when `data[:end]` ends before the
    last length byte. Raises MalformedPacket on a fifth length byte.
    """
    length = 0
    shift = 0
    cursor = start
    while cursor < end:
        byte = data[cursor]
        cursor += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return length, cursor
        shift += 7
        if shift > 21:
            raise MalformedPacket("malformed remaining length from the broker")
    return None


class PacketReader:
    """Reads the broker's socket on readable events and routes each complete packet.

    A packet that spans several reads is kept as a list of chunks and joined once, when its last
    byte has arrived: joining on every read copied a large packet again for each chunk (a 48 MiB
    PUBLISH took 24 s of CPU). A PUBLISH whose payload exceeds `max_payload` is never assembled:
    once its variable header is in, it is counted (`oversize`), acknowledged at QoS 1 so the
    broker does not send it again, and its remaining bytes are discarded as they arrive. With
    `skip_retained`, a PUBLISH with the RETAIN flag (sent because a subscription was just made,
    MQTT 3.1.1 §3.3.1.3) is acknowledged and not handed on.
    """

    def __init__(
        self,
        sock: Any,
        paho: PahoHooks,
        handle: Handle,
        oversize: Oversize | None = None,
        max_payload: int = 1 << 28,
        skip_retained: bool = False,
    ) -> None:
        self._sock = sock
        self._paho = paho
        self._handle = handle
        self._oversize = oversize
        self._max_payload = max_payload
        self._skip_retained = skip_retained
        self._pending: list[bytes] = []  # the start of a packet whose end has not arrived yet
        self._pending_bytes = 0
        self._wanted = 0  # how many pending bytes the packet needs before it can be routed
        self._skip = 0  # bytes of an oversize PUBLISH still to discard

    def on_readable(self) -> None:
        try:
            chunk = self._read()
            if chunk is not None:
                self._take(chunk)
        except OSError as exc:  # the connection broke, or the broker sent something not MQTT
            self._paho.lost(exc)
        except Exception as exc:
            # Handlers never raise (BrokerLink guards them): this is a bug in the reader itself,
            # whose state can no longer be trusted. Say so loudly and start a fresh connection.
            log.exception("bug in the MQTT read path; dropping the connection")
            self._paho.lost(exc)

    def _take(self, chunk: bytes) -> None:
        """Route what `chunk` completes; keep an incomplete packet's bytes for the next read."""
        if self._skip:
            if len(chunk) <= self._skip:
                self._skip -= len(chunk)
                return
            chunk = chunk[self._skip :]
            self._skip = 0
        if self._pending:
            self._pending.append(chunk)
            self._pending_bytes += len(chunk)
            if self._pending_bytes < self._wanted:
                return
            chunk = b"".join(self._pending)
            self._pending.clear()
        position, wanted = self._route(chunk)
        if position < len(chunk):
            # At most one read's worth: the packet before it ended in this chunk.
            self._pending.append(chunk[position:])
            self._pending_bytes = len(chunk) - position
            self._wanted = wanted - position

    def _read(self) -> bytes | None:
        sock = self._sock
        try:
            chunk: bytes = sock.recv(READ_CHUNK)
            # TLS: records already decrypted into the SSL object do not make the fd readable.
            while chunk and isinstance(sock, ssl.SSLSocket) and sock.pending():
                chunk += sock.recv(READ_CHUNK)
        except _TRY_AGAIN:
            return None
        except OSError as exc:
            self._paho.to_paho_error(exc)
            return None
        if not chunk:
            self._paho.to_paho_error(None)
            return None
        self._paho.received()
        return chunk

    def _route(self, data: bytes) -> tuple[int, int]:
        """Handle every complete packet in `data`. Returns where the incomplete rest starts, and
        how far `data` would have to reach for that packet to make progress."""
        end = len(data)
        position = 0
        handle = self._handle
        while position < end:
            command = data[position]
            header = remaining_length(data, position + 1, end)
            if header is None:
                return position, end + 1
            length, cursor = header
            packet_end = cursor + length
            qos = (command & _QOS_BITS) >> 1
            if command & _ANY_PUBLISH == PUBLISH and qos < 2:
                if length > self._max_payload:  # perhaps oversize: its header tells
                    if cursor + 2 > end:
                        return position, cursor + 2
                    payload_start = cursor + 2 + (data[cursor] << 8 | data[cursor + 1]) + 2 * qos
                    if payload_start > packet_end:
                        raise MalformedPacket("malformed PUBLISH from the broker")
                    if packet_end - payload_start > self._max_payload:
                        if payload_start > end:
                            return position, payload_start
                        self._refuse(data, cursor, payload_start, packet_end, qos)
                        if packet_end > end:
                            self._skip = packet_end - end
                            return end, end
                        position = packet_end
                        continue
                if packet_end > end:
                    return position, packet_end
                # Variable header: topic length (2 bytes) and topic, then at QoS 1 the packet id.
                topic_end = cursor + 2 + (data[cursor] << 8 | data[cursor + 1])
                payload_start = topic_end + 2 * qos
                if payload_start > packet_end:
                    raise MalformedPacket("malformed PUBLISH from the broker")
                if not (command & _RETAIN and self._skip_retained):
                    handle(
                        data[cursor + 2 : topic_end].decode("utf-8", "replace"),
                        data[payload_start:packet_end],
                    )
                if qos:
                    self._paho.ack(data[topic_end] << 8 | data[topic_end + 1])
            elif packet_end > end:
                return position, packet_end
            elif not self._paho.to_paho(data[position:packet_end]):
                return end, end  # paho closed the connection: the rest is moot
            position = packet_end
        return position, position

    def _refuse(self, data: bytes, cursor: int, payload_start: int, end: int, qos: int) -> None:
        """Count an oversize PUBLISH (never handled) and acknowledge it at QoS 1."""
        topic_end = payload_start - 2 * qos
        if self._oversize is not None:
            self._oversize(
                data[cursor + 2 : topic_end].decode("utf-8", "replace"), end - payload_start
            )
        if qos:
            self._paho.ack(data[topic_end] << 8 | data[topic_end + 1])


def install(
    client: Any,
    handle: Handle,
    oversize: Oversize | None = None,
    max_payload: int = 1 << 28,
    socket_options: Iterable[SocketOption] = (),
    skip_retained: bool = False,
) -> None:
    """Read an aiomqtt client's broker socket with a PacketReader (before it connects)."""

    def make_reader(sock: Any, paho: PahoHooks) -> Callable[[], None]:
        reader = PacketReader(sock, paho, handle, oversize, max_payload, skip_retained)
        return reader.on_readable

    paho_compat.install_fast_reader(client, make_reader, handle, socket_options)
