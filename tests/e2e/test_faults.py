"""Real faults on the one-machine stack, few and fast: the host killed outright (SIGKILL, as OOM or a scale-in
does) in the middle of a claimed step, with no claim expired by hand; Azurite killed and started again."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from local.stack import LocalStack

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "support-bot.jsonl"
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"


def drop_sample(deps: Any, folder: str) -> None:
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    datasets.upload_blob(f"{folder}/train.jsonl", SAMPLE.read_bytes(), overwrite=True)
    datasets.upload_blob(f"{folder}/run.json", json.dumps({"owner": OWNER}).encode(), overwrite=True)


def wait_for(deps: Any, predicate: Any, *, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        runs = deps.registry.list_runs()
        if runs and predicate(runs[0]):
            return runs[0]
        time.sleep(0.2)
    return None


def test_a_host_sigkilled_inside_the_evaluation_moves_again_within_two_minutes(tmp_path: Path) -> None:
    """Once the run sat `evaluating` for the claim's whole lifetime (31 min), its temporary deployments up."""
    with LocalStack(log_dir=tmp_path / "logs", data_dir=tmp_path / "azurite") as stack:
        deps = stack.deps()
        drop_sample(deps, "killed")
        caught = wait_for(deps, lambda r: r.state == "evaluating", seconds=300)
        assert caught is not None, f"the run never reached evaluating: {deps.registry.list_runs()}"
        stack.restart("devhost")                                          # SIGKILL; its supervisor starts it again
        killed_at = time.monotonic()
        moved = wait_for(deps, lambda r: r.state != "evaluating", seconds=120)
        assert moved is not None, (f"still evaluating {time.monotonic() - killed_at:.0f} s after the kill; "
                                   f"log: {stack.devhost_log}")
        assert stack.devhost_restarts == 1
        print(f"killed at {caught.state}; {moved.state} {time.monotonic() - killed_at:.0f} s after the kill")


def test_azurite_killed_and_started_again_keeps_every_run(tmp_path: Path) -> None:
    with LocalStack(log_dir=tmp_path / "logs", data_dir=tmp_path / "azurite") as stack:
        deps = stack.deps()
        datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
        datasets.upload_blob("broken.jsonl", b"not json\n", overwrite=True)
        rejected = wait_for(deps, lambda r: r.state == "rejected", seconds=120)
        assert rejected is not None
        old = stack.pids()["azurite"]
        stack.restart("azurite")
        assert stack.pids()["azurite"] != old
        assert deps.registry.require_run(rejected.run_id).state == "rejected"   # the same ports, the same data
        assert any((tmp_path / "azurite").iterdir())
    shutil.rmtree(tmp_path / "azurite", ignore_errors=True)
