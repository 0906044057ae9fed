"""Which MQTT broker the test session uses, chosen by IOTGW_TEST_BROKER.

- unset (or `local`): a `mosquitto` process on a free loopback port, started by the session;
- `host:port`: a broker that is already running (any MQTT 3.1.1 broker: Mosquitto, EMQX, …);
- `docker`: a Mosquitto container via testcontainers (`pip install 'testcontainers[mqtt]'`, and a
  Docker engine), imported only when asked for.

Tests isolate themselves by topic prefix, so a shared broker is fine for them; tests that kill,
freeze or restart their broker, or give it an ACL (the `own_broker` fixture), need one of their
own, and skip when the broker is not a local process (see `own_broker_refusal`).
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.mosquitto import Mosquitto

ENV = "IOTGW_TEST_BROKER"

#: The settings of gateway.brokers.mosquitto_config, for a container's own network namespace.
CONTAINER_CONFIG = """\
listener 1883
allow_anonymous true
set_tcp_nodelay true
max_queued_messages 1000000
persistence false
"""
CONTAINER_IMAGE = "eclipse-mosquitto:2"


class BrokerChoiceError(Exception):
    """Raised when IOTGW_TEST_BROKER asks for a broker that cannot be had; the message says why."""


@dataclass(frozen=True)
class ExternalBroker:
    """A broker the tests use but do not own: same host/port/url as tests.support.Mosquitto."""

    host: str
    port: int
    kind: str = "external"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def choice() -> str:
    """The raw setting: "local", "docker" or "host:port"."""
    return os.environ.get(ENV, "").strip() or "local"


def parse_address(value: str) -> tuple[str, int]:
    """host:port (IPv6 in brackets: [::1]:1883); BrokerChoiceError naming the variable if bad."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BrokerChoiceError(
            f"{ENV}={value!r}: expected host:port (e.g. 127.0.0.1:1883), 'docker', or unset"
        )
    return host, int(port)


def own_broker_refusal() -> str | None:
    """Why a test may not start a broker of its own (to kill, freeze or restart it, or to give
    it an ACL); None when it may."""
    setting = choice()
    if setting == "local":
        return None
    return (
        f"{ENV}={setting}: this test needs a broker of its own (to kill, freeze or restart it, "
        "or to give it an ACL), a local mosquitto it starts (unset IOTGW_TEST_BROKER to run it)"
    )


@contextlib.contextmanager
def session_broker() -> Iterator[Mosquitto | ExternalBroker]:
    """The broker the whole session shares, per IOTGW_TEST_BROKER."""
    setting = choice()
    if setting == "local":
        server = Mosquitto().start()
        try:
            yield server
        finally:
            server.cleanup()
    elif setting == "docker":
        with _container() as broker:
            yield broker
    else:
        host, port = parse_address(setting)
        yield ExternalBroker(host, port)


@contextlib.contextmanager
def _container() -> Iterator[ExternalBroker]:
    # The suite turns warnings into errors; testcontainers' own deprecations are not ours to fix.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", ResourceWarning)  # docker-py's socket on a failed connect
        try:
            with _started_container() as broker:
                yield broker
        finally:
            gc.collect()  # ...collected here, while its warning is still ignored


@contextlib.contextmanager
def _started_container() -> Iterator[ExternalBroker]:
    try:
        from testcontainers.mqtt import MosquittoContainer
    except ImportError:
        raise BrokerChoiceError(
            f"{ENV}=docker needs testcontainers' Mosquitto module: "
            "pip install 'testcontainers[mqtt]' (or unset the variable to use local mosquitto)"
        ) from None
    with tempfile.TemporaryDirectory(prefix="iotgw-container-") as workdir:
        config = Path(workdir) / "mosquitto.conf"
        config.write_text(CONTAINER_CONFIG)
        container = None
        try:
            container = MosquittoContainer(image=CONTAINER_IMAGE)  # connects to Docker already
            container.start(configfile=str(config))
        except Exception as exc:  # docker's errors vary: no socket, no permission, no image
            if container is not None:
                with contextlib.suppress(Exception):
                    container.stop()
            raise BrokerChoiceError(
                f"{ENV}=docker: could not start a {CONTAINER_IMAGE} container "
                f"({type(exc).__name__}: {exc}); is a Docker engine running and reachable?"
            ) from None
        try:
            port = int(container.get_exposed_port(MosquittoContainer.MQTT_PORT))
            yield ExternalBroker(container.get_container_host_ip(), port, kind="docker")
        finally:
            container.stop()
