"""Fixtures for the client tests: the integration fixtures (a real Mosquitto, the real gateway on
a free port, device stand-ins), imported rather than copied."""

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration suite
    add_device,
    gw,
    prefix,
    publisher,
    start_gateway,
)
