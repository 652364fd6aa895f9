"""`ftops demo --flywheel --json` as a user runs it: the sample reaches prod, prod's production answers (with
planted personal data, secrets, repeats and the champion's own held-out questions) become a student run that
is evaluated against the champion and waits for a verified approver — nothing planted or held out in its
training file — then the drift watch, quiet while production asks what the champion learnt, raising drift
when it asks about something else."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_demo import ftops_demo

pytestmark = pytest.mark.e2e


def test_production_answers_become_a_student_that_waits_for_approval(tmp_path: Path) -> None:
    result, progress = ftops_demo("--flywheel", timeout=600, logs=tmp_path / "logs")
    loop = result["flywheel"]
    assert loop["ok"] and loop["student_state"] == "awaiting_approval:prod"
    assert loop["planted_in_training"] == 0 and loop["held_out_in_training"] == 0
    dropped = loop["curation"]["dropped"]
    assert dropped["personal data or secret"] >= loop["planted"] and dropped["overlaps held-out evaluation data"] >= 5
    assert dropped["duplicate"] >= 1 and dropped["rated below min_rating"] >= 1
    student, champion = loop["student"], loop["champion"]
    assert student["model"].startswith("gpt-4.1-nano") and champion["model"].startswith("gpt-4.1-mini")
    assert student["score"] is not None and champion["score"] is not None
    assert loop["cost_ratio"] is not None and loop["cost_ratio"] < 0.5
    runs = {r["run_id"]: r for r in result["runs"]}
    assert runs[loop["student_run"]]["state"] == "awaiting_approval:prod"   # the demo approves only the sample
    assert "flywheel: run" in progress
    # the drift watch: production on the champion's subjects is not drift; off them, the judge finds it
    drift = loop["drift"]
    assert not drift["on_topic"]["drifted"] and not drift["off_topic"]["held_out_drifted"]
    assert drift["off_topic"]["drifted"] and drift["off_topic"]["production"]["judged"]["drifted"]
    assert "below" in drift["off_topic"]["warning"] and "held-out examples" in drift["off_topic"]["warning"]
