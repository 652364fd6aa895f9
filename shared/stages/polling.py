"""The poll tick: follow every job that is not finished, with bounded concurrency.

A tick costs what the *active* jobs cost: it reads the `activejobs` index, never the runs table, so 10,000
finished runs add nothing. `POLL_CONCURRENCY` jobs are polled at once; each asks the hub for the job, the
events newer than the run's cursor and (once training can have produced any) the checkpoints. Those three
reads do not depend on each other, so they go out together: a job costs one round trip, not three, and
hub calls in flight stay bounded by 3 × POLL_CONCURRENCY (a gate shared by the whole tick counts them).

Outcomes: succeeded → `trained` (conditional write) and exactly one evaluation request, even when two ticks
overlap (the loser of the ETag race sends nothing; the request is written with `trained`, in the run's
outbox, and named by the job, so a resend after a crash is dropped as a duplicate and a retrain's next job
gets its own);
failed → `training_failed` with the hub's code and message (a safety-check failure names the check and
the harm types); cancelled → `cancelled`. After any of them the run's hub files are deleted
(HUB_FILE_RETENTION=delete).

A job is `succeeded` before its results file exists (Azure logs "Job succeeded.", then "Postprocessing
started.", then "Completed results file: …"): such a job stays `training` with job_status `succeeded`
("awaiting_results") and is polled again, for at most RESULTS_WAIT_SECONDS from when a tick first saw it
so; after that it becomes `trained` without per-step metrics, and the event says the results were missing.

`handle_poll` is the same per-job code for one job, now: a hub webhook (shared.stages.webhooks) hands it a
job that ended, so the run moves on without waiting for the next tick (push first, the timer as fallback).

A job the hub answers 404 for is polled for JOB_MISSING_GRACE_SECONDS more, then its run ends
`training_failed` (code `job_not_found`) with what to do, rather than being polled for ever.
"""
from __future__ import annotations

import json
import logging
import re
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.azure.hub import NO_CHECKPOINTS_YET, CallGate, HubError, HubJob, HubNotFound, note_unknown_status
from shared.run import actors, states
from shared.run.messages import EvaluateRequest, PollRequest, envelope, evaluate_message_id, poll_message_id
from shared.stages.command_checks import STARTABLE
from shared.store.events import advance
from shared.store.hub_jobs import free_job_key, tidy_hub
from shared.store.outbox import flush
from shared.store.registry import InvalidTransition, RunRecord
from shared.store.run_updates import Superseded, update_run

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

ACTOR = actors.POLLING
READS_PER_JOB = 3                   # job, events, checkpoints
SERIES_POINTS = 100                 # per-step metrics kept in the registry; all of them go to a blob
AWAITING_SINCE = "awaiting_results_since"   # in run.metrics while a succeeded job has no results file yet
MISSING_SINCE = "job_missing_since"         # in run.metrics while the hub answers 404 for the job
JOB_MISSING_GRACE_SECONDS = 600.0           # a job the hub does not know for this long ends its run
RECHECK_MAX_SECONDS = 60.0                  # a pushed job awaiting its results file is looked at again this often, at most
# Learn (fine-tuning-safety-evaluation): the two messages a safety failure reads like
_SAFETY_CHECKS = (
    ("training data", re.compile(r"failed RAI checks for harm types:\s*\[?([^\]]*?)\]?\s*(?:\.\s|\.?$)",
                                 re.IGNORECASE)),
    ("model evaluation", re.compile(r"unable to be deployed\. Model evaluation identified .*? above acceptable "
                                    r"thresholds for\s*\[?([^\]]*?)\]?\s*(?:\.\s|\.?$)", re.IGNORECASE | re.DOTALL)),
)


@dataclass
class PollSummary:
    jobs: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)   # updated, unchanged, succeeded, failed, …
    new_events: int = 0
    errors: int = 0
    hub_calls: int = 0
    max_in_flight: int = 0          # hub calls at once (bound: READS_PER_JOB × concurrency)
    max_jobs_in_flight: int = 0     # jobs being polled at once (bound: concurrency)
    concurrency: int = 0
    seconds: float = 0.0

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class GatedHub:
    """Any hub (the real one, or a test's fake) with every call passing through the tick's gate."""

    def __init__(self, hub: Any, gate: CallGate) -> None:
        self._hub, self._gate = hub, gate

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._hub, name)
        if not callable(target):
            return target

        def gated(*args: Any, **kwargs: Any) -> Any:
            with self._gate:
                return target(*args, **kwargs)
        return gated


