"""Fixtures: Azurite and the hub/spoke emulator on free loopback ports, always stopped; `make_deps`,
which builds the app's real dependencies against them, isolated per test (own containers, queues, tables);
and `artifacts`, a folder per test module kept after the run (its path printed at the end).

`make test` runs the suite in parallel (pytest-xdist, `--dist loadgroup`): each worker is its own process with
its own Azurite and emulator (the session fixtures), and the names a test uses are its own anyway
(local.settings.isolated_deps). An end-to-end module runs whole on one worker, its own lane; every other test
goes to whichever worker is free."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from local.settings import emulator_topology, isolated_deps

ROOT = Path(__file__).resolve().parents[1]
_ARTIFACTS = pytest.StashKey[list[str]]()


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


@pytest.fixture
def make_deps_own_storage(emulator: Any) -> Iterator[Callable[..., Any]]:
    """make_deps on an Azurite of the test's own: Azurite's Delete Blob costs time in proportion to every blob it
    holds (~7 ms a delete at 1,000 blobs, ~400 ms at 20,000), so a test that moves thousands of blobs would pay
    for every blob the worker's earlier tests left in the shared one."""
    from local.azurite import Azurite
    with Azurite() as own:
        yield lambda **overrides: isolated_deps(own, emulator, **overrides)


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Path:
    """A folder kept after the run, one per test module, emptied at its start: `test-artifacts/<module>`
    (git ignores it), or under FTOPS_TEST_ARTIFACTS. Not pytest's temp folders: on a shared machine other
    runs prune them."""
    base = Path(os.environ.get("FTOPS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = base / request.module.__name__.rsplit(".", 1)[-1]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pytestconfig.stash.setdefault(_ARTIFACTS, []).append(str(folder))
    return folder


@pytest.hookimpl(tryfirst=True)   # before pytest-xdist reads the lanes (xdist_group) off the items
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        # Tests that use the servers are integration tests even if their module forgot the marker.
        if {"azurite", "emulator", "make_deps"} & set(getattr(item, "fixturenames", ())) \
                and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.integration)
        if lane := _lane(item):
            item.add_marker(pytest.mark.xdist_group(lane))


def _lane(item: pytest.Item) -> str | None:
    """The worker lane a test must share with others (`make test`, xdist_group), or None: any worker.
    An end-to-end module is one lane: its tests share one costly stack (a module fixture) and one artifacts
    folder. The infra tests are one lane: parsing infra/ (infra_bicep.parsed, cached per process) is their
    cost, paid once there instead of once per worker."""
    module = getattr(item, "module", None)
    if module is None:
        return None
    if item.get_closest_marker("e2e"):
        return module.__name__.rsplit(".", 1)[-1]
    if any(getattr(value, "__module__", None) == "infra_bicep" for value in vars(module).values()):
        return "infra"
    return None


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:   # an xdist worker: its artifact folders go to the controller, which prints them
        workeroutput["artifacts"] = session.config.stash.get(_ARTIFACTS, [])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """pytest-xdist, on the controller: a worker finished."""
    folders = getattr(node, "workeroutput", {}).get("artifacts", [])
    node.config.stash.setdefault(_ARTIFACTS, []).extend(folders)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for folder in sorted(config.stash.get(_ARTIFACTS, [])):
        shots = sorted(p.name for p in Path(folder).glob("*.png"))
        terminalreporter.write_line(f"artifacts: {folder} ({', '.join(shots) or 'empty'})")
