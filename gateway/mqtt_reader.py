"""The broker link's read path: the broker's socket read a chunk at a time, PUBLISH packets
handed straight to the pipeline, everything else to paho.

Why it exists (docs/performance.md, "Ingest"): paho reads a packet a byte or two at a time
(command, each length byte, then the body: three `recv()` calls), aiomqtt's reader callback
handles one packet per readable event, and paho spends ~25 µs of Python on a QoS 0 PUBLISH
(locks, a logging call, an MQTTMessage, topic-filter matching) — together most of ingest's cost.

How it fits in: paho keeps owning the connection — connect, subscribe, publish, keepalive,
QoS 2, acknowledgements, errors and disconnects. It reads through `PahoSocket`, which only ever
gives it whole packets that this module decided paho should handle. The module's reader callback
replaces aiomqtt's for the socket's fd (`install`). A PUBLISH at QoS 0 or 1 (MQTT 3.1.1, the
protocol the link speaks) is decoded here — fixed header, topic, packet id, payload — and a QoS 1
one is acknowledged after the pipeline has taken it, through paho's public `ack()`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any

from paho.mqtt import client as paho_mqtt

log = logging.getLogger(__name__)

#: One readable event reads at most this much. 16 KiB is ~150 telemetry messages, a few
#: milliseconds of work before the event loop runs anything else again.
READ_CHUNK = 16 * 1024

PUBLISH = 0x30
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


class PahoSocket:
    """The socket as paho sees it: reads come from `feed()`, everything else goes to the socket.

    paho's `loop_read()` calls `recv()` until it raises BlockingIOError; fed one packet, it
    handles exactly that packet. A read error or end of stream is fed the same way, so paho
    reports the lost connection exactly as if it had read the socket itself.
    """

    __slots__ = ("_data", "_error", "_offset", "_sock")

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._offset = 0
        self._error: BaseException | None = None

    def feed(self, packet: bytes) -> None:
        self._data, self._offset = packet, 0

    def feed_error(self, error: BaseException | None) -> None:
        """`None` is the end of the stream (`recv` returns b"")."""
        self._error = error or EOFError()

    def recv(self, size: int) -> bytes:
        start = self._offset
        if start < len(self._data):
            self._offset = start + size
            return self._data[start : start + size]
        if self._error is not None:
            if isinstance(self._error, EOFError):
                return b""
            raise self._error
        raise BlockingIOError

    def pending(self) -> int:
        """aiomqtt's own reader callback loops while this is positive; it must see 0."""
        return 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PacketReader:
    """Reads the broker's socket on readable events and routes each complete packet.

    A packet that spans several reads is kept as a list of chunks and joined once, when its last
    byte has arrived: joining on every read copied a large packet again for each chunk (a 48 MiB
    PUBLISH took 24 s of CPU). A PUBLISH whose payload exceeds `max_payload` is never assembled:
    once its variable header is in, it is counted (`oversize`), acknowledged at QoS 1 so the
    broker does not send it again, and its remaining bytes are discarded as they arrive.
    """

    def __init__(
        self,
        client: Any,
        sock: Any,
        handle: Handle,
        oversize: Oversize | None = None,
        max_payload: int = 1 << 28,
    ) -> None:
        self._client = client  # the aiomqtt.Client (its `_disconnected` is how errors surface)
        self._paho = client._client
        self._sock = sock
        self._view = PahoSocket(sock)
        self._handle = handle
        self._oversize = oversize
        self._max_payload = max_payload
        self._pending: list[bytes] = []  # the start of a packet whose end has not arrived yet
        self._pending_bytes = 0
        self._wanted = 0  # how many pending bytes the packet needs before it can be routed
        self._skip = 0  # bytes of an oversize PUBLISH still to discard

    @property
    def paho_socket(self) -> PahoSocket:
        return self._view

    def on_readable(self) -> None:
        try:
            chunk = self._read()
            if chunk is not None:
                self._take(chunk)
        except OSError as exc:  # the connection broke, or the broker sent something not MQTT
            self._lost(exc)
        except Exception as exc:
            # Handlers never raise (BrokerLink guards them): this is a bug in the reader itself,
            # whose state can no longer be trusted. Say so loudly and start a fresh connection.
            log.exception("bug in the MQTT read path; dropping the connection")
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        disconnected = self._client._disconnected
        if not disconnected.done():
            disconnected.set_exception(exc)

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
            self._to_paho_error(exc)
            return None
        if not chunk:
            self._to_paho_error(None)
            return None
        paho = self._paho
        with paho._msgtime_mutex:  # paho's keepalive counts bytes it did not read itself
            paho._last_bytes_received = paho_mqtt.time_func()
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
                handle(
                    data[cursor + 2 : topic_end].decode("utf-8", "replace"),
                    data[payload_start:packet_end],
                )
                if qos:
                    self._paho.ack(data[topic_end] << 8 | data[topic_end + 1], 1)
            elif packet_end > end:
                return position, packet_end
            elif not self._to_paho(data[position:packet_end]):
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
            self._paho.ack(data[topic_end] << 8 | data[topic_end + 1], 1)

    def _to_paho(self, packet: bytes) -> bool:
        self._view.feed(packet)
        result: int = self._paho.loop_read()
        return result == paho_mqtt.MQTT_ERR_SUCCESS

    def _to_paho_error(self, error: BaseException | None) -> None:
        self._view.feed_error(error)
        self._paho.loop_read()


def install(
    client: Any, handle: Handle, oversize: Oversize | None = None, max_payload: int = 1 << 28
) -> None:
    """Route an aiomqtt client's incoming packets through a PacketReader (before it connects).

    paho stores each new socket as `_sock` and then calls `on_socket_open` (paho 2.x,
    `reconnect()`, in aiomqtt's executor thread). There the socket paho reads becomes a
    PahoSocket, aiomqtt registers its reader callback and starts its housekeeping, and this
    module's callback then replaces aiomqtt's for the fd (`call_soon_threadsafe` keeps the order).
    Messages paho still delivers itself (QoS 2) come through `on_message`; with manual acks on,
    every acknowledgement is sent after the pipeline has taken the message.
    """
    paho = client._client  # private: aiomqtt has no hook for any of this
    loop = asyncio.get_running_loop()
    register_with_aiomqtt = paho.on_socket_open

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        reader = PacketReader(client, sock, handle, oversize, max_payload)
        paho_client._sock = reader.paho_socket
        if register_with_aiomqtt is not None:
            register_with_aiomqtt(paho_client, userdata, sock)
        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), reader.on_readable)

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; never let one stop the reader
            topic = message._topic.decode("utf-8", "replace")
        handle(topic, message.payload)
        if message.qos:
            paho.ack(message.mid, message.qos)

    paho.manual_ack_set(True)
    paho.on_message = on_message
    paho.on_socket_open = on_socket_open
