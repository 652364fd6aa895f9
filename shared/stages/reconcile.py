"""Reconcile: the drops no BlobCreated event ever started, and the runs whose drop vanished before intake ended.

Event Grid retries a delivery for 24 hours, then dead-letters it (infra/scripts/postdeploy.sh): an outage longer
than that, a webhook key rotated under the subscription or a subscription created after the upload would drop
a dataset silently. This timer (functions/reconcile.py, `RECONCILE_SCHEDULE`) lists `datasets/` and replays what
the event would have done:

- a drop with no run (by the same run id intake gives it: name + ETag) is started, as its event would have;
- a run stuck in `received`/`validating` for longer than any intake can take (the host's 30-minute function
  timeout, with margin) is resumed from its drop, or, when the drop is gone, rejected with the reason, so it
  is reported (event + status) instead of waiting forever;
- a rejected run whose start blob is still in `datasets/` has not finished its move to quarantine (a folder
  larger than its event's retries could move, QUARANTINE_MAX_SECONDS each): the move goes on.

Starting is idempotent (the run id comes from the blob's ETag, and `start_run` resumes a run it finds), so a
tick that races a late event makes the same run once. Drops younger than `NEW_DROP_GRACE` are left to their
event. One drop that fails does not stop the others; the next tick tries it again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.run import actors, states
from shared.stages.intake import drop_started_by, run_id_for, start_run
from shared.store.events import advance

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
ACTOR = actors.RECONCILE
NEW_DROP_GRACE = timedelta(minutes=15)   # Event Grid normally delivers within seconds; leave new drops to it
STUCK_AFTER = timedelta(hours=1)         # host.json functionTimeout is 30 minutes: no intake runs longer
IN_INTAKE = frozenset({states.RECEIVED, states.VALIDATING})


@dataclass
class ReconcileSummary:
    started: list[str] = field(default_factory=list)        # runs started for drops no event had started
    resumed: list[str] = field(default_factory=list)        # runs stuck in intake, restarted from their drop
    drop_missing: list[str] = field(default_factory=list)   # runs stuck in intake whose drop is gone: rejected
    waiting: list[str] = field(default_factory=list)        # drops too new to judge (left to their event)
    failed: dict[str, str] = field(default_factory=dict)    # blob → why it could not be started this tick


def reconcile_tick(deps: Deps) -> ReconcileSummary:
    now = deps.clock.now()
    summary = ReconcileSummary()
    container = deps.settings.datasets_container
    runs = {r.run_id: r for r in deps.registry.list_runs()}
    present: set[str] = set()
    for blob in deps.blobs.get_container_client(container).list_blobs():
        present.add(f"{container}/{blob.name}")
        drop = drop_started_by(blob.name)
        if drop is None:
            continue
        if now - blob.last_modified < NEW_DROP_GRACE:
            summary.waiting.append(blob.name)
            continue
        run = runs.get(run_id_for(drop, blob.etag))
        # a rejected run whose start blob is still there did not finish its move to quarantine (the blob goes
        # last): its event's retries are spent, so the timer goes on with it (start_run finishes the move)
        if run is not None and not (run.state in IN_INTAKE and _stuck(run, now)) and run.state != states.REJECTED:
            continue
        _start(deps, blob.name, summary.resumed if run is not None else summary.started, summary)
    for run in runs.values():
        if run.state in IN_INTAKE and _stuck(run, now) and run.source not in present:
            _reject_without_drop(deps, run.run_id, run.source)
            summary.drop_missing.append(run.run_id)
    if summary.started or summary.resumed or summary.drop_missing or summary.failed:
        log.warning("reconcile: started %s, resumed %s, drop missing %s, failed %s", summary.started,
                    summary.resumed, summary.drop_missing, summary.failed)
    return summary


def _stuck(run: Any, now: datetime) -> bool:
    return now - datetime.fromisoformat(run.updated_at) > STUCK_AFTER


def _start(deps: Deps, blob_name: str, into: list[str], summary: ReconcileSummary) -> None:
    log.warning("reconcile: %s has no finished intake (its BlobCreated event was lost or died): starting it",
                blob_name)
    try:
        run_id = start_run(blob_name, deps, actor=ACTOR)
    except Exception as exc:
        log.exception("reconcile: %s could not be started", blob_name)
        summary.failed[blob_name] = f"{type(exc).__name__}: {str(exc)[:300]}"
        return
    if run_id:
        into.append(run_id)


def _reject_without_drop(deps: Deps, run_id: str, source: str) -> None:
    message = (f"{source} disappeared before intake finished (deleted or moved): nothing of it can be validated "
               "or trained; drop it again to start a new run")
    log.warning("reconcile: run %s: %s", run_id, message)
    advance(deps, run_id, states.REJECTED, actor=ACTOR, from_states=IN_INTAKE, detail={"errors": [message]},
            error={"code": "drop_missing", "message": message})
