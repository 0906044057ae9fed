"""Fixtures for the reliability suite: the integration fixtures (imported, not copied), a fault
proxy, strict JSON checks on every frame and response, and the soak marker's default deselection.

Soak variants (`@pytest.mark.soak`) run only when asked for: `pytest tests/reliability -m soak`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

import tests.support.gateway as gateway_support
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration suite
    add_device,
    gw,
    prefix,
    publisher,
    start_gateway,
)
from tests.reliability.strict import strict_loads
from tests.support.faultproxy import FaultProxy
from tests.support.mosquitto import Mosquitto

_FIGURES: list[tuple[str, str]] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect soak tests unless the -m expression names the soak marker."""
    if "soak" in (config.getoption("markexpr") or ""):
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("soak") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("reliability figures")
        for name, text in _FIGURES:
            terminalreporter.write_line(f"{name}: {text}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Any:
    """Record a measured figure (shown in the terminal summary) for the closing report."""

    def record(text: str) -> None:
        _FIGURES.append((request.node.name, text))

    return record


@pytest.fixture(autouse=True)
def strict_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text frame and JSON response the gateway sends must parse as strict JSON."""
    receive = aiohttp.ClientWebSocketResponse.receive

    async def strict_receive(
        self: aiohttp.ClientWebSocketResponse,
        timeout: Any = None,  # noqa: ASYNC109 - aiohttp's own signature, passed through
    ) -> Any:
        message = await receive(self, timeout)
        if message.type == WSMsgType.TEXT:
            try:
                strict_loads(message.data)
            except ValueError as exc:
                raise AssertionError(
                    f"frame is not strict JSON ({exc}): {message.data!r:.300}"
                ) from exc
        return message

    body = gateway_support._body

    async def strict_body(response: aiohttp.ClientResponse) -> Any:
        if response.content_type == "application/json":
            raw = await response.read()
            try:
                strict_loads(raw)
            except ValueError as exc:
                raise AssertionError(f"response is not strict JSON ({exc}): {raw!r:.300}") from exc
        return await body(response)

    monkeypatch.setattr(aiohttp.ClientWebSocketResponse, "receive", strict_receive)
    monkeypatch.setattr(gateway_support, "_body", strict_body)


@pytest.fixture
async def proxy(own_broker: Mosquitto) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of this test's own broker (point the gateway at `proxy.url`)."""
    async with FaultProxy(own_broker.port) as server:
        yield server


@pytest.fixture
def broker_log(own_broker: Mosquitto) -> Any:
    """The text the test's own broker has logged so far (a callable)."""

    def read() -> str:
        return own_broker._log.read_text(errors="replace")

    return read
