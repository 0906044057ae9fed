from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.broker_choice import BrokerChoiceError, own_broker_refusal, session_broker
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import ENV as POSTGRES_ENV
from tests.support.postgres import PostgresServer

#: The settings that force the libraries' public read and write paths (gateway/paho_compat.py,
#: gateway/ws_socket.py): what `--public-paths` applies to every gateway a test starts.
PUBLIC_PATHS = {"broker.fast_reader": False, "ws.fast_writer": False}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--public-paths",
        action="store_true",
        help="run gateways on aiomqtt's message iterator and aiohttp's send_frame/ping instead "
        "of the fast read and write paths (scripts/test runs the broker tests both ways)",
    )


@pytest.fixture(scope="session")
def path_settings(request: pytest.FixtureRequest) -> dict[str, bool]:
    """Config overrides for the read and write paths this run tests (empty: the defaults)."""
    return dict(PUBLIC_PATHS) if request.config.getoption("--public-paths") else {}


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """One real broker for the session (IOTGW_TEST_BROKER: local mosquitto by default, a running
    host:port, or a docker container); tests isolate themselves by topic prefix."""
    try:
        with session_broker() as server:
            # An ExternalBroker offers the same host, port and url that tests use.
            yield server  # type: ignore[misc]
    except BrokerChoiceError as exc:
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)


@pytest.fixture
def own_broker(request: pytest.FixtureRequest) -> Iterator[Mosquitto]:
    """A broker this test alone may kill, freeze or restart (a local mosquitto only). Options
    for tests.support.mosquitto.Mosquitto (an ACL, more config lines) come by indirect
    parametrization: `@pytest.mark.parametrize("own_broker", [{"acl": ...}], indirect=True)`."""
    refusal = own_broker_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    server = Mosquitto(**getattr(request, "param", {})).start()
    yield server
    server.cleanup()


@pytest.fixture
def roomy_broker() -> Iterator[Mosquitto]:
    """A broker of this test's own that passes payloads of any size (message_size_limit 0 after
    the gateway-matched limit of the shared config), for tests of the gateway's own cap."""
    refusal = own_broker_refusal()
    if refusal is not None:
        pytest.skip(refusal)
    server = Mosquitto(extra_config="message_size_limit 0").start()
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """A PostgreSQL server for the session (IOTGW_TEST_POSTGRES, or one started from Debian's
    binaries in a temp dir); tests take a database of their own from it (`pg_database`)."""
    external = os.environ.get(POSTGRES_ENV)
    if external:
        yield external
        return
    server = PostgresServer().init()
    try:
        yield server.dsn
    finally:
        server.cleanup()
