"""A local MQTT broker for `iotgw demo`: mosquitto when installed, else an embedded amqtt.

The broker always runs as a child process on loopback, so the demo is one process tree that Ctrl-C
takes down whole, and a broker problem cannot stall the gateway's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway.config import BrokerConfig
from gateway.errors import GatewayError

BROKER_START_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    return found or next((p for p in MOSQUITTO_PATHS if os.path.exists(p)), None)


def mosquitto_config(port: int, max_payload_bytes: int = BrokerConfig().max_payload_bytes) -> str:
    """A loopback-only, anonymous broker tuned for the gateway (see docs/operations.md)."""
    return (
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        # Nagle's algorithm on the broker's sockets adds ~40 ms to every command round trip.
        "set_tcp_nodelay true\n"
        # The default of 1000 silently drops most of a large fleet's retained meta and status
        # when the gateway subscribes (bench S6: 11,449 of 50,000 metas arrived); the limit
        # must hold twice the devices plus whatever telemetry queues meanwhile.
        "max_queued_messages 1000000\n"
        "persistence false\n"
        # The gateway's own cap (broker.max_payload_bytes): a larger payload would only be
        # dropped by the gateway, after the broker queued and sent all of it.
        f"message_size_limit {max_payload_bytes}\n"
        # Run as whoever started it: switching user (root -> mosquitto) would clear the
        # parent-death signal that stops the broker with the demo (see _die_with_parent).
        f"user {getpass.getuser()}\n"
    )


async def wait_for_port(port: int) -> None:
    """Return once 127.0.0.1:port accepts connections (callers bound it with a timeout)."""
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)  # a child process starting up: nothing to wait on but time
            continue
        writer.close()
        await writer.wait_closed()
        return


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the demo process dies, since its
    own session keeps it from the terminal's signals (a SIGKILLed demo would orphan it)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass(frozen=True, slots=True)
class LocalBroker:
    kind: str  # "mosquitto" or "amqtt"
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def local_broker(port: int = 0, kind: str = "auto") -> AsyncIterator[LocalBroker]:
    """Run a broker child process for the duration of the block.

    `kind` is "mosquitto", "amqtt", or "auto" (mosquitto when installed, else amqtt).
    """
    port = port or free_port()
    mosquitto = find_mosquitto() if kind in ("auto", "mosquitto") else None
    if kind == "mosquitto" and mosquitto is None:
        raise GatewayError("mosquitto is not installed (apt-get install mosquitto)")
    workdir = Path(tempfile.mkdtemp(prefix="iotgw-broker-"))
    if mosquitto is not None:
        config = workdir / "mosquitto.conf"
        config.write_text(mosquitto_config(port))
        kind, argv = "mosquitto", [mosquitto, "-c", str(config)]
    else:
        kind, argv = "amqtt", [sys.executable, "-m", "gateway.embedded_broker", str(port)]
    log_file = (workdir / "broker.log").open("wb")
    # A session of its own: Ctrl-C in a terminal signals the whole foreground process group, and
    # the broker must outlive the devices' goodbyes and the gateway's shutdown; it is stopped last.
    process = await asyncio.create_subprocess_exec(
        *argv,
        stdout=log_file,
        stderr=log_file,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        try:
            async with asyncio.timeout(BROKER_START_TIMEOUT_S):
                await wait_for_port(port)
        except TimeoutError:
            log_file.flush()
            tail = (workdir / "broker.log").read_text(errors="replace")[-1000:]
            raise RuntimeError(f"{kind} did not start on port {port}: {tail}") from None
        yield LocalBroker(kind, port)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