def poll_tick(deps: Deps, *, concurrency: int | None = None) -> PollSummary:
    started = time.monotonic()
    limit = max(1, concurrency or deps.settings.poll_concurrency)
    gate, job_gate = CallGate(READS_PER_JOB * limit), CallGate(limit)
    # few SDK retries: a job that cannot be read now is read again next tick, and a storm must not stall it
    gated = GatedHub(deps.hub(max_retries=2), gate)
    tracked = deps.registry.tracked_jobs()
    summary = PollSummary(jobs=len(tracked), concurrency=limit)
    if tracked:
        with ThreadPoolExecutor(min(len(tracked), limit), thread_name_prefix="ftops-poll") as jobs, \
                ThreadPoolExecutor(READS_PER_JOB * min(len(tracked), limit), thread_name_prefix="ftops-read") as reads:
            def one(item: tuple[str, str]) -> tuple[str, int]:
                with job_gate:
                    return _poll_safely(deps, gated, *item, reads=reads)
            for outcome, events in jobs.map(one, tracked):
                summary.count(outcome)
                summary.new_events += events
                summary.errors += outcome == "error"
    summary.hub_calls, summary.max_in_flight = gate.calls, gate.max_in_flight
    summary.max_jobs_in_flight = job_gate.max_in_flight
    summary.seconds = round(time.monotonic() - started, 3)
    log.info("poll tick: %d job(s) in %.2f s, %s, %d hub call(s), at most %d in flight", summary.jobs,
             summary.seconds, summary.outcomes, summary.hub_calls, summary.max_in_flight)
    return summary


def handle_poll(request: PollRequest, deps: Deps) -> str:
    """One job, now (a hub webhook said it ended): exactly the per-job code of the tick. A hub error raises, so
    the message is retried; the timer polls the job anyway. A succeeded job whose results file is not posted
    yet is looked at again after 1, 2, 4 … (at most RECHECK_MAX_SECONDS) seconds, until RESULTS_WAIT_SECONDS
    lets it go on without, rather than at the timer's next tick."""
    if (request.run_id, request.job_id) not in deps.registry.tracked_jobs():
        # no longer followed (recorded since, or the run moved on to another job): polling it now could only
        # drop the index entry of the run's next job (poll_job tidies a stale entry by run id)
        log.info("run %s: job %s (webhook %s) is no longer followed; nothing to poll", request.run_id,
                 request.job_id, request.webhook_id)
        return "not_followed"
    outcome, _ = poll_job(deps, deps.hub(max_retries=2), request.run_id, request.job_id)
    log.info("run %s: job %s polled on webhook %s (%s, attempt %d): %s", request.run_id, request.job_id,
             request.webhook_id, request.event, request.attempt, outcome)
    if outcome == "awaiting_results":
        from shared.app.settlement import retry_later
        retry_later(deps, deps.settings.poll_queue, request, poll_message_id(request.run_id, request.webhook_id),
                    delay=min(RECHECK_MAX_SECONDS, 2.0 ** request.attempt), why="its results file is not posted yet")
    return outcome


def _poll_safely(deps: Deps, hub: Any, run_id: str, job_id: str, *, reads: Executor | None) -> tuple[str, int]:
    """One job's failure (transient or a bug) must not stop the others, nor end its run."""
    try:
        return poll_job(deps, hub, run_id, job_id, reads=reads)
    except HubError as exc:
        log.warning("run %s: could not poll job %s this tick: %s", run_id, job_id, exc)
    except Exception:
        log.exception("run %s: polling job %s failed; next tick tries again", run_id, job_id)
    return "error", 0


