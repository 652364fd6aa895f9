"""A run's story as people read it: the stage strip (received → validated → trained → evaluated → each
environment, with how long each step took), the audit trail in words (newest first), relative times and
short ids. Everything escaped (layout.e); built from the operator API's answer only."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.operator.console.layout import Safe, e, short
from shared.run import states

# (label, the state that completes it, the states that end it short)
STEPS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
         ("received", states.RECEIVED, ()), ("validated", states.ACCEPTED, (states.REJECTED,)),
         ("trained", states.TRAINED, (states.TRAINING_FAILED, states.CANCELLED)),
         ("evaluated", states.EVALUATED, (states.EVALUATION_FAILED,)))


def when(stamp: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ago(stamp: Any, now: datetime | None = None) -> Safe:
    """`3 min ago`, the exact time in its title (and machine-readable); the text as it is if it is no time."""
    moment = when(stamp)
    if moment is None:
        return e(stamp or "—")
    seconds = ((now or datetime.now(UTC)) - moment).total_seconds()
    text = "just now" if seconds < 60 else next(f"{seconds // size:.0f} {unit} ago" for size, unit in
                                                 ((86400, "d"), (3600, "h"), (60, "min")) if seconds >= size)
    return Safe(f'<time datetime="{e(stamp)}" title="{e(stamp)}">{e(text)}</time>')


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def short_id(run_id: str, href: str) -> Safe:
    """A link to the run: a long id shortened (its start and its hash's end), the whole id in the title; the
    run page shows it whole in a read-only field to select and copy (no script on these pages)."""
    text = run_id if len(run_id) <= 24 else f"{run_id[:14]}…{run_id[-6:]}"
    return Safe(f'<a href="{e(href)}" title="{e(run_id)}">{e(text)}</a>')


def copyable(run_id: str) -> Safe:
    return Safe(f'<input class=copy readonly value="{e(run_id)}" aria-label="run id (select to copy)" '
                f'size="{min(len(run_id), 48)}">')


def stage_strip(run: dict[str, Any]) -> Safe:
    """One step per stage with its state (done / now / failed / waiting / rolled back / to come) and how long it
    took since the step before; after a retrain, the latest pass counts."""
    trail = run.get("audit") or []
    reached: dict[str, datetime] = {}
    for a in trail:
        moment, to = when(a.get("at")), a.get("to_state")
        if moment is not None and to:
            reached[to] = moment
    retrained = [when(a["at"]) for a in trail if a.get("to_state") == states.UPLOADING and
                 (a.get("detail") or {}).get("retrain")]
    since = max((m for m in retrained if m), default=None)
    state, kind, at = run["state"], *states.split(run["state"])
    steps: list[tuple[str, str, tuple[str, ...]]] = list(STEPS)
    steps += [(env, states.deployed(env), (states.deployment_failed(env),)) for env in run.get("environments") or []]
    items: list[tuple[str, str, str]] = []
    previous = when(run.get("created_at"))
    for label, done, ends in steps:
        moment = when(run.get("created_at")) if label == "received" else reached.get(done)
        if moment is not None and since is not None and moment < since and label not in ("received", "validated"):
            moment = None   # from before the retrain
        status = "done" if moment is not None else "next"
        denied_here = kind == states.APPROVAL_DENIED and status == "next" and not any(
            i[1] == "failed" for i in items)   # the first environment it did not reach
        if state in ends or (label == at and kind in ("deploying", "awaiting_approval", "rolled_back")) or denied_here:
            status = {"deploying": "now", "awaiting_approval": "waiting", "rolled_back": "rolled-back",
                      states.APPROVAL_DENIED: "failed"}.get(kind, "failed")
        took = duration((moment - previous).total_seconds()) if moment and previous and label != "received" else ""
        items.append((label, status, took))
        previous = moment or previous
    last = max((i for i, (_, status, _) in enumerate(items) if status != "next"), default=0)
    items = [(label, "done" if status == "next" and i < last else status, took)   # passed, unrecorded
             for i, (label, status, took) in enumerate(items)]
    words = {"done": "done", "now": "in progress", "waiting": "waiting for approval", "failed": "stopped here",
             "rolled-back": "rolled back", "next": "to come"}
    lis = "".join(f'<li class="{s}" title="{e(words[s])}"><b>{e(label)}</b>'
                  f'<span>{e(took) if took else e(words[s])}</span></li>' for label, s, took in items)
    return Safe(f'<ol class=stages id=stages aria-label="stages">{lis}</ol>')


def describe(a: dict[str, Any]) -> str:
    """One audit record as a sentence: who did what, to what, and why."""
    d, action, who = a.get("detail") or {}, a.get("action") or "", a.get("actor") or "someone"
    env = d.get("environment")
    if action == "approval.granted":
        return f"{who} approved {d.get('model')} into {env} (ticket {d.get('ticket')})"
    if action == "deployment.rolled_back":
        return (f"{who} rolled {env} back from {d.get('from_model')} to {d.get('to_model')}"
                + (f" of run {d.get('to_run')}" if d.get("to_run") else "") + _why(d))
    if action == "deployment.restored":
        return f"{env} serves this run's model {d.get('to_model')} again: {who} rolled it back from {d.get('from_model')}"
    if action == "deployment.superseded":
        return f"run {d.get('by_run')} replaced this run's model in {d.get('slot')} with {d.get('model')}"
    if action == "deployment.auto_retiring":
        return f"auto-retire will remove {len(d.get('slots') or [])} deployment(s): {d.get('detail')}"
    if action == "deployment.auto_retired":
        return f"auto-retire removed this run's deployments ({d.get('reason')})"
    if action == "deployment.retired":
        return f"{who} removed the deployments that served again" + _why(d)
    if action == "deployment.refused":
        return f"the deployment to {env} was refused: {short(d.get('reason') or d, 200)}"
    if action.startswith("api.") and action.endswith(".refused"):
        verb = action.removeprefix("api.").removesuffix(".refused")
        return f"{who} was refused {verb} ({d.get('status')}): {short(d.get('reason') or '', 200)}"
    if action == "command_deadlettered":
        return f"the command {d.get('command')} was refused: {short(d.get('description') or '', 200)}"
    if action.startswith("run.") and a.get("to_state"):
        return _transition(a, d, who)
    return f"{action.replace('.', ' ').replace('_', ' ')} by {who}" + (f": {short(d, 160)}" if d else "")


def _why(d: dict[str, Any]) -> str:
    return f": {d['reason']}" if d.get("reason") else ""


def _transition(a: dict[str, Any], d: dict[str, Any], who: str) -> str:
    to, (kind, env) = a["to_state"], states.split(a["to_state"])
    text = {
        states.RECEIVED: "the drop arrived",
        states.VALIDATING: "validation started",
        states.ACCEPTED: f"validated: {d.get('examples', '?')} examples accepted",
        states.REJECTED: "rejected by validation: " + short("; ".join(d.get("errors") or []) or d, 200),
        states.UPLOADING: ("retrain asked by " + who) if d.get("retrain") else "uploading the training files",
        states.TRAINING: f"training job {d.get('job_id')} running on the hub",
        states.TRAINED: "trained" + (f" ({d.get('fine_tuned_model')})" if d.get("fine_tuned_model") else ""),
        states.EVALUATING: "evaluation started",
        states.EVALUATED: "evaluation passed its gates",
        states.EVALUATION_FAILED: "evaluation failed its gates",
        states.RETIRED: f"retired by {who}" + _why(d),
        states.APPROVAL_DENIED: f"{who} denied promotion to {env or d.get('environment')}" + _why(d),
    }.get(to)
    if text is None:
        text = {"deploying": f"deploying {d.get('model') or ''} to {env}",
                "deployed": f"deployed to {env}" + (f" ({len(d.get('targets') or [])} regions)" if d.get("targets") else ""),
                "awaiting_approval": f"waiting for an approver of {env}",
                "deployment_failed": f"the deployment to {env} failed and was rolled back",
                "rolled_back": f"this run's model was rolled back out of {env} by {who}"}.get(kind, f"→ {to}")
    return text
