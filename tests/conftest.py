"""Fixtures: Azurite and the hub/spoke emulator on free loopback ports, always stopped; and `make_deps`,
which builds the app's real dependencies against them, isolated per test (own containers, queues, tables)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from local.settings import emulator_topology, isolated_deps


@pytest.fixture(scope="session")
def azurite() -> Iterator[Any]:
    from local.azurite import Azurite
    with Azurite() as server:
        yield server


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    from local.emulator.server import EmulatorServer
    server = EmulatorServer(emulator_topology(), time_scale=1.0, seed=7)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def instant_deployments(emulator: Any) -> Iterator[None]:
    """Deployments provisioned and deleted at once: the number of cases, not ARM's pace, sets the test's time."""
    emulator.control.config(deployment=0, deletion=0)
    yield
    emulator.control.config(deployment=0.5, deletion=0.3)


@pytest.fixture
def make_deps(azurite: Any, emulator: Any) -> Callable[..., Any]:
    """Build Deps for one test; keyword arguments override settings (env names, e.g. SPOKES_CONFIG)."""
    def build(**overrides: str) -> Any:
        return isolated_deps(azurite, emulator, **overrides)

    return build


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the servers are integration tests even if their module forgot the marker.
    for item in items:
        if {"azurite", "emulator", "make_deps"} & set(getattr(item, "fixturenames", ())) \
                and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.integration)
