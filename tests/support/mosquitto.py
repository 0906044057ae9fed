"""A real Mosquitto broker on a free loopback port, owned by the test that started it."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from gateway.brokers import find_mosquitto, free_port, mosquitto_config

__all__ = ["Mosquitto", "free_port", "wait_for_port"]


def _mosquitto_binary() -> str:
    found = find_mosquitto()
    if found is None:
        raise RuntimeError("mosquitto not found: run scripts/test, which installs it")
    return found


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    """Return once 127.0.0.1:port accepts a TCP connection, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on 127.0.0.1:{port}") from None
            time.sleep(0.02)


class Mosquitto:
    """Start, stop, kill, freeze and restart one broker process on a fixed port."""

    def __init__(self, port: int | None = None, extra_config: str = "", acl: str = "") -> None:
        """`extra_config`: more mosquitto.conf lines; `acl`: the text of an acl_file (Mosquitto's
        ACL syntax; its first lines, before any `user`, apply to anonymous clients)."""
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self._dir = Path(tempfile.mkdtemp(prefix="iotgw-mosquitto-"))
        self._config = self._dir / "mosquitto.conf"
        if acl:
            acl_file = self._dir / "acl"
            acl_file.write_text(acl)
            extra_config += f"\nacl_file {acl_file}"
        # The demo's own config: loopback only, anonymous, TCP_NODELAY, a deep queue.
        self._config.write_text(mosquitto_config(self.port) + extra_config + "\n")
        self._log = self._dir / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                [_mosquitto_binary(), "-c", str(self._config)], stdout=log, stderr=log
            )
        try:
            wait_for_port(self.port)
        except TimeoutError:
            self.stop()
            raise RuntimeError(
                f"mosquitto did not start: {self._log.read_text()[-2000:]}"
            ) from None
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no clean disconnects, no last wills sent in order."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
