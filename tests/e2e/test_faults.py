"""Real faults on the one-machine stack, few and fast: the host killed outright (SIGKILL, as OOM or a scale-in
does) in the middle of a claimed step, with no claim expired by hand; Azurite killed and started again."""
from __future__ import annotations

import json
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


# Where the host is killed, step by step: the emulator serves the request (its effect happens: the job is
# created, the temporary deployment asked, the spoke's deployment accepted) and holds its response, so the
# worker is inside the step, holding its claim, when it dies. Polling and keep-alive hold no claim (a timer's
# next tick redoes them), so there is nothing of theirs to take over.
KILL_POINTS = (
    # a file uploaded (once a job is created, the poller adopts it by itself: the run moves without a worker)
    ("uploading", {"method": "POST", "path": "/openai/v1/files"}),
    ("evaluating", {"method": "POST", "path": "/openai/deployments/ev-"}),   # a question to a candidate
    ("deploying:dev", {"method": "PUT", "path": "/deployments/killed"}),       # a spoke's PUT accepted
)
LEASE_SECONDS, LOCK_SECONDS = 4, 6   # short, as the lease and lock are in production (60 s each), but scaled


def test_a_host_sigkilled_inside_each_claimed_step_moves_again_within_two_minutes(tmp_path: Path) -> None:
    """Once a killed host left its run in `evaluating` / `deploying:<env>` for 31 min and `uploading` for 60,
    its temporary deployments up. One run through the stages, the host SIGKILLed inside each claimed step
    (no claim expired by hand): each time the run moves on within two minutes and leaves nothing behind.
    Then Azurite is stopped and started again on its data: nothing of the run is lost (one stack for both)."""
    overrides = {"CLAIM_LEASE_SECONDS": str(LEASE_SECONDS), "DEVHOST_LOCK_SECONDS": str(LOCK_SECONDS)}
    with LocalStack(log_dir=tmp_path / "logs", data_dir=tmp_path / "azurite", env_overrides=overrides) as stack:
        deps = stack.deps()
        took = {}
        for number, (stage, hold) in enumerate(KILL_POINTS, start=1):
            stack.set_faults({"hold": hold})
            if number == 1:
                drop_sample(deps, "killed")
            caught = wait_for(deps, lambda r, s=stage: stack.set_faults({})["held"] > 0 and r.state == s, seconds=240)
            assert caught is not None, (f"never held inside {stage}: {[r.state for r in deps.registry.list_runs()]}; "
                                        f"log {stack.devhost_log}")
            stack.restart("devhost")                            # SIGKILL; its supervisor starts it again
            killed_at = time.monotonic()
            stack.emulator_requests(clear=True)
            stack.set_faults({"hold": None})                    # the dead worker's response goes nowhere
            moved = wait_for(deps, lambda r, s=stage: r.state != s, seconds=120)
            assert moved is not None, (f"still {stage} {time.monotonic() - killed_at:.0f} s after the kill; "
                                       f"log: {stack.devhost_log}")
            took[stage] = time.monotonic() - killed_at
            assert stack.devhost_restarts == number
            assert moved.state not in ("training_failed", "evaluation_failed", "deployment_failed:dev"), moved
            if stage == "evaluating":   # the worker that took over deleted the dead one's deployments first
                temporary = [(r["method"], r["path"]) for r in stack.emulator_requests()
                             if r["surface"] == "arm" and "/deployments/ev-" in r["path"] and r["method"] in ("PUT", "DELETE")]
                assert temporary and temporary[0][0] == "DELETE", temporary
        state = stack.emulator_state()
        # and storage itself stopped and started again (its data on disk): the run and its trail are still there
        azurite = stack.pids()["azurite"]
        stack.restart("azurite")
        assert stack.pids()["azurite"] != azurite and any((tmp_path / "azurite").iterdir())
        run = deps.registry.require_run(moved.run_id)
        trail = [a["to_state"] for a in deps.registry.audit_trail(run.run_id)]
        print("kill -> moving again: " + ", ".join(f"{s} {t:.0f} s" for s, t in took.items()))
    assert run.state.startswith(("deployed:", "deploying:test", "awaiting_approval:")), run.state
    assert len(state["jobs"]) == 1                                               # one hub job, however often killed
    assert not [d for d in state["hub_deployments"] if d["deployment"].startswith("ev-")]   # no temporary deployment left
    assert trail[0] == "received" and trail.count("evaluated") == 1 and trail.count("training") == 1, trail