def poll_job(deps: Deps, hub: Any, run_id: str, job_id: str, *, reads: Executor | None = None) -> tuple[str, int]:
    run = deps.registry.get_run(run_id)
    if run is not None and run.job_id is None and run.state in STARTABLE:
        # tracked by the train handler before it recorded the job: adopted here, in case it never will
        from shared.stages.training import adopt_unrecorded
        return adopt_unrecorded(deps, hub, run, job_id), 0
    if run is None or run.job_id != job_id:
        deps.registry.untrack_job(run_id)   # a stale index entry (retrained, or the run is gone)
        return "stale", 0
    if run.state == states.TRAINED:
        # a tick died between `trained` and the evaluation request: finish its work
        return ("recovered" if _finish_trained(deps, hub, run, []) else "unchanged"), 0
    if run.state != states.TRAINING:
        deps.registry.untrack_job(run_id)   # cancelled or failed and already recorded
        return "stale", 0
    try:
        job, events, checkpoints = _read(hub, run, job_id, reads)
    except HubNotFound as exc:
        return _missing(deps, run, exc), 0
    if job.status != run.job_status:   # recorded before: already said (perhaps by another instance)
        note_unknown_status(run_id, job_id, job.status)
    if events:
        _append_events(deps, run_id, events)
    cursor = events[-1]["id"] if events else run.events_cursor
    common = {"events_cursor": cursor, "checkpoints": checkpoints}
    if job.status == "succeeded" and not job.result_files and not _waited_enough(deps, run):
        return _await_results(deps, run, common), len(events)
    if job.status == "succeeded":
        return _succeeded(deps, hub, run, job, common), len(events)
    if job.status in ("failed", "cancelled"):
        return _ended(deps, hub, run, job, common), len(events)
    latest = next((e["data"] for e in reversed(events) if e["type"] == "metrics" and e["data"]), None)
    if job.status == run.job_status and not events and checkpoints == run.checkpoints:
        return "unchanged", 0
    updates: dict[str, Any] = {"job_status": job.status, **common}
    if latest:
        updates["metrics"] = {"latest": latest}
    try:
        update_run(deps, run_id, {states.TRAINING}, **updates)
    except Superseded:
        return "stale", len(events)
    return "updated", len(events)


def _read(hub: Any, run: RunRecord, job_id: str, reads: Executor | None
          ) -> tuple[HubJob, list[dict[str, Any]], list[dict[str, Any]]]:
    """Job, new events and checkpoints, together. Whether checkpoints can exist is judged from the status
    the last tick saw; on the tick a job leaves the queue they are asked for once more, afterwards."""
    want = run.job_status not in NO_CHECKPOINTS_YET
    if reads is None:
        job, events = hub.retrieve(job_id), hub.new_events(job_id, since=run.events_cursor)
        checkpoints = hub.checkpoints(job_id) if want else None
    else:
        job_read, events_read = reads.submit(hub.retrieve, job_id), reads.submit(hub.new_events, job_id,
                                                                                  since=run.events_cursor)
        checkpoints_read = reads.submit(hub.checkpoints, job_id) if want else None
        job, events = job_read.result(), events_read.result()
        checkpoints = checkpoints_read.result() if checkpoints_read is not None else None
    if checkpoints is None:
        checkpoints = hub.checkpoints(job_id) if job.may_have_checkpoints else run.checkpoints
    return job, events, checkpoints


def _missing(deps: Deps, run: RunRecord, exc: HubNotFound) -> str:
    """The hub answers 404 for the job (deleted, or the hub's data lost): the first tick notes when, later
    ticks wait out JOB_MISSING_GRACE_SECONDS (a replica that has not seen the job yet), then the run ends
    `training_failed` saying so, and is no longer polled. A job that comes back in between is polled on."""
    metrics = dict(run.metrics or {})
    since = metrics.get(MISSING_SINCE)
    now = time.time()
    if since is None:
        try:
            update_run(deps, run.run_id, {states.TRAINING}, metrics={**metrics, MISSING_SINCE: now})
        except Superseded:
            return "stale"
        log.warning("run %s: the hub does not know job %s (%s); ending the run if it still does not in %.0f s",
                    run.run_id, run.job_id, exc, JOB_MISSING_GRACE_SECONDS)
        return "job_missing"
    if now - float(since) < JOB_MISSING_GRACE_SECONDS:
        return "job_missing"
    message = (f"the hub no longer knows job {run.job_id} (404 for {now - float(since):.0f} s: {str(exc)[:300]}); "
               f"nothing more will come of it. Retrain the run (`ftops retrain {run.run_id}`) to train again")
    try:
        advance(deps, run.run_id, states.TRAINING_FAILED, actor=ACTOR, from_states={states.TRAINING},
                detail={"job_id": run.job_id, "code": "job_not_found", "reason": message},
                error={"code": "job_not_found", "message": message, "source": "hub"}, job_status="not_found")
    except InvalidTransition:
        return "lost_race"
    deps.registry.untrack_job(run.run_id)
    free_job_key(deps, run)
    log.warning("run %s: %s", run.run_id, message)
    return "job_not_found"


