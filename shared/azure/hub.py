"""The hub: the Azure OpenAI resource that trains. Files, jobs, events, checkpoints and results through the
`openai` SDK's Azure client (Entra ID tokens; an API key only locally).

Errors are sorted here once, so handlers only decide what a kind of failure means for the run:
- `HubTransientError`: 429 / 5xx / timeouts / connection errors after the SDK's own retries (it honors
  Retry-After and backs off with jitter). Raise it, the runtime retries; it never ends a run.
- `HubQuotaExceeded`: the hub refused for a resource limit (queued jobs, file count or size). Normal: wait.
- `HubPermanentError`: any other 4xx, with the hub's own code and message. Ends the run with that reason.

Surfaces (shared.run.hub_api): what the configured hub API lacks (pause on 2024-10-21, method dpo there,
reinforcement on the preview, files over 512 MB on v1) raises `HubUnsupported` before any call.

Job identity. Suffix is user-visible and short (18 characters in the strictest source) and `metadata` on
fine-tuning jobs is not on every hub API surface (not in 2024-10-21), so a job is found again by what
it was created from: the training (and validation) file ids. Those ids are unique uploads that the run
recorded *before* it created the job, so a job on the hub with exactly those files and that base model is
the one this run created, whichever process created it.
"""
from __future__ import annotations

import csv
import functools
import hashlib
import io
import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.run.hub_api import DEFAULT, SURFACES, HubSurface, UnsupportedOnSurface
from shared.run.models import same_base_model
from shared.store.blob_io import BlobReader, upload_parts

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

T = TypeVar("T")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# `created` and `pending` are the dated specs' FineTuningState; validating_files/queued the v1 spec's
KNOWN_STATUSES = frozenset({"created", "validating_files", "pending", "queued", "running", "paused", "pausing",
                            "resuming", "succeeded", "failed", "cancelled"})
NO_CHECKPOINTS_YET = frozenset({"created", "validating_files", "pending", "queued", "failed"})
def note_unknown_status(run_id: str, job_id: str, status: str | None) -> None:
    """A status ftops does not know is treated as running, and said where it is first recorded in the run
    (callers compare with the run's job_status, so it is said once)."""
    if status is None or status in KNOWN_STATUSES:
        return
    log.warning("run %s: job %s has status %r, which ftops does not know; treating it as running",
                run_id, job_id, status)
PART_SIZE = 64 * 1024 * 1024        # the uploads API takes parts of at most 64 MB
_EVENT_PAGE = 100
_FIRST_EVENT_PAGE = 20
_MAX_EVENT_PAGES = 20               # a tick reads at most 2,000 new events per job
CREATE_RATE_LIMIT_TRIES = 4   # a job creation refused with 429 (nothing made) is sent at most this often


class HubError(RuntimeError):
    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param = status, code, param

    def as_error(self) -> dict[str, Any]:
        return {"code": self.code, "message": str(self), "param": self.param, "status": self.status}


class HubTransientError(HubError):
    """May succeed later: raise so the message is retried; never ends a run."""


class HubPermanentError(HubError):
    """The hub said no for a reason that will not change (bad request, forbidden, not found)."""


class HubNotFound(HubPermanentError):
    pass


class HubUnsupported(HubPermanentError):
    """The configured hub API (HUB_API_VERSION) does not offer this; refused before calling."""


class HubQuotaExceeded(HubError):
    """A resource limit (jobs queued, files, total size): wait for room, then try again."""


@dataclass(frozen=True)
class HubJob:
    id: str
    status: str
    model: str
    training_file: str | None = None
    validation_file: str | None = None
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    error: dict[str, Any] | None = None
    result_files: list[str] = field(default_factory=list)
    created_at: int = 0
    seed: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def may_have_checkpoints(self) -> bool:
        return self.status not in NO_CHECKPOINTS_YET

    @staticmethod
    def of(job: Any) -> HubJob:
        error = getattr(job, "error", None)
        error_dict = None
        if error is not None and (getattr(error, "code", None) or getattr(error, "message", None)):
            error_dict = {"code": error.code, "message": error.message, "param": getattr(error, "param", None)}
        return HubJob(id=job.id, status=str(job.status), model=job.model, training_file=job.training_file,
                      validation_file=job.validation_file, fine_tuned_model=job.fine_tuned_model,
                      trained_tokens=job.trained_tokens, error=error_dict, result_files=list(job.result_files or []),
                      created_at=int(job.created_at or 0), seed=getattr(job, "seed", None))


