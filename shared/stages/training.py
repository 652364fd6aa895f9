"""Training on the hub: exactly one fine-tuning job per idempotency key, and the operator commands
(cancel, pause, resume, retrain) that act on it.

Exactly once, even with duplicate deliveries, racing instances and a crash between "job created" and
"job recorded":
1. the job key (files' content hashes + effective training settings) is claimed in the registry;
2. the hub files and the attempt (`job_key`, `job_status="creating"`) are recorded in the run *before* the
   job is created;
3. before creating, the hub is asked for a job made from those files (shared.azure.hub: find_job) and that job
   is adopted instead. A worker that does not hold the claim only ever adopts; it never creates. The creation
   itself is sent once (no SDK retry after a lost answer, which could make a second job): its retry is ours.
Quota refusals are not failures: the run waits (`waiting_for_quota`) and a new, delayed TrainRequest is
sent while the current message completes, so its delivery count is not burned.
"""
from __future__ import annotations

import hashlib
import json
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from shared.app.settlement import PermanentError, retry_later
from shared.azure.hub import (
    HubError,
    HubNotFound,
    HubPermanentError,
    HubQuotaExceeded,
    HubUnsupported,
    JobSpec,
    note_unknown_status,
)
from shared.run import actors, states
from shared.run.messages import RetrainCommand, RunCommand, TrainRequest, envelope
from shared.run.settings import RunSettings
from shared.stages.command_checks import (
    CANCELLABLE,
    STARTABLE,
    cancel_needed,
    check_job_action,
    retrain_settings,
)
from shared.stages.lifecycle import training_closed_problem
from shared.store import claims
from shared.store.blob_io import hash_blob
from shared.store.events import advance, publish
from shared.store.hub_jobs import free_job_key, job_claim_key, tidy_hub
from shared.store.outbox import flush
from shared.store.registry import InvalidTransition, RunRecord
from shared.store.run_updates import Superseded, update_run

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.app.ports import Hub

log = logging.getLogger(__name__)

ACTOR = actors.TRAINING
TRAINABLE_ROLES = ("train", "validation")      # eval stays held out: it never goes to the hub
CREATING_STALE_SECONDS = 3600                   # a job "creating" this long with no job on the hub: its worker is gone
QUOTA_BACKOFF_SECONDS = (60.0, 1800.0)          # first wait, longest wait (doubling, with jitter)
BUSY_RETRY_SECONDS = 30.0                       # another worker holds the key: look again this much later
CREATING = "creating"                           # the poller's index entry while the job is being created


