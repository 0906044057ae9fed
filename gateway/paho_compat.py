"""The fence around paho-mqtt's and aiomqtt's internals: the only module that touches them.

The fast read path (gateway/mqtt_reader.py) reads the broker's socket itself, so it needs what
neither library offers publicly: paho's socket attribute (`_sock`, swapped for a view that feeds
paho the packets it should still handle), its keepalive clock (`_msgtime_mutex`,
`_last_bytes_received`), the `on_socket_open` hook that aiomqtt has already taken, aiomqtt's
paho client (`_client`) and its disconnect future (`_disconnected`). A new release may rename or
rework any of them without notice, so `fast_reader_problem()` checks, once per process, that the
installed versions are within the ranges this code was verified against and that the pieces are
there and behave (paho reads a packet fed through the view and updates its keepalive clock); if
not, the link falls back to aiomqtt's public message iterator with one warning.

The public path still uses paho's public `manual_ack_set()`/`ack()` (acknowledging a QoS 1
message only after the pipeline took it), reached through aiomqtt's `_client`: aiomqtt 2.x has
no acknowledgement API of its own (aiomqtt issue 345). Without it, paho acknowledges on receipt.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any

from paho.mqtt import client as paho_mqtt

from gateway.versions import Supported, unsupported_versions

log = logging.getLogger(__name__)

#: The versions the fast read path was verified with: [lowest, first unverified).
SUPPORTED: Supported = {
    # 2.1 keeps its keepalive clock in _last_msg_in: the fence turns the fast path off there.
    "paho-mqtt": ((2, 2), (2, 3)),
    "aiomqtt": ((2, 3), (2, 6)),
}

#: A PINGRESP (MQTT 3.1.1 section 3.13): the packet the self-check feeds paho.
_PINGRESP = b"\xd0\x00"

SocketOption = tuple[int, int, int]
#: Builds the reader for a newly opened socket; returns its readable-event callback.
MakeReader = Callable[[Any, "PahoHooks"], Callable[[], None]]
#: Told each message paho delivers itself (QoS 2): topic, payload.
Deliver = Callable[[str, bytes], None]


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

    @property
    def consumed(self) -> bool:
        return self._offset >= len(self._data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class PahoHooks:
    """What the fast reader asks of paho and aiomqtt for one connection."""

    __slots__ = ("_client", "_paho", "view")

    def __init__(self, client: Any, view: PahoSocket) -> None:
        self._client = client  # the aiomqtt.Client
        self._paho = client._client
        self.view = view

    def ack(self, mid: int) -> None:
        """Acknowledge a QoS 1 PUBLISH (paho's public API; manual acks are on)."""
        self._paho.ack(mid, 1)

    def to_paho(self, packet: bytes) -> bool:
        """Let paho handle one whole packet; False when paho closed the connection over it."""
        self.view.feed(packet)
        result: int = self._paho.loop_read()
        return result == paho_mqtt.MQTT_ERR_SUCCESS

    def to_paho_error(self, error: BaseException | None) -> None:
        """Let paho see a read error (None: end of stream) and report the connection lost."""
        self.view.feed_error(error)
        self._paho.loop_read()

    def received(self) -> None:
        """Bytes arrived: paho's keepalive counts only bytes it read itself."""
        paho = self._paho
        with paho._msgtime_mutex:
            paho._last_bytes_received = paho_mqtt.time_func()

    def lost(self, error: BaseException) -> None:
        """End the connection with `error` (how aiomqtt's own reader reports one)."""
        disconnected = self._client._disconnected
        if not disconnected.done():
            disconnected.set_exception(error)


@functools.cache
def fast_reader_problem() -> str | None:
    """Why the fast read path cannot be used with the installed libraries; None when it can."""
    problem = unsupported_versions(SUPPORTED)
    if problem is not None:
        return problem
    try:
        return _paho_problem()
    except Exception as exc:  # a changed internal can fail in any way: that is the answer
        return f"paho-mqtt's internals changed: {exc!r}"


def _paho_problem() -> str | None:
    """Check on a client that never connects that paho still works the way the reader needs."""
    probe = paho_mqtt.Client(paho_mqtt.CallbackAPIVersion.VERSION2)
    for name in ("_sock", "_msgtime_mutex", "_last_bytes_received"):
        if not hasattr(probe, name):
            return f"paho-mqtt's Client has no {name}"
    if not isinstance(getattr(paho_mqtt.Client, "on_socket_open", None), property):
        return "paho-mqtt's Client.on_socket_open is not a property"
    for name in ("ack", "manual_ack_set", "loop_read"):
        if not callable(getattr(probe, name, None)):
            return f"paho-mqtt's Client.{name} is not callable"
    # Behaviour: a packet fed through the view is read whole, and the keepalive clock moves.
    view = PahoSocket(None)
    view.feed(_PINGRESP)
    probe._sock = view
    probe._last_bytes_received = 0.0
    hooks = PahoHooks(_ProbeClient(probe), view)
    if not hooks.to_paho(_PINGRESP) or not view.consumed:
        return "paho-mqtt no longer reads packets through Client._sock.recv"
    if probe._last_bytes_received == 0.0:
        return "paho-mqtt no longer keeps its keepalive clock in _last_bytes_received"
    probe._last_bytes_received = 0.0
    hooks.received()
    if probe._last_bytes_received == 0.0:
        return "paho-mqtt's keepalive clock did not move"
    probe._sock = None
    return None


class _ProbeClient:
    """Stands in for an aiomqtt client around the probe (only `_client` is used)."""

    def __init__(self, paho: Any) -> None:
        self._client = paho


def client_problem(client: Any) -> str | None:
    """What the fast reader needs of this aiomqtt client that it lacks, or None."""
    if not isinstance(getattr(client, "_client", None), paho_mqtt.Client):
        return "aiomqtt's Client has no paho client in _client"
    if not isinstance(getattr(client, "_disconnected", None), asyncio.Future):
        return "aiomqtt's Client has no _disconnected future"
    return None


def install_fast_reader(
    client: Any,
    make_reader: MakeReader,
    deliver: Deliver,
    socket_options: Iterable[SocketOption] = (),
) -> None:
    """Route an aiomqtt client's incoming packets through a reader of the caller's (before it
    connects; call `fast_reader_problem()` and `client_problem()` first).

    paho stores each new socket as `_sock` and then calls `on_socket_open` (paho 2.x,
    `reconnect()`, in aiomqtt's executor thread). There the socket paho reads becomes a
    PahoSocket, aiomqtt registers its reader callback and starts its housekeeping, and the new
    reader's callback then replaces aiomqtt's for the fd (`call_soon_threadsafe` keeps the order).
    `socket_options` are set on the real socket here: aiomqtt sets them only on a
    `socket.socket`, and after the swap paho hands it the view. Messages paho still delivers
    itself (QoS 2) go to `deliver`; with manual acks on, every acknowledgement is sent after the
    pipeline has taken the message.
    """
    paho = client._client
    loop = asyncio.get_running_loop()
    register_with_aiomqtt = paho.on_socket_open
    options = list(socket_options)

    def on_socket_open(paho_client: Any, userdata: Any, sock: Any) -> None:
        if isinstance(sock, socket.socket):
            for option in options:
                sock.setsockopt(*option)
        view = PahoSocket(sock)
        on_readable = make_reader(sock, PahoHooks(client, view))
        paho_client._sock = view
        if register_with_aiomqtt is not None:
            register_with_aiomqtt(paho_client, userdata, sock)
        loop.call_soon_threadsafe(loop.add_reader, sock.fileno(), on_readable)

    def on_message(_client: Any, _userdata: Any, message: Any) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # brokers refuse such topics; never let one stop the reader
            topic = message._topic.decode("utf-8", "replace")
        deliver(topic, message.payload)
        if message.qos:
            paho.ack(message.mid, message.qos)

    paho.manual_ack_set(True)
    paho.on_message = on_message
    paho.on_socket_open = on_socket_open


def manual_acks(client: Any) -> Callable[[int, int], object] | None:
    """For the public path: turn paho's manual acknowledgements on and return its `ack`, so that
    a message is acknowledged after the pipeline took it; None (paho acknowledges on receipt)
    when aiomqtt's paho client cannot be reached."""
    paho = getattr(client, "_client", None)
    if not isinstance(paho, paho_mqtt.Client):
        return None
    paho.manual_ack_set(True)
    return paho.ack


def retrieve_disconnect_reason(client: Any) -> None:
    """Mark aiomqtt's disconnect future as seen; the link already logs the loss itself.

    aiomqtt 2.x sets an exception on it when the broker vanishes; depending on where the loss was
    noticed nobody retrieves it, and asyncio logs "Future exception was never retrieved".
    """
    disconnected = getattr(client, "_disconnected", None)
    if not isinstance(disconnected, asyncio.Future):
        return
    if disconnected.done() and not disconnected.cancelled():
        disconnected.exception()
