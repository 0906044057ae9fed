"""Fixtures for the client tests: the integration fixtures (a real Mosquitto, the real gateway on
a free port, device stand-ins), imported rather than copied."""

from typing import Any

import pytest

from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration suite
    add_device,
    gw,
    prefix,
    publisher,
    start_gateway,
)

_FIGURES: list[tuple[str, str]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("client figures")
        for name, text in _FIGURES:
            terminalreporter.write_line(f"{name}: {text}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    """Record a measured figure (shown in the terminal summary) for the closing report."""

    def record(text: str) -> None:
        _FIGURES.append((request.node.name, text))

    return record
