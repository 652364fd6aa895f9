"""The reconcile timer against Azurite: a drop whose BlobCreated event was lost still becomes a run, once; a run
whose drop vanished before intake finished is rejected with the reason instead of waiting forever."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest

from shared.run import states
from shared.stages.intake import handle_blob_created
from shared.stages.reconcile import NEW_DROP_GRACE, STUCK_AFTER, reconcile_tick
from shared.store.registry import RunRecord

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"


def drop(deps, name: str, body: bytes) -> None:
    deps.blobs.get_container_client(deps.settings.datasets_container).upload_blob(name, body, overwrite=True)


def later(deps, by: timedelta) -> None:
    at = datetime.now(UTC) + by
    deps.clock = SimpleNamespace(now=lambda: at)


def test_a_drop_whose_event_never_came_is_started_once_and_the_late_event_finds_it(make_deps):
    deps = make_deps()
    drop(deps, "lost-event.jsonl", SAMPLE.read_bytes())

    later(deps, NEW_DROP_GRACE / 3)   # too new: its event may still be on the way
    first = reconcile_tick(deps)
    assert first.waiting == ["lost-event.jsonl"] and first.started == [] and deps.registry.list_runs() == []

    later(deps, NEW_DROP_GRACE + timedelta(minutes=1))
    second = reconcile_tick(deps)
    [run_id] = second.started
    run = deps.registry.require_run(run_id)
    assert run.state == states.ACCEPTED and run.source.endswith("/lost-event.jsonl")
    assert deps.registry.audit_trail(run_id)[0]["actor"] == "ftops.reconcile"   # who noticed the lost event

    assert reconcile_tick(deps).started == []                  # a second tick: nothing new
    assert handle_blob_created("lost-event.jsonl", deps) == run_id   # the event, a day late: the same run
    assert [r.run_id for r in deps.registry.list_runs()] == [run_id]


def test_a_run_stuck_in_intake_is_resumed_or_rejected_when_its_drop_is_gone(make_deps):
    deps = make_deps()
    container = deps.settings.datasets_container
    drop(deps, "stuck.jsonl", SAMPLE.read_bytes())
    etag = deps.blobs.get_blob_client(container, "stuck.jsonl").get_blob_properties().etag
    from shared.stages.intake import drop_started_by, run_id_for
    stuck_id = run_id_for(drop_started_by("stuck.jsonl"), etag)
    deps.registry.create_run(RunRecord(run_id=stuck_id, source=f"{container}/stuck.jsonl"), actor="test")
    deps.registry.create_run(RunRecord(run_id="gone-0000000000", source=f"{container}/gone.jsonl"), actor="test")

    later(deps, STUCK_AFTER / 2)   # an intake may still be running: leave both alone
    assert reconcile_tick(deps).drop_missing == []
    assert deps.registry.require_run("gone-0000000000").state == states.RECEIVED

    later(deps, STUCK_AFTER + timedelta(minutes=5))
    summary = reconcile_tick(deps)
    assert summary.resumed == [stuck_id] and deps.registry.require_run(stuck_id).state == states.ACCEPTED
    assert summary.drop_missing == ["gone-0000000000"]
    gone = deps.registry.require_run("gone-0000000000")
    assert gone.state == states.REJECTED and gone.error["code"] == "drop_missing"
    assert "gone.jsonl disappeared before intake finished" in gone.error["message"]


def test_a_rejected_drop_whose_move_to_quarantine_never_finished_is_moved_by_the_timer(make_deps_own_storage):
    """A rejected folder too large to move in the retries its event got (each moves what QUARANTINE_MAX_SECONDS
    allows) stayed half in datasets/ for good: the timer finishes the move."""
    from shared.stages.intake import QuarantineUnfinished
    deps = make_deps_own_storage(QUARANTINE_MAX_SECONDS="0")
    for i in range(300):
        drop(deps, f"big/notes-{i:03d}.txt", b"x")
    drop(deps, "big/train.jsonl", b"not json\n")
    drop(deps, "big/run.json", b"{}")
    with pytest.raises(QuarantineUnfinished):
        handle_blob_created("big/run.json", deps)   # its last retry: the event is spent

    later(deps, NEW_DROP_GRACE + timedelta(minutes=1))
    summary = reconcile_tick(deps)
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    assert not list(datasets.list_blobs(name_starts_with="big/"))
    [run_id] = summary.resumed
    assert deps.registry.require_run(run_id).state == states.REJECTED
