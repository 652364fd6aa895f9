"""`ftops status --stuck`: the runs that made no progress for longer than a bound, and why they may not.

What it reads is what the stages write: the run's state and last update, its outbox (messages written with
a transition but not sent yet), the poller's index of followed jobs, and the dead letters naming the run.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.run import states
from shared.stages.deployment import claim_key as deployment_claim
from shared.stages.evaluation import claim_key as evaluation_claim
from shared.stages.polling import JOB_MISSING_GRACE_SECONDS, MISSING_SINCE

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.store.registry import RunRecord

DEFAULT_BOUND_MINUTES = 5.0    # a step that makes no progress this long (a lease and a lock are 1 min by default) is stuck
WAIT_BOUND_MINUTES = 60.0      # states that wait by design (a job training, quota, a person) get longer
MOVE_CHECKED_MINUTES = 24 * 60  # rejected runs this recent are checked for a move to quarantine left unfinished

_HINTS = {
    states.RECEIVED: "intake stopped before validating; the blob trigger retries it, or upload the file again",
    states.VALIDATING: "intake stopped while validating; the blob trigger retries it, or upload the file again",
    states.ACCEPTED: "its train request did not run; `ftops retrain RUN_ID` sends it again",
    states.UPLOADING: "its train request did not finish; `ftops cancel RUN_ID`, then `ftops retrain RUN_ID`",
    states.TRAINED: "its evaluation request did not run; the next poll tick sends it again (is the poll timer running?)",
    states.EVALUATED: "its deploy request did not run (see the dead letters below)",
    "deployed": "the next environment's deploy request did not run (`ftops approve RUN_ID ENV` where it needs one)",
}


def _still_in_datasets(deps: Deps, run: RunRecord) -> bool:
    """The blob that started `run` is still in the datasets container, at the version that made this run."""
    from azure.core.exceptions import ResourceNotFoundError

    from shared.stages.intake import drop_started_by, run_id_for
    container, _, name = run.source.partition("/")
    drop = drop_started_by(name)
    if container != deps.settings.datasets_container or drop is None:
        return False
    try:
        etag = deps.blobs.get_blob_client(container, name).get_blob_properties().etag
    except ResourceNotFoundError:
        return False
    return run_id_for(drop, etag) == run.run_id


def _age_minutes(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    return (now - datetime.fromisoformat(stamp)).total_seconds() / 60


def _step_claim(run: RunRecord) -> str | None:
    """The claim a worker holds while it evaluates or deploys this run (None for other states)."""
    kind = states.split(run.state)[0]
    if run.state == states.EVALUATING:
        return evaluation_claim(run)
    model, environment = run.chosen_model or run.fine_tuned_model, states.split(run.state)[1]
    if kind == "deploying" and model and environment:
        return deployment_claim(run.run_id, environment, model)
    return None


def _worker(deps: Deps, run: RunRecord, now: datetime) -> tuple[bool, str | None]:
    """(a worker holds the step's live lease, what to say when none does)."""
    key = _step_claim(run)
    if key is None:
        return False, None
    claim = deps.registry.claim_status(key)
    if claim is not None and claim["status"] == "IN_PROGRESS" and claim["expires_at"] > now.isoformat():
        return True, None
    if claim is not None and claim["status"] == "IN_PROGRESS":
        return False, (f"the worker that held it stopped (its lease lapsed at {claim['expires_at'][:19]}Z): the "
                       "next delivery of its request takes it over at once")
    return False, ("no worker holds it and none has its request: it comes back within minutes (a busy or quota "
                   "re-send, a lock that expired); if not, the request was lost — see the dead letters below")


def stuck_runs(deps: Deps, *, bound_minutes: float = DEFAULT_BOUND_MINUTES,
               dead_letters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Runs that made no progress for `bound_minutes` (states that wait by design: WAIT_BOUND_MINUTES), or
    that cannot progress (a training run whose job nobody follows or the hub no longer knows, messages left
    unsent — a terminal run's too), each with the reason and what to do."""
    now = deps.clock.now()
    tracked = dict(deps.registry.tracked_jobs())
    letters: dict[str, list[str]] = {}
    for letter in dead_letters or []:
        letters.setdefault(str(letter.get("subject")), []).append(
            f"{letter.get('queue')}: {letter.get('reason')} ({str(letter.get('description') or '')[:120]})")
    found = []
    for run in deps.registry.list_runs():
        age = _age_minutes(run.updated_at, now)
        why: list[str] = []
        kind = states.split(run.state)[0]
        if run.outbox:
            why.append(f"{len(run.outbox)} message(s) written but not sent: the outbox timer's sweep sends "
                       "them (is the outbox timer running? OUTBOX_SCHEDULE)")
        if run.terminal:
            if run.state == states.REJECTED and age < MOVE_CHECKED_MINUTES and _still_in_datasets(deps, run):
                why.append("its files are still being moved to quarantine (its start blob, moved last, is in "
                           f"{run.source}): the blob trigger's retries go on with it, else the reconcile timer "
                           "(RECONCILE_SCHEDULE) finishes the move")
            if why:
                found.append({"run_id": run.run_id, "state": run.state, "since": run.updated_at,
                              "minutes": round(age), "why": why})
            continue
        if run.state == states.TRAINING and run.job_id and tracked.get(run.run_id) != run.job_id:
            why.append(f"the poller does not follow job {run.job_id}: nothing will record its outcome")
        missing = (run.metrics or {}).get(MISSING_SINCE)
        if run.state == states.TRAINING and missing is not None:
            why.append(f"the hub does not know job {run.job_id} (404 for {(now.timestamp() - float(missing)) / 60:.0f}"
                       f" min): the run ends training_failed after {JOB_MISSING_GRACE_SECONDS / 60:.0f} min; then "
                       f"`ftops retrain {run.run_id}`")
        waits = run.state in (states.TRAINING, states.WAITING_FOR_QUOTA) or kind == "awaiting_approval"
        busy, idle = _worker(deps, run, now)
        if age >= (max(bound_minutes, WAIT_BOUND_MINUTES) if waits else bound_minutes) and not busy:
            if run.state == states.TRAINING:
                why.append(f"no progress recorded for {age:.0f} min (job {run.job_id} is {run.job_status}); "
                           "is the poll timer running?")
            elif run.state == states.WAITING_FOR_QUOTA:
                why.append(f"waiting for hub quota for {age:.0f} min; free hub capacity, or `ftops cancel "
                           f"{run.run_id}`")
            elif kind == "awaiting_approval":
                why.append(f"waiting {age:.0f} min for a person to approve or reject {states.split(run.state)[1]}")
            else:
                hint = idle or (_HINTS.get(run.state) or _HINTS.get(kind, "")).replace("RUN_ID", run.run_id)
                why.append(f"{run.state} for {age:.0f} min with no progress: {hint}")
        why += [f"dead-lettered: {text}" for text in letters.get(run.run_id, [])]
        if why:
            found.append({"run_id": run.run_id, "state": run.state, "since": run.updated_at,
                          "minutes": round(age), "why": why})
    return found


def render(found: list[dict[str, Any]], bound_minutes: float) -> str:
    if not found:
        return f"no run is stuck (none without progress for {bound_minutes:.0f} min, nothing left unsent)"
    lines = []
    for r in found:
        lines.append(f"{r['run_id']}  {r['state']}  since {r['since']} ({r['minutes']} min)")
        lines += [f"    - {why}" for why in r["why"]]
    return "\n".join(lines)
