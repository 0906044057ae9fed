"""Publisher worker: a share of the simulated devices, publishing telemetry at a fixed rate.

Each payload is `{"sent": <time.time()>, "n": <per-device sequence>, "v": <value>}`, so the gateway
turns one message into three readings (`sent`, `n`, `v`). Runs in its own process; talks to the
orchestrator over a multiprocessing Connection:

  worker → ("ready", None) once connected and (unless `warmup` is off) every device sent its
           warm-up message (n = 0)
  orchestrator → ("go", (start_at, rate, duration))   publish `rate` msg/s for `duration` s
  worker → ("done", {...})                            counts, achieved rate, CPU seconds
  orchestrator → ("stop", None)
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from bench.mqtt_wire import RawPublisher, publish_packet, topic_header

TICK_S = 0.002
#: Mosquitto drops QoS 0 messages for a client whose queue overflows; stay well under it.
MAX_BURST = 2000


@dataclass(frozen=True, slots=True)
class PublisherConfig:
    broker_port: int
    prefix: str
    devices: list[str]
    client_id: str
    mode: str = "raw"  # raw | paho
    warmup: bool = True  # False: devices are first seen by the gateway inside the measured window


def payload(n: int) -> bytes:
    return b'{"sent":%.6f,"n":%d,"v":%.1f}' % (time.time(), n, 20.0 + (n % 50) / 10)


class _Paho:
    """The same interface over paho-mqtt, for comparison (`--publisher paho`)."""

    def __init__(self, port: int, client_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.connect("127.0.0.1", port, keepalive=60)
        deadline = time.monotonic() + 10
        while not self.client.is_connected() and time.monotonic() < deadline:
            self.client.loop(timeout=0.05)
        sock = self.client.socket()
        if not self.client.is_connected() or not isinstance(sock, socket.socket):
            raise ConnectionError("paho could not connect")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def publish(self, topic: str, data: bytes) -> None:
        self.client.publish(topic, data, qos=0)

    def service(self) -> None:
        self.client.loop(timeout=0)

    def close(self) -> None:
        self.client.disconnect()


def run(config: PublisherConfig, conn: Connection) -> None:
    """Process entry point."""
    topics = [f"{config.prefix}/{device}/telemetry" for device in config.devices]
    headers = [topic_header(t) for t in topics]
    counters = [0] * len(topics)
    paho = _Paho(config.broker_port, config.client_id) if config.mode == "paho" else None
    raw = None if paho else RawPublisher(config.broker_port, config.client_id)
    try:

        def send(batch: list[tuple[int, int]]) -> None:
            if raw is not None:
                raw.send([publish_packet(headers[i], payload(n)) for i, n in batch])
                return
            assert paho is not None
            for i, n in batch:
                paho.publish(topics[i], payload(n))
            paho.service()

        if config.warmup:
            send([(i, 0) for i in range(len(topics))])  # warm-up: n = 0 registers every device
        conn.send(("ready", None))
        while True:
            command, args = conn.recv()
            if command == "stop":
                return
            start_at, rate, duration = args
            conn.send(("done", _publish(send, counters, start_at, rate, duration)))
    finally:
        if raw is not None:
            raw.close()
        if paho is not None:
            paho.close()


def _publish(
    send: Any, counters: list[int], start_at: float, rate: float, duration: float
) -> dict[str, Any]:
    """Hold `rate` msg/s (round robin over the devices) from `start_at` for `duration` seconds."""
    while (delay := start_at - time.time()) > 0:
        time.sleep(min(delay, 0.05))
    cpu0, t0 = time.process_time(), time.monotonic()
    end = t0 + duration
    sent = 0
    device = 0
    behind_max = 0.0
    devices = len(counters)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * rate) - sent
        if due > 0:
            behind_max = max(behind_max, due / rate)
            batch = []
            for _ in range(min(due, MAX_BURST)):
                n = counters[device] = counters[device] + 1
                batch.append((device, n))
                device = (device + 1) % devices
            send(batch)
            sent += len(batch)
        next_tick = now + TICK_S
        if (pause := next_tick - time.monotonic()) > 0:
            time.sleep(pause)
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    return {
        "sent": sent,
        "elapsed_s": round(elapsed, 3),
        "achieved_rate": round(sent / elapsed, 1) if elapsed else 0.0,
        "cpu_s": round(cpu, 3),
        "max_behind_s": round(behind_max, 4),
    }
