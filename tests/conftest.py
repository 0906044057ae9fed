from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.mosquitto import Mosquitto


@pytest.fixture(scope="session")
def broker() -> Iterator[Mosquitto]:
    """One real Mosquitto for the session; tests isolate themselves by topic prefix."""
    server = Mosquitto().start()
    yield server
    server.cleanup()


@pytest.fixture
def own_broker() -> Iterator[Mosquitto]:
    """A broker this test alone may kill, freeze or restart."""
    server = Mosquitto().start()
    yield server
    server.cleanup()
