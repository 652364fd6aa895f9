"""The emulator's in-memory world: accounts, files, uploads, jobs, deployments, and how time moves them.

All methods run on the server's event loop thread; a lock still guards them because tests may read
state directly from another thread.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from . import knowledge, surfaces
from .jobs import FAILURES, HOLDING, JOB_EVENTS, TERMINAL, Job
from .state import (
    Account,
    ApiError,
    Clock,
    DeploymentRecord,
    Durations,
    Faults,
    FileRecord,
    Operation,
    RequestLog,
    Topology,
    UploadRecord,
)

OVERFIT_FINAL_FRACTION = 0.5  # an over-fitting job's final model has forgotten half of what it knew


def _error(failure: dict[str, str]) -> dict[str, str]:
    """A job failure as the wire shows it: code, message (and param, if given); not the emulator's `stage`."""
    return {k: v for k, v in failure.items() if k in ("code", "message", "param")}


MAX_FILES = 100   # files per resource for fine-tuning (Learn quotas-limits, 2026-02-17; it was 50)
MAX_FILE_BYTES = 1024**3
REQUEST_LOG_SIZE = 1000


class Emulator:
    def __init__(self, topology: Topology, *, time_scale: float = 1.0, seed: int = 0) -> None:
        self.lock = threading.RLock()
        self.initial = topology
        self.time_scale = time_scale
        self.seed = seed
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.clock = Clock(self.time_scale)
            self.rng = random.Random(self.seed)
            self.accounts: dict[str, Account] = {}
            for account in self.initial.accounts:
                self.add_account(account)
            self.durations = Durations()
            self.faults = Faults()
            self.files: dict[str, FileRecord] = {}
            self.uploads: dict[str, UploadRecord] = {}
            self.jobs: dict[str, Job] = {}
            self.deployments: dict[tuple[str, str], DeploymentRecord] = {}
            self.operations: dict[str, Operation] = {}
            self.jobs_created = 0
            self.overfit_jobs: set[str] = set()
            self.request_log = RequestLog(REQUEST_LOG_SIZE)
            self.stored: dict[str, dict[str, Any]] = {}   # stored chat completions by id (stored.py)
            # webhooks (webhooks.py): endpoints by id, deliveries waiting for the dispatcher, every delivery made
            self.webhook_endpoints: dict[str, dict[str, Any]] = {}
            self.webhook_pending: list[dict[str, Any]] = []
            self.webhook_log: dict[str, dict[str, Any]] = {}
            self.webhook_rng = random.Random(self.seed + 1)
            self.job_ended_wall: dict[str, float] = {}   # job id → wall-clock time the emulator saw it end

    def now(self) -> float:
        return self.clock.now()

    # --- request log (the fault layer calls these on the event loop; tests read them) ---------------
    def request_started(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_log.started(entry)

    def request_finished(self, entry: dict[str, Any]) -> None:
        with self.lock:
            self.request_log.finished(entry)

    def clear_requests(self) -> None:
        with self.lock:
            self.request_log.clear()

    def request_stats(self) -> dict[str, Any]:
        with self.lock:
            return self.request_log.stats()

    def new_id(self, prefix: str, sep: str = "-") -> str:
        return f"{prefix}{sep}{self.rng.getrandbits(128):032x}"

    # --- accounts -----------------------------------------------------------------------------
    def add_account(self, account: Account) -> None:
        with self.lock:
            self.accounts[account.name] = account

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ApiError(404, "404", "Resource not found") from None

    def account_by_id(self, resource_id: str) -> Account | None:
        wanted = resource_id.strip().rstrip("/").lower()
        for account in self.accounts.values():
            if account.resource_id.lower() == wanted:
                return account
        return None

    # --- files --------------------------------------------------------------------------------
    def add_file(self, account: str, filename: str, purpose: str, content: bytes, *, ready: bool = False,
                 expires_in: float | None = None) -> FileRecord:
        with self.lock:
            mine = [f for f in self.files.values() if f.account == account and not f.expired(self.now())]
            # results files are written by the service itself; a full account must not break a job
            if not ready and len(mine) >= MAX_FILES:
                raise ApiError(400, "quotaExceeded", f"The quota for files is reached. The maximum is {MAX_FILES}.")
            if not ready and sum(len(f.content) for f in mine) + len(content) > MAX_FILE_BYTES:
                raise ApiError(400, "quotaExceeded", "The quota for the total size of files (1 GB) is reached.")
            now = self.now()
            error = knowledge.check_jsonl(content) if purpose == "fine-tune" else None
            record = FileRecord(
                id=self.new_id("file"), account=account, filename=filename, purpose=purpose, content=content,
                created_at=now, ready_at=now if ready else now + self.durations.file_processing, error=error,
                expires_at=now + expires_in if expires_in is not None else None,
            )
            self.files[record.id] = record
            return record

    def file(self, account: str, file_id: str) -> FileRecord:
        record = self.files.get(file_id)
        if record is None or record.account != account or record.expired(self.now()):
            raise ApiError(404, "fileNotFound", f"File with id '{file_id}' not found.")
        return record

    def delete_file(self, account: str, file_id: str) -> None:
        with self.lock:
            self.file(account, file_id)
            del self.files[file_id]

    # --- jobs ---------------------------------------------------------------------------------
    def create_job(self, account: str, body: dict[str, Any], *, suffix_max: int = 40) -> Job:
        with self.lock:
            self.tick()
            for key in ("model", "training_file"):
                if not body.get(key):
                    raise ApiError(400, "invalidPayload", f"'{key}' is required.", param=key)
            for key in ("training_file", "validation_file"):
                if body.get(key):
                    record = self.files.get(body[key])
                    if record is None or record.account != account:
                        raise ApiError(400, "invalidPayload", f"The {key} '{body[key]}' does not exist.", param=key)
                    if record.status(self.now()) == "error":
                        raise ApiError(400, "invalidPayload", f"The {key} '{body[key]}' failed processing.", param=key)
            if sum(1 for j in self.jobs.values() if j.account == account) >= self.durations.max_jobs:
                raise ApiError(
                    400, "quotaExceeded",
                    f"The quota of {self.durations.max_jobs} fine-tuning jobs per resource is reached. "
                    "Delete finished jobs' models or use another resource.",
                )
            waiting = [j for j in self.jobs.values() if j.account == account and j.status == "pending"]
            if len(waiting) >= self.durations.max_queued_jobs:
                raise ApiError(
                    400, "quotaExceeded",
                    f"The quota of {self.durations.max_queued_jobs} queued fine-tuning jobs is reached. "
                    "Wait for a job to finish, or cancel one.",
                )
            method = dict(body.get("method") or {"type": "supervised"})
            kind = method.get("type", "supervised")
            if kind not in ("supervised", "dpo", "reinforcement"):
                raise ApiError(400, "invalidPayload", f"Unsupported method type '{kind}'.", param="method.type")
            surfaces.check_base_model(body["model"], kind, {j.fine_tuned_name for j in self.jobs.values()
                                                            if j.account == account and j.status == "succeeded"})
            requested = dict((method.get(kind) or {}).get("hyperparameters") or body.get("hyperparameters") or {})
            suffix = body.get("suffix")
            if suffix is not None and len(suffix) > suffix_max:
                raise ApiError(400, "invalidPayload", f"suffix must be at most {suffix_max} characters.",
                               param="suffix")
            fail_with = None
            if self.faults.fail_next_jobs > 0:
                self.faults.fail_next_jobs -= 1
                fail_with = dict(self.faults.job_error or FAILURES.get(self.faults.job_failure, FAILURES["generic"]))
            now = self.now()
            seed = body.get("seed")
            job = Job(
                id=self.new_id("ftjob"), account=account, model=body["model"], training_file=body["training_file"],
                validation_file=body.get("validation_file"), suffix=suffix,
                seed=int(seed) if seed is not None else self.rng.randrange(2**31), method=method,
                requested=requested, created_at=now, run_seconds=self.durations.training, fail_with=fail_with,
                metadata=body.get("metadata"),
            )
            job.add_event(now, f"Job {job.id} created; validating training file: {job.training_file}")
            if self.faults.overfit_next_jobs > 0:
                self.faults.overfit_next_jobs -= 1
                self.overfit_jobs.add(job.id)
            overrides = self.faults.status_override
            if "next" in overrides:
                overrides[job.id] = overrides.pop("next")
            self.jobs[job.id] = job
            self.jobs_created += 1
            return job

    def job(self, account: str, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.account != account:
            raise ApiError(404, "NotFound", f"Fine-tuning job '{job_id}' not found.")
        return job

    def cancel_job(self, account: str, job_id: str) -> Job:
        with self.lock:
            self.tick()
            job, now = self.job(account, job_id), self.now()
            if job.status in TERMINAL:
                raise ApiError(400, "invalidPayload", f"Job is already {job.status}; only active jobs can be cancelled.")
            self._close_segment(job, now)
            job.status, job.finished_at = "cancelled", now
            job.add_event(now, "Job cancelled.")
            self._job_ended(job)
            return job

    def job_json(self, job: Job) -> dict[str, Any]:
        """A job as the wire shows it: `status_override` (a fault) replaces the status the job really has."""
        body = job.to_json(self.now())
        override = self.faults.status_override.get(job.id)
        if override:
            body["status"] = override
        return body

    def pause_job(self, account: str, job_id: str) -> Job:
        with self.lock:
            self.tick()
            job, now = self.job(account, job_id), self.now()
            if job.status != "running" or job.steps_done(now) < 1:
                raise ApiError(400, "invalidPayload", "Only a running job past its first step can be paused.")
            self._close_segment(job, now)  # training stops at once; `pausing` only delays the status
            job.status, job.transition_at = "pausing", now + self.durations.pausing
            if self.durations.pausing > 0:
                job.add_event(now, "Pausing job.")
            job.settle(now)
            return job

    def resume_job(self, account: str, job_id: str) -> Job:
        with self.lock:
            self.tick()
            job, now = self.job(account, job_id), self.now()
            if job.status != "paused":
                raise ApiError(400, "invalidPayload", "Only a paused job can be resumed.")
            job.status, job.transition_at = "resuming", now + self.durations.resuming
            if self.durations.resuming > 0:
                job.add_event(now, "Resuming job.")
            job.settle(now)
            return job

    @staticmethod
    def _close_segment(job: Job, t: float) -> None:
        if job.segments and job.segments[-1][1] is None:
            job.segments[-1][1] = t

    # --- time -----------------------------------------------------------------------------------
    def advance(self, seconds: float) -> None:
        with self.lock:
            self.clock.advance(seconds)
            self.tick()

    def tick(self) -> None:
        """Bring every job and deployment up to the current emulator time."""
        with self.lock:
            now = self.now()
            for name in self.accounts:
                self._tick_jobs(name, now)
            self._tick_deployments(now)

    def _tick_jobs(self, account: str, now: float) -> None:
        jobs = sorted((j for j in self.jobs.values() if j.account == account), key=lambda j: j.created_at)
        for job in jobs:
            if job.status == "pending" and job.queued_at is None and now >= job.created_at + self.durations.validation:
                self._validate(job, job.created_at + self.durations.validation)
            job.settle(now)
        self._run_queue(jobs, now, self.accounts[account].max_running_jobs)
        for job in jobs:
            if job.status == "succeeded" and not job.result_files and job.finished_at is not None \
                    and now >= job.finished_at + self.durations.results:
                self._post_results(job, job.finished_at + self.durations.results)

    def _run_queue(self, jobs: list[Job], now: float, slots: int) -> None:
        """The account's `slots` training slots (Learn quotas-limits: 3 jobs running at once), in simulated time
        order: a running job finishes when its time is up, the oldest queued job starts when a slot is free."""
        while True:
            active = [j for j in jobs if j.status in HOLDING]
            ends = [(end, j) for j in active if j.status == "running"
                    and (end := j.time_at_elapsed(j.run_seconds)) is not None]
            first_end = min(ends, key=lambda e: e[0]) if ends else None
            queued = [j for j in jobs if j.status == "pending" and j.queued_at is not None]
            start, job = None, None
            if queued and len(active) < slots:
                job = min(queued, key=lambda j: (j.queued_at or 0.0, j.created_at))
                # the free slots were released by the latest finishes; the earliest of those is free first
                released = sorted((j.finished_at for j in jobs if j.started_at is not None and j.finished_at is not None),
                                  reverse=True)
                free = slots - len(active)
                free_at = released[free - 1] if len(released) >= free else 0.0
                start = max((job.queued_at or 0.0) + self.durations.queue, free_at)
            if first_end is not None and first_end[0] <= now and (start is None or first_end[0] <= start):
                self._finish(first_end[1], first_end[0])
                continue
            if job is None or start is None or start > now:
                return
            job.status, job.started_at = "running", start
            job.segments.append([start, None])
            job.add_event(start, f"Training started: {job.total_steps} steps, {job.n_epochs} epochs.")

    def _validate(self, job: Job, t: float) -> None:
        record = self.files.get(job.training_file)
        if record is None or record.status(t) != "processed":
            return self._fail(job, t, {
                "code": "invalid_training_file", "param": "training_file",
                "message": f"The training file {job.training_file} is missing or was not processed.",
            })
        job.examples = knowledge.parse_examples(record.content)
        if len(job.examples) < 10:
            return self._fail(job, t, {
                "code": "invalid_training_file", "param": "training_file",
                "message": f"Training file has {len(job.examples)} examples; at least 10 are required.",
            })
        if job.validation_file and job.validation_file in self.files:
            job.n_validation = len(knowledge.parse_examples(self.files[job.validation_file].content))
        job.resolve_hyperparameters()
        if job.fail_with and job.fail_with.get("stage") == "data":   # the RAI check of the training data
            return self._fail(job, t, {"param": "training_file", **_error(job.fail_with)})
        job.status, job.queued_at = "pending", t   # validated and queued: still `pending` on the wire
        job.add_event(t, "Job enqueued. Waiting for jobs ahead to complete.")

    def _fail(self, job: Job, t: float, error: dict[str, Any]) -> None:
        self._close_segment(job, t)
        job.status, job.finished_at, job.error = "failed", t, error
        job.add_event(t, f"Job failed: {error['message']}", level="error")
        self._job_ended(job)

    def _finish(self, job: Job, t: float) -> None:
        self._close_segment(job, t)
        if job.fail_with:
            return self._fail(job, t, {"param": None, **_error(job.fail_with)})
        # Learn's tutorial: "Job succeeded." first; the results file comes after postprocessing
        job.status, job.finished_at = "succeeded", t
        job.add_event(t, "Job succeeded.")
        job.add_event(t, "Postprocessing started.")
        self._job_ended(job)

    def _post_results(self, job: Job, t: float) -> None:
        results = self.add_file(job.account, "results.csv", "fine-tune-results", job.results_csv(), ready=True)
        results.created_at = results.ready_at = t
        job.result_files = [results.id]
        job.add_event(t, f"Completed results file: {results.id}")
        job.add_event(t, f"Training hours billed: {max(0.001, job.run_seconds / 3600):.3f}")

    # --- webhooks (webhooks.py) -------------------------------------------------------------------
    def _job_ended(self, job: Job) -> None:
        """A job reached a terminal status: one event for each endpoint of its account that takes the type."""
        self.job_ended_wall.setdefault(job.id, time.time())
        event_type = JOB_EVENTS[job.status]
        for endpoint in self.webhook_endpoints.values():
            if endpoint["account"] != job.account or event_type not in endpoint["event_types"]:
                continue
            webhook_id = self.new_id("evt", "_")
            event = {"object": "event", "id": webhook_id, "type": event_type, "created_at": int(job.finished_at or 0),
                     "data": {"id": job.id}}
            dropped = self.faults.drop_next_webhooks > 0 or self.webhook_rng.random() < self.faults.webhook_drop_rate
            if self.faults.drop_next_webhooks > 0:
                self.faults.drop_next_webhooks -= 1
            self.webhook_log[webhook_id] = {"webhook_id": webhook_id, "type": event_type, "job_id": job.id,
                                            "endpoint": endpoint["id"], "url": endpoint["url"], "dropped": dropped,
                                            "attempts": [], "ended_at": self.job_ended_wall[job.id],
                                            "delivered_at": None}
            if not dropped:
                self.webhook_pending.append({"webhook_id": webhook_id, "url": endpoint["url"],
                                             "secret": endpoint["signing_secret"], "event": event})

    def take_webhook_deliveries(self) -> list[dict[str, Any]]:
        """Bring every job up to now (a job ends when its time comes) and hand over the deliveries due."""
        with self.lock:
            self.tick()
            due, self.webhook_pending = self.webhook_pending, []
            return due

    def record_webhook_attempt(self, webhook_id: str, status: int) -> None:
        with self.lock:
            entry = self.webhook_log.get(webhook_id)
            if entry is not None:
                entry["attempts"].append(status)
                if 200 <= status < 300 and entry["delivered_at"] is None:
                    entry["delivered_at"] = time.time()

    # --- models ---------------------------------------------------------------------------------
    def find_model(self, name: str) -> tuple[Job, float] | None:
        """A fine-tuned model or checkpoint by name (or checkpoint id) → (job, knowledge fraction)."""
        now = self.now()
        for job in self.jobs.values():
            if job.status != "succeeded":
                continue
            if name == job.fine_tuned_name:
                return job, self._fraction(job, job.total_steps)
            for _, step in job.checkpoint_steps():
                if name in (job.checkpoint_model(step), job.checkpoint_id(step)) and step <= job.steps_done(now):
                    return job, self._fraction(job, step)
        return None

    def _fraction(self, job: Job, step: int) -> float:
        """What the model at `step` knows. An over-fitting job (the `overfit_next_jobs` fault) peaks at the
        checkpoint one epoch before the end and then forgets, so a checkpoint beats the final model."""
        if job.id in self.overfit_jobs:
            if step >= job.total_steps:
                return OVERFIT_FINAL_FRACTION
            if step == job.total_steps - job.steps_per_epoch:
                return 1.0
        return job.knowledge_fraction(step)

    @staticmethod
    def looks_finetuned(name: str) -> bool:
        return ".ft-" in name or name.startswith(("ft:", "ftchkpt-"))

    # --- deployments ----------------------------------------------------------------------------
    def _tick_deployments(self, now: float) -> None:
        for key, dep in list(self.deployments.items()):
            if dep.state in ("Creating", "Accepted") and now >= dep.ready_at:
                dep.state = "Failed" if dep.fail else "Succeeded"
            deleted = dep.state == "Deleting" and dep.delete_at is not None and now >= dep.delete_at
            expired = dep.expires_at is not None and now >= dep.expires_at   # a Developer deployment's 24 h
            if deleted or expired:
                del self.deployments[key]

    def deployment(self, account: str, name: str) -> DeploymentRecord | None:
        self.tick()
        return self.deployments.get((account, name))

    def vanish(self, account: str, name: str) -> bool:
        with self.lock:
            return self.deployments.pop((account, name), None) is not None