# --- the job key -------------------------------------------------------------------------------------
def job_key(file_hashes: dict[str, str], settings: RunSettings) -> str:
    """sha256 of what makes a job: the files' content and the settings that change training (not owner,
    ticket or thresholds, which do not)."""
    material = {"files": dict(sorted(file_hashes.items())), "base_model": settings.base_model,
                "method": settings.method, "hyperparameters": settings.job_hyperparameters(),
                "grader": settings.grader, "seed": settings.seed, "suffix": settings.suffix}
    return hashlib.sha256(json.dumps(material, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def job_spec(settings: RunSettings, hub_files: dict[str, str]) -> JobSpec:
    hyper = settings.job_hyperparameters()
    method: dict[str, Any] | None = None
    if settings.method != "supervised":
        inner: dict[str, Any] = {"hyperparameters": hyper}
        if settings.method == "reinforcement":
            inner["grader"] = settings.grader
        method = {"type": settings.method, settings.method: inner}
    return JobSpec(model=_model_id(settings.base_model), training_file=hub_files["train"],
                   validation_file=hub_files.get("validation"), seed=settings.seed, suffix=settings.suffix,
                   hyperparameters=hyper, method=method)


def _model_id(base_model: str) -> str:
    """The versioned id Azure's examples send; a name shared.run.models does not know goes as given (the hub
    judges it; intake already refused names validation does not know)."""
    from shared.run.models import UnknownModelError, versioned_model_id
    try:
        return versioned_model_id(base_model)
    except UnknownModelError:
        return base_model


# --- the train handler -------------------------------------------------------------------------------
def handle_train(request: TrainRequest, deps: Deps) -> None:
    run = deps.registry.require_run(request.run_id)
    if run.state not in STARTABLE:
        log.info("run %s is %s: train request (attempt %s) has nothing to do", run.run_id, run.state, request.attempt)
        return
    settings = _settings(run)
    if "train" not in run.data_files:
        raise PermanentError(f"run {run.run_id} has no training file (data_files: {sorted(run.data_files)})")
    hub = deps.hub()
    key = job_key(_file_hashes(deps, run), settings)
    if run.state == states.ACCEPTED:
        try:
            advance(deps, run.run_id, states.UPLOADING, actor=ACTOR, from_states={states.ACCEPTED},
                    detail={"job_key": key[:16]})
        except InvalidTransition:
            pass  # another delivery moved it first; the claim below sorts out who does what
    try:   # before any upload: a method the configured hub API lacks can never be trained there
        hub.require(lambda: hub.surface.require_method(settings.method))
    except HubUnsupported as exc:
        _fail(deps, hub, run.run_id, exc)
        return
    if retired := training_closed_problem(deps, settings.base_model):   # nor can a retired base model
        _fail(deps, hub, run.run_id, HubPermanentError(retired, code="model_retired"))
        return
    lease = deps.settings.claim_lease_seconds
    with claims.hold(deps.registry, job_claim_key(key), ttl_seconds=lease) as claim:
        if claim.completed and claim.result and _finished_elsewhere(hub, run.run_id, claim.result):
            # a repeat of an earlier drop: its own job, once (its own key: a redelivery adopts that job)
            with claims.hold(deps.registry, job_claim_key(f"{key}|{run.run_id}"), ttl_seconds=lease) as own:
                _settle_claim(deps, hub, request, key, settings, own)
        else:
            _settle_claim(deps, hub, request, key, settings, claim)


def _file_hashes(deps: Deps, run: RunRecord) -> dict[str, str]:
    """role → sha256 of each file that goes to the hub. A digest is kept in the run with the ETag of the
    version it was read from: while the blob's ETag is the same, a redelivery (a crash, a quota wait, a busy
    worker) reads nothing again; a changed blob is read afresh."""
    hashes, learned = {}, {}
    for role, path in run.data_files.items():
        if role not in TRAINABLE_ROLES:
            continue
        blob = _blob(deps, path)
        known = run.file_digests.get(path) or {}
        if known.get("sha256") and known.get("etag") == blob.get_blob_properties().etag:
            hashes[role] = known["sha256"]
        else:
            hashes[role], etag = hash_blob(blob)
            learned[path] = {"etag": etag, "sha256": hashes[role]}
    if learned:
        try:
            update_run(deps, run.run_id, STARTABLE, file_digests={**run.file_digests, **learned})
        except Superseded:
            pass   # the run moved on meanwhile: the handler finds that out next
    return hashes


def _finished_elsewhere(hub: Hub, run_id: str, done: dict[str, Any]) -> bool:
    """The key's job belongs to another run and is over: a repeat of an earlier drop (same data and settings).
    Adopting it would follow a job whose files were tidied away (its results file gone): it trains anew."""
    if not done.get("run_id") or done.get("run_id") == run_id:
        return False
    try:
        status = hub.retrieve(str(done["job_id"])).status
    except HubNotFound:
        status = "gone"
    if status in ("succeeded", "failed", "cancelled", "gone"):
        log.info("run %s: job %s of run %s (same data and settings) is %s; this run trains its own", run_id,
                 done["job_id"], done["run_id"], status)
        return True
    return False


def _settle_claim(deps: Deps, hub: Hub, request: TrainRequest, key: str, settings: RunSettings,
                  claim: claims.Claim) -> None:
    run_id = request.run_id
    if claim.completed and claim.result:
        done = claim.result
        log.info("run %s: job key %s already has job %s; adopting it", run_id, key[:12], done.get("job_id"))
        claim.complete(_adopt(deps, hub, run_id, key, str(done["job_id"]), dict(done.get("hub_files") or {})))
        return
    try:
        if claim.owned:
            claim.complete(_create_or_adopt(deps, hub, run_id, key, settings))
        elif adopted := _adopt_or_wait(deps, hub, request, key, settings):
            claim.complete(adopted)
    except HubQuotaExceeded as exc:
        claim.release()
        _wait_for_quota(deps, request, key, exc)
    except HubPermanentError as exc:
        claim.release()
        _fail(deps, hub, run_id, exc)
    except Superseded as exc:
        claim.release()
        log.info("run %s: stopped creating the job: %s", run_id, exc)
    # any other failure (transient, or a bug) leaves `hold`, which frees the key so the retry can claim
    # it; the retry looks for the job first


def _create_or_adopt(deps: Deps, hub: Hub, run_id: str, key: str, settings: RunSettings) -> dict[str, Any]:
    run = deps.registry.require_run(run_id)
    hub_files = {role: fid for role, fid in run.hub_files.items() if role in run.data_files and hub.file_exists(fid)}
    to_upload = {role: (path, f"{run_id}-{role}.jsonl") for role, path in sorted(run.data_files.items())
                 if role in TRAINABLE_ROLES and role not in hub_files}
    if to_upload:
        # a worker killed between an upload's answer and the record below left that file unrecorded:
        # no job can use it (jobs are made from recorded files only), and it counts against the 100
        hub.delete_files(hub.files_named({filename for _, filename in to_upload.values()}))
    for role, (path, filename) in to_upload.items():
        hub_files[role] = hub.upload_file(_blob(deps, path), filename)
        # recorded at once: a retry (quota, crash) reuses the upload instead of adding another file
        update_run(deps, run_id, STARTABLE, hub_files=dict(hub_files), job_key=key)
    for file_id in hub_files.values():
        hub.wait_processed(file_id)
    # the attempt, recorded before the job exists: whoever retries looks for a job made from these files
    update_run(deps, run_id, STARTABLE, hub_files=dict(hub_files), job_key=key, job_status="creating")
    spec = job_spec(settings, hub_files)
    job = hub.find_job(training_file=spec.training_file, validation_file=spec.validation_file, model=spec.model)
    if job is not None:
        log.info("run %s: the hub already has job %s for key %s; adopting it", run_id, job.id, key[:12])
    else:
        _require_a_free_training_slot(deps, run_id)
        # followed before it exists: if this worker dies (its message dead-lettered) once the hub has the job,
        # the poller finds it from the recorded files and adopts it (adopt_unrecorded), never a billed orphan
        deps.registry.track_job(run_id, CREATING)
        job = hub.create_job(spec)
        log.info("run %s: created job %s for key %s", run_id, job.id, key[:12])
    return _adopt(deps, hub, run_id, key, job.id, hub_files, job_status=job.status)


def _adopt_or_wait(deps: Deps, hub: Hub, request: TrainRequest, key: str,
                   settings: RunSettings) -> dict[str, Any] | None:
    """Another worker holds the key (racing, or died holding it): adopt its job if the hub has it (what to
    complete the key with); else look again later. Never create here: that is how two jobs would appear."""
    run = deps.registry.require_run(request.run_id)
    if run.job_key == key and run.hub_files.get("train"):
        spec = job_spec(settings, run.hub_files)
        job = hub.find_job(training_file=spec.training_file, validation_file=spec.validation_file, model=spec.model)
        if job is not None:
            log.info("run %s: adopting job %s created by another worker", run.run_id, job.id)
            return _adopt(deps, hub, run.run_id, key, job.id, dict(run.hub_files), job_status=job.status)
    retry_later(deps, deps.settings.train_queue, request, _retry_base(request.run_id, key), delay=BUSY_RETRY_SECONDS,
                why="another worker is creating the job")
    return None


def _adopt(deps: Deps, hub: Hub, run_id: str, key: str, job_id: str, hub_files: dict[str, str], *,
           job_status: str | None = None) -> dict[str, Any]:
    """Record the job in the run (→ training) and let the poller follow it; returns what marks the key done."""
    note_unknown_status(run_id, job_id, job_status)
    # followed before it is recorded: a crash in between leaves a job the poller still follows (it waits
    # while the run is being started), never a billed job nobody polls
    deps.registry.track_job(run_id, job_id)
    try:
        advance(deps, run_id, states.TRAINING, actor=ACTOR, from_states=STARTABLE, detail={"job_id": job_id},
                job_id=job_id, job_key=key, hub_files=hub_files, job_status=job_status or "created", error=None)
    except InvalidTransition:
        run = deps.registry.require_run(run_id)
        if run.state == states.CANCELLED and run.job_id in (None, job_id):
            # cancelled while we were creating: the job must not run on without a run to follow it
            _cancel_quietly(hub, run_id, job_id)
            deps.registry.untrack_job(run_id)
            return {"job_id": job_id, "hub_files": hub_files, "run_id": run_id}
        if run.job_id != job_id:
            raise
        log.info("run %s: job %s was already recorded", run_id, job_id)
    return {"job_id": job_id, "hub_files": hub_files, "run_id": run_id}


def adopt_unrecorded(deps: Deps, hub: Any, run: RunRecord, job_id: str) -> str:
    """The poller's half of exactly-once: a job the train handler followed (or was creating, `CREATING`) but
    never recorded on the run — it died, its message was dead-lettered — is adopted here. Safe while the
    handler is still at work: whichever records the job first wins, the other finds it recorded (`_adopt`).
    Returns adopted | starting (nothing on the hub yet) | stale (nothing came of it for a claim's lifetime)."""
    if job_id == CREATING:
        job = None
        if run.job_key and run.hub_files.get("train"):
            spec = job_spec(_settings(run), run.hub_files)
            job = hub.find_job(training_file=spec.training_file, validation_file=spec.validation_file,
                               model=spec.model)
        if job is None:
            age = datetime.now(UTC) - datetime.fromisoformat(run.updated_at)
            if age.total_seconds() < CREATING_STALE_SECONDS:
                return "starting"
            deps.registry.untrack_job(run.run_id)   # its handler is gone and made no job: `status --stuck` shows it
            return "stale"
        job_id = job.id
    if not run.job_key:
        return "starting"
    log.warning("run %s: adopting job %s, which its train handler never recorded", run.run_id, job_id)
    _adopt(deps, hub, run.run_id, run.job_key, job_id, dict(run.hub_files))
    return "adopted"


def active_hub_jobs(deps: Deps, run_id: str) -> int:
    """Fine-tuning jobs of other runs ftops follows on the hub (queued, running, paused, or being created)."""
    return len({job for run, job in deps.registry.tracked_jobs() if run != run_id})


def _require_a_free_training_slot(deps: Deps, run_id: str) -> None:
    """ftops's own queue: Azure trains `HUB_CONCURRENT_JOBS` jobs at once per resource (3; Learn quotas-limits)
    and queues the rest where ftops cannot order them; beyond that a run waits here, and says so in status.
    Two runs checking at the same instant may both go ahead (Azure then queues one): the limit is soft."""
    busy, limit = active_hub_jobs(deps, run_id), deps.settings.hub_concurrent_jobs
    if busy >= limit:
        raise HubQuotaExceeded(
            f"{busy} fine-tuning jobs are already queued or running on the hub and it trains {limit} at once "
            f"(HUB_CONCURRENT_JOBS): this run waits in ftops's queue and starts when one finishes",
            code="ftops_training_queue")


def _wait_for_quota(deps: Deps, request: TrainRequest, key: str, exc: HubQuotaExceeded) -> None:
    run_id, attempt = request.run_id, request.attempt
    first, longest = QUOTA_BACKOFF_SECONDS
    delay = min(longest, first * 2 ** min(attempt, 20)) * random.uniform(0.5, 1.0)
    detail = {"reason": str(exc), "attempt": attempt + 1, "retry_in_seconds": round(delay)}
    waiting = {"code": exc.code or "quota", "message": f"waiting for the hub: {exc}", "source": "hub"}
    run = deps.registry.require_run(run_id)
    if run.state != states.WAITING_FOR_QUOTA:   # the reason is on the run, so `ftops status` says why it waits
        advance(deps, run_id, states.WAITING_FOR_QUOTA, actor=ACTOR, from_states={states.UPLOADING},
                detail=detail, error=waiting)
    elif run.error != waiting:
        update_run(deps, run_id, {states.WAITING_FOR_QUOTA}, error=waiting)
    retry_later(deps, deps.settings.train_queue, request, _retry_base(run_id, key), delay=delay,
                why="hub quota reached")
    log.info("run %s: hub quota reached (%s); trying again in %.0f s", run_id, exc, delay)


def _retry_base(run_id: str, key: str) -> str:
    """What a train request's re-sends are named after: the run and the job it is for (a retrain's new
    settings make a new job key, so its copies never reuse an id of the job before)."""
    return f"train-{run_id}-{key[:12]}"


def _fail(deps: Deps, hub: Hub, run_id: str, exc: HubError) -> None:
    error = {**exc.as_error(), "source": "hub"}
    run = advance(deps, run_id, states.TRAINING_FAILED, actor=ACTOR, from_states=STARTABLE,
                  detail={"code": exc.code, "message": str(exc)}, error=error, job_status="not_created")
    log.warning("run %s: the hub refused the job: %s", run_id, exc)
    tidy_hub(deps, hub, run)


def _cancel_quietly(hub: Hub, run_id: str, job_id: str) -> None:
    try:
        hub.cancel(job_id)
    except HubError as exc:
        log.warning("run %s: could not cancel job %s: %s", run_id, job_id, exc)


# --- commands ----------------------------------------------------------------------------------------
def cancel_run(command: RunCommand, deps: Deps) -> None:
    run = deps.registry.require_run(command.run_id)
    if not cancel_needed(run):
        return
    hub = deps.hub()
    if run.job_id:
        try:
            hub.cancel(run.job_id)
        except HubPermanentError as exc:
            job = hub.retrieve(run.job_id)
            if job.status != "cancelled":
                raise PermanentError(f"run {run.run_id}: job {run.job_id} is {job.status} and cannot be cancelled "
                                     f"({exc})") from exc
    actor = actors.requester(command)
    run = advance(deps, run.run_id, states.CANCELLED, actor=actor, from_states=CANCELLABLE,
                  detail={"reason": command.reason, "requested_by": command.requested_by, "job_id": run.job_id},
                  job_status="cancelled" if run.job_id else run.job_status)
    deps.registry.untrack_job(run.run_id)
    free_job_key(deps, run)
    tidy_hub(deps, hub, run)


def pause_run(command: RunCommand, deps: Deps) -> None:
    _job_action(command, deps, "pause")


def resume_run(command: RunCommand, deps: Deps) -> None:
    _job_action(command, deps, "resume")


_JOB_ACTION_OUTCOME = {"pause": ("paused", "pausing"), "resume": ("running", "resuming")}


def _job_action(command: RunCommand, deps: Deps, action: str) -> None:
    run = deps.registry.require_run(command.run_id)
    hub = deps.hub()
    job_id = check_job_action(run, action, hub.surface)
    last = next((a["action"] for a in reversed(deps.registry.audit_trail(run.run_id))
                 if a["action"] in ("job.pause", "job.resume") and a["detail"].get("job_id") == run.job_id), None)
    try:
        job = hub.pause(job_id) if action == "pause" else hub.resume(job_id)
    except HubNotFound as exc:
        raise PermanentError(f"run {run.run_id}: job {run.job_id} is not on the hub ({exc})") from exc
    except HubPermanentError as exc:
        # a repeat of this command (its first delivery died after the hub acted) finds it done: finish it
        job = hub.retrieve(job_id)
        if job.status not in _JOB_ACTION_OUTCOME[action] or (action == "resume" and last != "job.pause"):
            raise PermanentError(f"run {run.run_id}: the hub refused to {action} job {run.job_id}: {exc}") from exc
    note_unknown_status(run.run_id, job_id, job.status)
    actor = actors.requester(command)
    detail = {"job_id": run.job_id, "job_status": job.status, "reason": command.reason}
    try:
        update_run(deps, run.run_id, {states.TRAINING}, job_status=job.status)
    except Superseded:
        pass  # finished meanwhile; the poller records that
    if last != f"job.{action}":   # recorded once, however often the command is delivered
        deps.registry.audit(run.run_id, f"job.{action}", actor=actor, detail=detail)
    publish(deps, run.run_id, "paused" if action == "pause" else "resumed", detail)
    log.info("run %s: job %s %s (%s)", run.run_id, run.job_id, action, job.status)


def retrain_run(command: RetrainCommand, deps: Deps, *, started_by: str | None = None,
                message_id: str | None = None) -> None:
    """Same data, new settings: the run goes back to `uploading` with a clean job record and a new job key.
    `started_by`: the verified object id of who asked (operator API), else unknown (a queue message): then
    the owner's confirmation is withdrawn too, so the new model enters no gated environment until a verified
    person stands behind it (the owner's claim, or a retrain through the API: shared.run.rules.unverified_problem).
    The train request is written with that transition (the run's outbox) and sent after it, named by the
    command's message: a crash in between is finished by the command's redelivery, never left waiting."""
    run = deps.registry.require_run(command.run_id)
    settings, needed = retrain_settings(run, command.settings)
    if not needed:
        if run.outbox:   # this retrain's own redelivery: send what its first attempt could not
            flush(deps, run.run_id, run.outbox)
        log.info("run %s: retrain with these settings is already under way", run.run_id)
        return
    new_settings = settings.model_dump(mode="json")
    actor = actors.requester(command)
    suffix = hashlib.sha256(f"{message_id or run.etag}".encode()).hexdigest()[:10]
    request = envelope(TrainRequest(run_id=run.run_id), message_id=f"train-{run.run_id}-r{suffix}")
    advance(deps, run.run_id, states.UPLOADING, actor=actor, from_states={run.state},
            detail={"retrain": True, "settings": command.settings, "previous_job_id": run.job_id},
            send=[(deps.settings.train_queue, request)],
            settings=new_settings, job_id=None, job_key=None, job_status=None, hub_files={},
            fine_tuned_model=None, trained_tokens=None, events_cursor=None, checkpoints=[], metrics=None,
            evaluation=None, chosen_model=None, error=None,
            approvals={},   # an approval was for the old model: the new one is approved afresh
            started_by=started_by, claimed_by=run.claimed_by if started_by else None,
            makers=run.makers + ([{"oid": started_by, "as": "retrained"}] if started_by else []))


# --- helpers -----------------------------------------------------------------------------------------
def _settings(run: RunRecord) -> RunSettings:
    try:
        return RunSettings.model_validate(run.settings)
    except ValidationError as exc:
        raise PermanentError(f"run {run.run_id}: its recorded settings are invalid: {exc}") from exc


def _blob(deps: Deps, path: str) -> Any:
    return deps.blobs.get_blob_client(deps.settings.reports_container, path)
