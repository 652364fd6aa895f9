"""End-to-end fixtures: a folder for screenshots and other artifacts, named at the end of the run."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

_ARTIFACTS = pytest.StashKey[list[Path]]()


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest, pytestconfig: pytest.Config) -> Path:
    """A folder kept after the run, one per test module, emptied at its start: `test-artifacts/<module>`
    (git ignores it), or under FTOPS_TEST_ARTIFACTS. Not pytest's temp folders: on a shared machine other
    runs prune them."""
    base = Path(os.environ.get("FTOPS_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    folder = base / request.module.__name__.rsplit(".", 1)[-1]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    pytestconfig.stash.setdefault(_ARTIFACTS, []).append(folder)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for folder in config.stash.get(_ARTIFACTS, []):
        shots = sorted(p.name for p in folder.glob("*.png"))
        terminalreporter.write_line(f"artifacts: {folder} ({', '.join(shots) or 'empty'})")