def _waited_enough(deps: Deps, run: RunRecord) -> bool:
    since = (run.metrics or {}).get(AWAITING_SINCE)
    return since is not None and time.time() - float(since) >= deps.settings.results_wait_seconds


def _await_results(deps: Deps, run: RunRecord, common: dict[str, Any]) -> str:
    """Succeeded, results file not posted yet: record that (once, with the time) and look again next tick."""
    metrics = dict(run.metrics or {})
    metrics.setdefault(AWAITING_SINCE, time.time())
    if run.job_status == "succeeded" and run.metrics == metrics and common["events_cursor"] == run.events_cursor \
            and common["checkpoints"] == run.checkpoints:
        return "awaiting_results"
    try:
        update_run(deps, run.run_id, {states.TRAINING}, job_status="succeeded", metrics=metrics, **common)
    except Superseded:
        return "stale"
    if run.job_status != "succeeded":
        log.info("run %s: job %s succeeded; waiting up to %.0f s for its results file", run.run_id, run.job_id,
                 deps.settings.results_wait_seconds)
    return "awaiting_results"


def _succeeded(deps: Deps, hub: Any, run: RunRecord, job: HubJob, common: dict[str, Any]) -> str:
    metrics = _results(deps, hub, run.run_id, job)
    detail: dict[str, Any] = {"job_id": job.id, "fine_tuned_model": job.fine_tuned_model,
                              "trained_tokens": job.trained_tokens}
    if not job.result_files:
        detail["results_file"] = (f"missing: the hub posted no results file within "
                                  f"{deps.settings.results_wait_seconds:.0f} s of the job's success")
        log.warning("run %s: job %s has no results file; %s", run.run_id, job.id, detail["results_file"])
    elif metrics.get("results_file"):
        detail["results_file"] = metrics["results_file"]
    try:
        request = envelope(EvaluateRequest(run_id=run.run_id), message_id=evaluate_message_id(run.run_id, job.id))
        run = advance(deps, run.run_id, states.TRAINED, actor=ACTOR, from_states={states.TRAINING},
                      detail=detail, send=[(deps.settings.evaluate_queue, request)],
                      fine_tuned_model=job.fine_tuned_model, trained_tokens=job.trained_tokens, metrics=metrics,
                      job_status="succeeded", **common)
    except InvalidTransition:
        return "lost_race"   # an overlapping tick recorded it first; it sends the evaluation request
    _finish_trained(deps, hub, run, job.result_files)
    return "succeeded"


def _finish_trained(deps: Deps, hub: Any, run: RunRecord, result_files: list[str]) -> bool:
    """Send what the `trained` write left in the run's outbox (its event and the one evaluation request,
    named by the job: a recovery or an overlapping tick resends the same ids), stop following the job,
    tidy the hub."""
    if run.outbox:
        flush(deps, run.run_id, run.outbox)
    deps.registry.untrack_job(run.run_id)
    if not result_files and run.job_id:
        result_files = hub.retrieve(run.job_id).result_files
    tidy_hub(deps, hub, run, extra_files=result_files)
    return True