@dataclass(frozen=True)
class JobSpec:
    """What a job is created from; `method` is None for supervised, a dict for dpo/reinforcement. How it is
    sent depends on the surface: with `method` where the API has it (hyperparameters inside it, as v1 asks:
    top-level `hyperparameters` is deprecated there), top-level hyperparameters on 2024-10-21."""
    model: str
    training_file: str
    validation_file: str | None
    seed: int
    suffix: str | None
    hyperparameters: dict[str, Any]
    method: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return str((self.method or {}).get("type") or "supervised")

    def body(self, surface: HubSurface | None = None) -> dict[str, Any]:
        surface = surface or SURFACES[DEFAULT]
        body: dict[str, Any] = {"model": self.model, "training_file": self.training_file, "seed": self.seed}
        if self.validation_file:
            body["validation_file"] = self.validation_file
        if self.suffix:
            body["suffix"] = self.suffix
        if self.method is not None:
            body["method"] = self.method
        elif surface.sends_method:
            body["method"] = {"type": "supervised", "supervised": {"hyperparameters": dict(self.hyperparameters)}}
        elif self.hyperparameters:
            body["hyperparameters"] = self.hyperparameters
        return body


class CallGate:
    """Bounds the hub calls in flight (a poll tick shares one) and remembers the most it ever saw."""

    def __init__(self, limit: int) -> None:
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.limit, self.in_flight, self.max_in_flight, self.calls = limit, 0, 0, 0

    def __enter__(self) -> CallGate:  # noqa: PYI034
        self._sem.acquire()
        with self._lock:
            self.in_flight += 1
            self.calls += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.in_flight -= 1
        self._sem.release()


def error_from_openai(exc: Exception, what: str) -> HubError:
    """An openai SDK exception → one of our three kinds, carrying the hub's own message."""
    import openai

    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return HubTransientError(f"{what}: the hub did not answer ({type(exc).__name__})")
    if not isinstance(exc, openai.APIStatusError):
        return HubTransientError(f"{what}: {exc}")
    status = exc.status_code
    body = exc.body if isinstance(exc.body, dict) else {}
    code = str(body.get("code") or getattr(exc, "code", None) or status)
    message = str(body.get("message") or exc.message)
    param = body.get("param")
    text = f"{what}: {message}"
    # Azure's ordinary 429s link to "quotaincrease" in their text: only a 429 whose code says quota is one
    if "quota" in code.lower() or (status != 429 and "quota" in message.lower()):
        return HubQuotaExceeded(text, status=status, code=code, param=param)
    if status == 429 or status >= 500 or status in (408, 409):
        return HubTransientError(text, status=status, code=code, param=param)
    if status == 404:
        return HubNotFound(text, status=status, code=code, param=param)
    return HubPermanentError(text, status=status, code=code, param=param)


