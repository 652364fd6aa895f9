"""`ftops demo --json` as a user runs it: a subprocess, one JSON object on stdout, exit 0."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "support-bot.jsonl"


def ftops_demo(*args: str, timeout: float, logs: Path) -> tuple[dict[str, Any], str]:
    # its own state file: a demo elsewhere on this machine is not disturbed, nor does it disturb this one
    env = {**os.environ, "FTOPS_LOCAL_STATE": str(logs.parent / "local-stack.json")}
    proc = subprocess.run([sys.executable, "-m", "ftops_cli", "demo", "--json", "--logs", str(logs),
                           "--reports", str(logs.parent / "reports"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False, env=env)
    assert proc.returncode == 0, f"ftops demo exited {proc.returncode}:\n{proc.stderr[-6000:]}"
    assert_no_secret_in_logs(proc.stderr)
    try:
        return json.loads(proc.stdout), proc.stderr     # the whole of stdout is one JSON object
    except ValueError:
        pytest.fail(f"stdout is not one JSON object:\n{proc.stdout[:2000]}\n--- stderr ---\n{proc.stderr[-3000:]}")


def assert_no_secret_in_logs(stderr: str) -> None:
    """Neither the demo's output nor the logs it keeps carry a storage key (even Azurite's public one)."""
    from local.azurite import DEV_KEY
    match = re.search(r"logs in (\S+)", stderr)
    assert match, "the demo did not say where its logs are"
    texts = [stderr] + [p.read_text(errors="replace") for p in Path(match.group(1)).glob("**/*") if p.is_file()]
    assert len(texts) > 1, "no log files kept"
    for text in texts:
        assert DEV_KEY not in text and "AccountKey=" not in text


def slots(deployments: list[dict[str, Any]]) -> set[tuple[str, str, str, str]]:
    return {(d["account"], d["region"], d["deployment"], d["model"]) for d in deployments}


def test_demo_takes_the_sample_from_drop_to_prod(tmp_path: Path) -> None:
    result, progress = ftops_demo(timeout=420, logs=tmp_path / "logs")
    [run] = result["runs"]
    assert run["source"] == "datasets/support-bot/run.json"   # the sample as a folder whose run.json names its owner
    assert run["state"] == "deployed:prod" and run["terminal"] is True
    assert run["job_id"] and run["fine_tuned_model"]
    assert run["evaluation"]["passed"] is True
    deployments = run["deployments"]
    assert sorted((d["environment"], d["region"]) for d in deployments) == [
        ("dev", "eastus"), ("dev", "swedencentral"), ("prod", "eastus"), ("prod", "westeurope"),
        ("test", "eastus2"), ("test", "northcentralus")]
    assert all(d["state"] == "active" and d["last_ping"] for d in deployments)
    assert {d["deployment"] for d in deployments} == {deployments[0]["deployment"]}   # same name everywhere
    # the emulator's own view, independent of the registry: one job, the same six deployments
    assert result["emulator"]["jobs_created"] == 1
    assert slots(result["emulator"]["deployments"]) == slots(deployments)
    assert result["dead_letters"] == []
    # prod was opened by a signed-in person through the operator API, not by a message on a queue
    assert re.search(r"approved \S+ into prod through the operator API as Demo Operator \(6f1c2d3e-", progress)
    assert "approval.granted by Demo Operator <6f1c2d3e-0000-4000-8000-0000000000a1>" in progress
    # the console's address while it ran; the reports kept on disk after the in-memory storage is gone
    assert re.search(r"console: http://127\.0\.0\.1:\d+/api/console/", progress)
    kept = {Path(p).name: Path(p) for p in run["reports_on_disk"]}
    assert {"validation.html", "evaluation.html", "evaluation.json"} <= set(kept)
    assert all(p.is_file() for p in kept.values()) and f"reports kept in {tmp_path / 'reports'}" in progress
    assert not (tmp_path / "local-stack.json").exists()   # the state file goes with the stack


def test_chaos_still_one_job_per_accepted_dataset_and_nothing_lost(tmp_path: Path) -> None:
    datasets = tmp_path / "datasets"
    (datasets / "support-bot").mkdir(parents=True)
    shutil.copy(SAMPLE, datasets / "support-bot" / "train.jsonl")   # prod needs an owner: a run folder names it
    (datasets / "support-bot" / "run.json").write_text(json.dumps({"owner": "6f1c2d3e-0000-4000-8000-0000000000b2"}))
    (datasets / "broken.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    result, _ = ftops_demo("--chaos", "--datasets", str(datasets), "--timeout", "900", timeout=1000, logs=tmp_path / "logs")
    runs = {r["source"]: r for r in result["runs"]}
    assert set(runs) == {"datasets/support-bot/run.json", "datasets/broken.jsonl"}   # one run per drop
    assert all(r["terminal"] for r in runs.values())
    broken, good = runs["datasets/broken.jsonl"], runs["datasets/support-bot/run.json"]
    assert broken["state"] == "rejected" and broken["job_id"] is None and broken["evaluation"] is None
    assert good["state"] == "deployed:prod" and good["job_id"]
    # duplicate deliveries, faults and a host restart, yet exactly one job for the one accepted dataset
    assert result["emulator"]["jobs_created"] == 1
    assert slots(result["emulator"]["deployments"]) == slots(good["deployments"])
    assert len(good["deployments"]) == 6 and all(d["last_ping"] for d in good["deployments"])
    assert result["dead_letters"] == [], "messages were dead-lettered under chaos"
    for run in runs.values():   # every terminal run has its full audit trail: created, then each step, once
        assert full_trail(run["trail"], run["state"]), (run["source"], run["trail"])


def full_trail(trail: list[list[str | None]], state: str) -> bool:
    """run.created (→ received), then transitions each leaving the state the one before reached, to `state`."""
    return (bool(trail) and trail[0] == [None, "received"] and trail[-1][1] == state
            and all(before[1] == after[0] for before, after in pairwise(trail)))


def test_a_trail_with_a_lost_record_is_not_full() -> None:
    whole = [[None, "received"], ["received", "validating"], ["validating", "rejected"]]
    assert full_trail(whole, "rejected")
    assert not full_trail(whole[1:], "rejected")                 # run.created lost
    assert not full_trail([whole[0], whole[2]], "rejected")      # a step lost
    assert not full_trail(whole[:2], "rejected")                 # the last one lost
