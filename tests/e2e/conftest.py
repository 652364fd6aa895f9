"""End-to-end fixtures: a folder for screenshots and other artifacts, named at the end of the run."""
from __future__ import annotations

from pathlib import Path

import pytest

_ARTIFACTS = pytest.StashKey[list[Path]]()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """A folder kept after the run (pytest's own temp folders: the last three runs)."""
    folder = tmp_path_factory.mktemp("console-screenshots")
    pytestconfig.stash.setdefault(_ARTIFACTS, []).append(folder)
    return folder


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    for folder in config.stash.get(_ARTIFACTS, []):
        shots = sorted(p.name for p in folder.glob("*.png"))
        terminalreporter.write_line(f"artifacts: {folder} ({', '.join(shots) or 'empty'})")