class Hub:
    def __init__(self, client: Any, *, surface: HubSurface | None = None, gate: CallGate | None = None,
                 multipart_threshold: int = 100 * 1024 * 1024, part_size: int = PART_SIZE,
                 poll_interval: float = 1.0) -> None:
        self._client = client
        self.surface = surface or SURFACES[DEFAULT]
        self._gate = gate
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.poll_interval = poll_interval

    @staticmethod
    def from_deps(deps: Deps, *, gate: CallGate | None = None, max_retries: int = 6) -> Hub:
        from shared.run.hub_api import surface
        settings = deps.settings
        return Hub(deps.hub_client(max_retries=max_retries), surface=surface(settings.hub.api_version), gate=gate,
                   multipart_threshold=settings.hub_multipart_threshold_mb * 1024 * 1024)

    def require(self, check: Callable[[], None]) -> None:
        """A surface check (shared.run.hub_api) → HubUnsupported, so callers handle it as a permanent refusal."""
        try:
            check()
        except UnsupportedOnSurface as exc:
            raise HubUnsupported(str(exc), code="unsupported_on_hub_api") from None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        import openai
        try:
            if self._gate is None:
                return fn()
            with self._gate:
                return fn()
        except openai.OpenAIError as exc:
            raise error_from_openai(exc, what) from exc

    # --- files --------------------------------------------------------------------------------------
    def upload_file(self, blob: Any, filename: str) -> str:
        """Upload a blob (azure BlobClient) as a fine-tune file, streaming: never the whole file in memory.
        Returns the hub's file id."""
        size = int(blob.get_blob_properties().size)
        if size > self.multipart_threshold and self.surface.uploads:
            return self._upload_multipart(blob, filename, size)
        self.require(lambda: self.surface.require_upload_size(size, filename))
        reader = BlobReader(blob, size)
        # A retrain whose file has expired (v1: upload_fields) uploads it again: training._create_or_adopt checks
        # that the file still exists. The SDK re-reads the stream on a retry: BlobReader restarts its download on
        # seek(0).
        created = self._call(f"upload {filename}", lambda: self._client.files.create(
            file=(filename, reader, "application/octet-stream"), purpose="fine-tune", **self.surface.upload_fields))
        return str(created.id)

    def _upload_multipart(self, blob: Any, filename: str, size: int) -> str:
        upload = self._call(f"start multipart upload {filename}", lambda: self._client.uploads.create(
            bytes=size, filename=filename, mime_type="text/jsonl", purpose="fine-tune"))
        md5 = hashlib.md5(usedforsecurity=False)
        part_ids: list[str] = []
        try:
            for part in upload_parts(blob.download_blob().chunks(), self.part_size):
                md5.update(part)
                made = self._call(f"upload part {len(part_ids) + 1} of {filename}", functools.partial(
                    self._client.uploads.parts.create, upload_id=upload.id, data=part))
                part_ids.append(made.id)
            done = self._call(f"complete upload {filename}", lambda: self._client.uploads.complete(
                upload.id, part_ids=part_ids, md5=md5.hexdigest()))
        except Exception:
            try:  # an abandoned upload expires on its own; cancelling is only politeness
                self._client.uploads.cancel(upload.id)
            except Exception as cancel_error:  # noqa: BLE001 - the original error is what matters
                log.info("upload %s: could not cancel it (%s); it expires on its own", upload.id, cancel_error)
            raise
        if done.file is None:
            raise HubTransientError(f"upload {filename}: completed without a file")
        log.info("uploaded %s in %d parts as %s", filename, len(part_ids), done.file.id)
        return str(done.file.id)

    def wait_processed(self, file_id: str, *, timeout: float = 600.0) -> None:
        """Until the hub has processed the file; an `error` status is permanent (the hub's reason)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._call(f"file {file_id}", lambda: self._client.files.retrieve(file_id))
            if info.status == "processed":
                return
            if info.status in ("error", "deleted", "deleting"):
                raise HubPermanentError(f"file {file_id} ({info.filename}) was not accepted by the hub: "
                                        f"{getattr(info, 'status_details', None) or info.status}", code="file_error")
            if time.monotonic() > deadline:
                raise HubTransientError(f"file {file_id} is still {info.status} after {timeout:.0f} s")
            time.sleep(self.poll_interval)

    def file_exists(self, file_id: str) -> bool:
        try:
            info = self._call(f"file {file_id}", lambda: self._client.files.retrieve(file_id))
        except HubNotFound:
            return False
        return info.status not in ("error", "deleted", "deleting")

    def files_named(self, filenames: Collection[str]) -> list[str]:
        """The ids of the hub's fine-tuning files uploaded under any of `filenames`, in one listing (a resource holds
        at most 100)."""
        page = self._call("list files", lambda: self._client.files.list(purpose="fine-tune"))
        return [f.id for f in page if f.filename in filenames]

    def delete_files(self, file_ids: list[str]) -> list[str]:
        """Delete what exists; a file already gone is fine. Returns the ids deleted."""
        deleted = []
        for file_id in file_ids:
            try:
                self._call(f"delete file {file_id}", functools.partial(self._client.files.delete, file_id))
                deleted.append(file_id)
            except HubNotFound:
                pass
        return deleted

    # --- jobs ---------------------------------------------------------------------------------------
    def create_job(self, spec: JobSpec) -> HubJob:
        self.require(lambda: self.surface.require_method(spec.kind))
        body = spec.body(self.surface)
        # sent once: a POST whose answer was lost (a timeout) may have made the job, and the SDK's own retry would
        # make a second one; the failure goes to the handler, whose retry looks for the job first (find_job)
        # A 429 (refused, nothing made) is safe to send again, after a short wait.
        client = self._client.with_options(max_retries=0) if hasattr(self._client, "with_options") else self._client
        for attempt in range(CREATE_RATE_LIMIT_TRIES):
            try:
                job = self._call(f"create job on {spec.training_file}", lambda: client.fine_tuning.jobs.create(**body))
                break
            except HubError as exc:
                if exc.status != 429 or isinstance(exc, HubQuotaExceeded) or attempt == CREATE_RATE_LIMIT_TRIES - 1:
                    raise
                time.sleep(min(0.5 * 2 ** attempt, 8.0) * random.uniform(0.8, 1.2))  # jittered, as spokes.py
        return HubJob.of(job)

    def find_job(self, *, training_file: str, validation_file: str | None, model: str,
                 max_jobs: int = 200) -> HubJob | None:
        """The job created from exactly these files (see the module note), newest first. A resource holds at
        most 100 jobs, so this is a bounded walk."""
        after: str | None = None
        seen = 0
        while seen < max_jobs:
            page = self._call("list jobs", functools.partial(
                self._client.fine_tuning.jobs.list, limit=100, **({"after": after} if after else {})))
            items = list(page.data)
            for job in items:
                if (job.training_file == training_file and (job.validation_file or None) == (validation_file or None)
                        and same_base_model(job.model, model)):   # a job may echo the resolved version
                    return HubJob.of(job)
            seen += len(items)
            if not items or not getattr(page, "has_more", False):
                return None
            after = items[-1].id
        return None

    def retrieve(self, job_id: str) -> HubJob:
        return HubJob.of(self._call(f"job {job_id}", lambda: self._client.fine_tuning.jobs.retrieve(job_id)))

    def cancel(self, job_id: str) -> HubJob:
        return HubJob.of(self._call(f"cancel {job_id}", lambda: self._client.fine_tuning.jobs.cancel(job_id)))

    def pause(self, job_id: str) -> HubJob:
        self.require(lambda: self.surface.require_pause_resume("pause"))
        return HubJob.of(self._call(f"pause {job_id}", lambda: self._client.fine_tuning.jobs.pause(job_id)))

    def resume(self, job_id: str) -> HubJob:
        self.require(lambda: self.surface.require_pause_resume("resume"))
        return HubJob.of(self._call(f"resume {job_id}", lambda: self._client.fine_tuning.jobs.resume(job_id)))

    def new_events(self, job_id: str, *, since: str | None) -> list[dict[str, Any]]:
        """Events newer than `since` (an event id), oldest first.

        The API lists newest first and `after` pages towards *older* events, so "new since the cursor" means:
        read from the newest page down until the cursor shows up. A tick therefore reads one page when
        little happened, never the whole history."""
        collected: list[dict[str, Any]] = []
        after: str | None = None
        for number in range(_MAX_EVENT_PAGES):
            # a small first page: between two ticks few events are new, and parsing 100 costs every tick
            limit = _FIRST_EVENT_PAGE if number == 0 and since else _EVENT_PAGE
            page = self._call(f"events of {job_id}", functools.partial(
                self._client.fine_tuning.jobs.list_events, job_id, limit=limit,
                **({"after": after} if after else {})))
            items = list(page.data)
            for event in items:
                if since is not None and event.id == since:
                    return list(reversed(collected))
                collected.append({"id": event.id, "created_at": event.created_at, "level": event.level,
                                  "type": getattr(event, "type", None) or "message", "message": event.message,
                                  "data": _plain(getattr(event, "data", None))})
            if not items or not getattr(page, "has_more", False):
                break
            after = items[-1].id
        else:
            log.warning("job %s: more than %d new events since %s; kept the newest", job_id,
                        _EVENT_PAGE * _MAX_EVENT_PAGES, since)
        return list(reversed(collected))

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The kept checkpoints (the last three epochs), oldest step first."""
        page = self._call(f"checkpoints of {job_id}",
                          lambda: self._client.fine_tuning.jobs.checkpoints.list(job_id, limit=10))
        out = [{"id": c.id, "step": c.step_number, "model": c.fine_tuned_model_checkpoint,
                "created_at": c.created_at, "metrics": _plain(c.metrics)} for c in page.data]
        return sorted(out, key=lambda c: c["step"])

    def results_metrics(self, file_id: str) -> dict[str, Any]:
        content = self._call(f"results file {file_id}", lambda: self._client.files.content(file_id))
        return parse_results_csv(content.read())


def parse_results_csv(data: bytes) -> dict[str, Any]:
    """results.csv → {"steps": [{step, train_loss, …} per row], "final": last value of each column}."""
    text = data.decode("utf-8-sig", errors="replace")
    rows: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    for raw in csv.DictReader(io.StringIO(text)):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None or value is None or value.strip() == "":
                continue
            key = key.strip()
            try:
                number: Any = int(value) if key == "step" else float(value)
            except ValueError:
                continue
            row[key] = number
            final[key] = number
        if "step" in row:
            rows.append(row)
    return {"steps": rows, "final": final}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool, list, dict)):
        return value
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if dump else value
