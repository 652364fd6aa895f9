"""`ftops status --stuck` after real faults: each says what happened and what works, and the default bound
catches a stall of a few minutes (it was 60 min: a 31-minute stall behind a killed host was never listed)."""
from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from fakes import FixedClock, MemoryRegistry, make_deps

from shared.run import states
from shared.stages import doctor
from shared.stages.evaluation import claim_key
from shared.stages.polling import MISSING_SINCE
from shared.store.registry import RunRecord

NOW = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def _deps(*runs: RunRecord) -> tuple[object, MemoryRegistry]:
    registry = MemoryRegistry()
    for run in runs:
        registry.add_run(run)
    return dataclasses.replace(make_deps(registry=registry), clock=FixedClock(NOW)), registry


def _ago(minutes: float) -> str:
    return (NOW - timedelta(minutes=minutes)).isoformat(timespec="seconds").replace("+00:00", "Z")


def _evaluating(run_id: str, minutes: float) -> RunRecord:
    return RunRecord(run_id=run_id, source="d", state=states.EVALUATING, job_id="j", fine_tuned_model="m.ft",
                     updated_at=_ago(minutes))


def test_each_fault_is_named_with_what_to_do_and_a_few_minutes_is_enough() -> None:
    dead, working, lost = _evaluating("dead", 6), _evaluating("working", 40), _evaluating("lost", 7)
    gone = RunRecord(run_id="gone", source="d", state=states.TRAINING, job_id="ftjob-9", updated_at=_ago(3),
                     metrics={MISSING_SINCE: (NOW - timedelta(minutes=3)).timestamp()})
    unsent = RunRecord(run_id="unsent", source="d", state=states.REJECTED, updated_at=_ago(1),
                       outbox=[{"id": "e1", "queue": "ftops-events", "event": "{}"}])
    deps, registry = _deps(dead, working, lost, gone, unsent)
    registry.track_job("gone", "ftjob-9")
    registry.keys[claim_key(dead)] = "IN_PROGRESS"                         # its host was killed
    registry.leases = {claim_key(dead): (NOW - timedelta(minutes=5)).isoformat()}
    registry.keys[claim_key(working)] = "IN_PROGRESS"                      # renewing its lease: working
    found = {r["run_id"]: " ".join(r["why"]) for r in doctor.stuck_runs(deps)}
    assert set(found) == {"dead", "lost", "gone", "unsent"}
    assert "lease lapsed" in found["dead"] and "takes it over" in found["dead"]
    assert "no worker holds it" in found["lost"] and "dead letters" in found["lost"]
    assert "does not know job ftjob-9" in found["gone"] and "ftops retrain gone" in found["gone"]
    assert "written but not sent" in found["unsent"]                      # terminal, yet not finished
    assert "retrain" not in found["dead"] + found["lost"]                 # refused for an evaluating run


def test_a_rejected_drop_still_being_moved_to_quarantine_is_listed_with_what_finishes_it() -> None:
    """A rejected folder whose move never finished was ignored (a terminal state): the move now goes on in its
    retries and the reconcile timer, and status says so while its start blob is still in datasets/."""
    from shared.stages.intake import drop_started_by, run_id_for
    deps, _ = _deps()
    container = deps.settings.datasets_container
    deps.blobs.get_blob_client(container, "big/run.json").upload_blob(b"{}")
    etag = deps.blobs.get_blob_client(container, "big/run.json").get_blob_properties().etag
    moving = RunRecord(run_id=run_id_for(drop_started_by("big/run.json"), etag), source=f"{container}/big/run.json",
                       state=states.REJECTED, updated_at=_ago(3))
    moved = RunRecord(run_id="moved-0000000000", source=f"{container}/done/run.json", state=states.REJECTED,
                      updated_at=_ago(3))
    deps.registry.add_run(moving)
    deps.registry.add_run(moved)
    found = {r["run_id"]: " ".join(r["why"]) for r in doctor.stuck_runs(deps)}
    assert set(found) == {moving.run_id}
    assert "quarantine" in found[moving.run_id] and "RECONCILE_SCHEDULE" in found[moving.run_id]