def _ended(deps: Deps, hub: Any, run: RunRecord, job: HubJob, common: dict[str, Any]) -> str:
    if job.status == "failed":
        error = describe_failure(job.error)
        target, detail = states.TRAINING_FAILED, {"job_id": job.id, **error}
        updates: dict[str, Any] = {"error": {**error, "source": "hub"}}
    else:
        target, detail, updates = states.CANCELLED, {"job_id": job.id, "reason": "cancelled on the hub"}, {}
    try:
        run = advance(deps, run.run_id, target, actor=ACTOR, from_states={states.TRAINING}, detail=detail,
                      job_status=job.status, **common, **updates)
    except InvalidTransition:
        return "lost_race"
    if job.status == "failed":
        log.warning("run %s: job %s failed: %s", run.run_id, job.id, detail["reason"])
    deps.registry.untrack_job(run.run_id)
    free_job_key(deps, run)
    tidy_hub(deps, hub, run, extra_files=job.result_files)
    return job.status


def describe_failure(error: dict[str, Any] | None) -> dict[str, Any]:
    """The hub's code and message, plus a sentence a person can act on. A safety failure is recognised by
    the documented messages (not by its code, which Learn does not give) and names its check and harm types."""
    code = (error or {}).get("code")
    message = (error or {}).get("message") or "the hub reported the job as failed without a reason"
    check, harm_types = None, []
    for name, pattern in _SAFETY_CHECKS:
        found = pattern.search(message)
        if found:
            check = name
            harm_types = [h.strip().strip("'\"") for h in found.group(1).split(",") if h.strip().strip("'\"")]
            break
    named = ", ".join(harm_types) or "harm types not named"
    if check == "training data":
        reason = (f"The hub's safety check of the training data failed for {named}: no training ran (and none "
                  f"is billed). Remove or rewrite those examples, then retrain. The hub said: {message}")
    elif check == "model evaluation":
        reason = (f"The hub's safety evaluation of the trained model found {named} above acceptable thresholds: "
                  f"the model cannot be deployed. Review the training data, then retrain. The hub said: {message}")
    else:
        reason = f"The hub failed the job ({code or 'no code'}): {message}"
    return {"code": code, "message": message, "param": (error or {}).get("param"), "safety": check is not None,
            "safety_check": check, "harm_types": harm_types, "reason": reason}


def _results(deps: Deps, hub: Any, run_id: str, job: HubJob) -> dict[str, Any]:
    """results.csv → the full per-step metrics in reports/<run>/training/metrics.json, and in the registry the
    final values plus an evenly thinned series (an entity property holds at most 64 KB)."""
    if not job.result_files:
        return {"final": {}, "steps": 0, "series": []}
    try:
        parsed = hub.results_metrics(job.result_files[0])
    except HubNotFound:   # deleted since (a tidied hub): trained, without per-step metrics — never stuck
        gone = f"gone: the hub no longer has results file {job.result_files[0]} (deleted after an earlier run?)"
        log.warning("run %s: job %s: %s", run_id, job.id, gone)
        return {"final": {}, "steps": 0, "series": [], "results_file": gone}
    path = f"{run_id}/training/metrics.json"
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, path)
    blob.upload_blob(json.dumps(parsed, separators=(",", ":")).encode(), overwrite=True)
    steps = parsed["steps"]
    stride = max(1, -(-len(steps) // SERIES_POINTS))
    series = steps[::stride]
    if steps and series[-1] is not steps[-1]:
        series.append(steps[-1])
    return {"final": parsed["final"], "steps": len(steps), "series": series, "blob": path}


def _append_events(deps: Deps, run_id: str, events: list[dict[str, Any]]) -> None:
    """New job events go to an append blob, reports/<run>/training/events.jsonl (one per line, with the hub's
    id: a crash between this and the cursor write can repeat lines, never lose them)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/training/events.jsonl")
    data = "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in events).encode()
    for offset in range(0, len(data), 4 * 1024 * 1024):   # an append block holds at most 4 MiB
        chunk = data[offset:offset + 4 * 1024 * 1024]
        try:
            blob.append_block(chunk)
        except Exception as exc:
            if getattr(exc, "error_code", None) != "BlobNotFound":
                raise
            try:
                blob.create_append_blob(match_condition=MatchConditions.IfMissing)
            except ResourceExistsError:
                pass
            blob.append_block(chunk)

