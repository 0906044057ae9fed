"""Storm worker: a share of a fleet that appears at once, then goes offline at once (S8).

Each device has its own MQTT connection, as real devices do, with a last will (`offline`,
retained) on its status topic. On "appear" the worker connects its devices spread over a window
(the whole fleet within ~2 s), and each announces itself with a retained `online` status: devices
the gateway has never seen. On "wills" it cuts every connection without a DISCONNECT, spread over
a window (~1 s), so the broker publishes every device's will: a power cut. Orchestrator pipe
protocol:

  worker → ("ready", None)
  orchestrator → ("appear", (start_at, window_s))   → ("appeared", {...})
  orchestrator → ("wills", (start_at, window_s))    → ("cut", {...})
  orchestrator → ("stop", None)
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.mqtt_wire import publish_packet, topic_header, varint

#: Pause between groups of connects or cuts (the window is paced in groups, not per device).
TICK_S = 0.01
#: How long connects still under way after the window may take (SYN retries included).
CONNECT_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class StormConfig:
    broker_port: int
    prefix: str
    devices: list[str]


def connect_with_will(client_id: str, will_topic: str, will: bytes) -> bytes:
    """CONNECT (MQTT 3.1.1 section 3.1) with a retained QoS 1 will, clean session, no keepalive."""
    flags = 0x02 | 0x04 | (1 << 3) | 0x20  # clean session, will, will QoS 1, will retain
    # topic_header is MQTT's length-prefixed UTF-8 string, used here for every string field.
    body = topic_header("MQTT") + bytes([4, flags]) + struct.pack("!H", 0)
    body += topic_header(client_id) + topic_header(will_topic)
    body += struct.pack("!H", len(will)) + will
    return b"\x10" + varint(len(body)) + body


def _paced(count: int, start_at: float, window_s: float) -> list[tuple[float, int, int]]:
    """(due time, first, end) groups spreading `count` items evenly over the window."""
    ticks = max(1, int(window_s / TICK_S))
    per = max(1, -(-count // ticks))
    return [
        (start_at + window_s * i / count if count else start_at, i, min(i + per, count))
        for i in range(0, count, per)
    ]


def _wait_until(at: float) -> None:
    while (delay := at - time.time()) > 0:
        time.sleep(min(delay, 0.05))


def run(config: StormConfig, conn: Connection) -> None:
    """Process entry point."""
    sockets: list[socket.socket] = []
    conn.send(("ready", None))
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                return
            if command == "appear":
                conn.send(("appeared", _appear(config, sockets, *args)))
            elif command == "wills":
                conn.send(("cut", _cut(sockets, *args)))
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _appear(
    config: StormConfig, sockets: list[socket.socket], start_at: float, window_s: float
) -> dict[str, Any]:
    """Connect every device, paced over the window; connects are not waited for one by one (a
    broker whose accept queue overflows drops a SYN, and the kernel retries it a second later:
    that device is late, the others are not held up behind it)."""
    _wait_until(start_at)
    t0, cpu0 = time.monotonic(), time.process_time()
    pending = selectors.DefaultSelector()
    failed = 0

    def finish(timeout: float) -> None:
        nonlocal failed
        for key, _ in pending.select(timeout):
            sock, hello = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            pending.unregister(sock)
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                failed += 1
                sock.close()
                continue
            # The CONNACK is never read: nothing else is sent to a client that subscribes to
            # nothing, and its few bytes wait in the socket's buffer.
            sock.send(hello)
            sockets.append(sock)

    for due, first, end in _paced(len(config.devices), start_at, window_s):
        while (delay := due - time.time()) > 0:
            finish(delay)
        for device in config.devices[first:end]:
            status = f"{config.prefix}/{device}/status"
            hello = connect_with_will(f"{config.prefix}-{device}", status, b"offline")
            hello += publish_packet(topic_header(status), b"online", retain=True)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", config.broker_port))
            pending.register(sock, selectors.EVENT_WRITE, hello)
        finish(0)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    while pending.get_map() and time.monotonic() < deadline:
        finish(0.1)
    for key in list(pending.get_map().values()):
        failed += 1
        pending.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    pending.close()
    return {
        "connected": len(sockets),
        "failed": failed,
        "took_s": round(time.monotonic() - t0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
    }


def _cut(sockets: list[socket.socket], start_at: float, window_s: float) -> dict[str, Any]:
    _wait_until(start_at)
    t0, cpu0 = time.monotonic(), time.process_time()
    count = len(sockets)
    for due, first, end in _paced(count, start_at, window_s):
        _wait_until(due)
        for sock in sockets[first:end]:
            # An abortive close (RST): the broker sees the connection lost, not a DISCONNECT, and
            # publishes the will.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
    sockets.clear()
    return {
        "cut": count,
        "took_s": round(time.monotonic() - t0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
    }
