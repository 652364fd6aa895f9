"""`ftops status --stuck`: the runs that made no progress for longer than a bound, and why they may not.

What it reads is what the stages write: the run's state and last update, its outbox (messages written with
a transition but not sent yet), the poller's index of followed jobs, and the dead letters naming the run.
"""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.run import states

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

DEFAULT_BOUND_MINUTES = 60.0

_HINTS = {
    states.RECEIVED: "intake stopped before validating; the blob trigger retries it, or drop the file again",
    states.VALIDATING: "intake stopped while validating; the blob trigger retries it, or drop the file again",
    states.ACCEPTED: "the train request did not run (dead-lettered?); `ftops retrain RUN_ID` starts it again",
    states.UPLOADING: "the train request did not finish (dead-lettered?); `ftops retrain RUN_ID` starts it again",
    states.TRAINED: "the evaluation request did not run (dead-lettered?)",
    states.EVALUATING: "the evaluation stopped (dead-lettered?); its claim expires and a redelivery resumes it",
    states.EVALUATED: "the deploy request did not run (dead-lettered?)",
    "deploying": "the deployment stopped (dead-lettered?); its claim expires and a redelivery resumes it",
    "deployed": "the next environment's deploy request did not run (dead-lettered?)",
}


def _age_minutes(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return 0.0
    return (now - datetime.fromisoformat(stamp)).total_seconds() / 60


def stuck_runs(deps: Deps, *, bound_minutes: float = DEFAULT_BOUND_MINUTES,
               dead_letters: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Runs that are not terminal and made no progress for `bound_minutes`, or that cannot progress (a
    training run whose job nobody follows, messages left unsent), each with the reason and what to do."""
    now = deps.clock.now()
    tracked = dict(deps.registry.tracked_jobs())
    letters: dict[str, list[str]] = {}
    for letter in dead_letters or []:
        letters.setdefault(str(letter.get("subject")), []).append(
            f"{letter.get('queue')}: {letter.get('reason')} ({str(letter.get('description') or '')[:120]})")
    found = []
    for run in deps.registry.list_runs():
        if run.terminal:
            continue
        age = _age_minutes(run.updated_at, now)
        why: list[str] = []
        kind = states.split(run.state)[0]
        if run.outbox:
            why.append(f"{len(run.outbox)} message(s) written but not sent: the outbox timer's sweep sends "
                       "them (is the outbox timer running? OUTBOX_SCHEDULE)")
        if run.state == states.TRAINING and run.job_id and tracked.get(run.run_id) != run.job_id:
            why.append(f"the poller does not follow job {run.job_id}: nothing will record its outcome")
        if age >= bound_minutes:
            if run.state == states.TRAINING:
                why.append(f"no progress recorded for {age:.0f} min (job {run.job_id} is {run.job_status}); "
                           "is the poll timer running?")
            elif run.state == states.WAITING_FOR_QUOTA:
                why.append(f"waiting for hub quota for {age:.0f} min; free hub capacity, or cancel it")
            elif kind == "awaiting_approval":
                why.append(f"waiting {age:.0f} min for a person to approve or reject {states.split(run.state)[1]}")
            else:
                why.append(f"{run.state} for {age:.0f} min with no progress: {_HINTS.get(run.state) or _HINTS.get(kind, '')}")
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
