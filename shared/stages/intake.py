"""Intake: a dropped dataset becomes a run — validated, reported, then quarantined or prepared for training.

Drop layout (DESIGN.md): `datasets/<name>.jsonl` is a run with default settings; in a folder
`datasets/<name>/`, only `run.json` starts the run (it is uploaded last); other blobs in a folder never do.
The run id comes from the drop's name and the starting blob's ETag, so a duplicate event is the same run
and a re-upload is a new one. Blobs are streamed, never held whole.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core import MatchConditions
from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

from shared.app.settlement import PermanentError
from shared.run import actors, states
from shared.run.hub_api import surface
from shared.run.messages import TrainRequest, envelope
from shared.run.rules import effective_environments
from shared.store.events import advance
from shared.store.outbox import flush
from shared.store.registry import RunRecord, StorageRefused
from shared.validation import Finding
from shared.validation.drop import RUN_JSON_MAX_BYTES, DropFiles, check_drop, problems_only
from shared.validation.splitting import spool_files, upload_split

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
ACTOR = actors.INTAKE
FOLDER_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "eval": "eval.jsonl"}
QUARANTINE_LISTED = 20       # paths a rejected event names itself; the whole list goes to reports/<run>/quarantine.json
QUARANTINE_CONCURRENCY = 8   # blobs copied at once
QUARANTINE_COPY_SECONDS = 60.0   # a pending Copy Blob is checked this long before the move is retried
DELETE_BATCH = 256           # Blob Batch's limit of subrequests


@dataclass(frozen=True)
class Drop:
    name: str                 # the run's human name: file stem or folder
    start_blob: str           # the blob whose arrival starts the run
    folder: str | None        # set for folder runs


def drop_started_by(blob_name: str) -> Drop | None:
    """Which drop a new blob belongs to, or None if it never starts a run (a data file inside a folder)."""
    folder, _, leaf = blob_name.rpartition("/")
    if folder:
        return Drop(name=folder, start_blob=blob_name, folder=folder) if leaf == "run.json" else None
    stem = leaf.removesuffix(".jsonl")
    return Drop(name=stem, start_blob=blob_name, folder=None)


def run_id_for(drop: Drop, etag: str, settings_override: dict[str, Any] | None = None,
               started_by: str | None = None) -> str:
    """A start through the operator API (`started_by`) is a run of its own, never the blob trigger's run of
    the same upload (which would otherwise keep its unverified owner)."""
    slug = re.sub(r"[^a-z0-9]+", "-", drop.name.lower()).strip("-")[:40] or "run"
    key = etag.strip('"') + (json.dumps(settings_override, sort_keys=True) if settings_override else "")
    key += f"|started_by={started_by}" if started_by else ""
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def handle_blob_created(blob_name: str, deps: Deps) -> str | None:
    """Blob trigger entry: start (or resume) the run this blob starts; returns the run id or None."""
    if drop_started_by(blob_name) is None:
        log.info("blob %s is part of a folder drop; only its run.json starts a run", blob_name)
        return None
    return start_run(blob_name, deps, actor=ACTOR)


def start_run(blob_name: str, deps: Deps, *, settings_override: dict[str, Any] | None = None,
              actor: str = ACTOR, started_by: str | None = None) -> str | None:
    """`started_by`: the verified object id of the person who started it (operator API `POST runs`): recorded
    as the starter, the owner when the settings name none, and the owner's confirmation when they are it."""
    drop = drop_started_by(blob_name)
    if drop is None:
        raise PermanentError(f"{blob_name}: a file inside a folder cannot start a run; name its run.json")
    container = deps.settings.datasets_container
    try:
        etag = deps.blobs.get_blob_client(container, blob_name).get_blob_properties().etag
    except ResourceNotFoundError:
        log.warning("blob %s/%s is gone (moved or deleted before we got to it)", container, blob_name)
        if settings_override is not None:
            raise PermanentError(f"{container}/{blob_name} does not exist")
        return None
    run_id = run_id_for(drop, etag, settings_override, started_by)
    run = deps.registry.create_run(RunRecord(run_id=run_id, source=f"{container}/{blob_name}", started_by=started_by,
                                             makers=[{"oid": started_by, "as": "started"}] if started_by else []),
                                   actor=actor)
    if run is None:
        run = deps.registry.require_run(run_id)
        if run.outbox:   # a first attempt died between a transition and its messages: send them
            flush(deps, run_id, run.outbox)
        if run.state == states.ACCEPTED:   # crashed between "accepted" and the hand-off: hand off again
            _send_train(deps, run_id)
        if run.state == states.REJECTED:   # recorded, but the move may not have finished: finish it
            quarantine(deps, run_id, drop, {}, only=(run.error or {}).get("validated"))
        if run.state not in (states.RECEIVED, states.VALIDATING):
            log.info("run %s already %s: duplicate event for %s", run_id, run.state, blob_name)
            return run_id
    etags = {blob_name: etag}   # every file validated, at the version read (If-Match)
    try:
        _intake(run_id, drop, deps, settings_override, etags, started_by)
    except ResourceModifiedError as exc:   # a file was replaced while we read it
        _replaced(deps, run_id, drop, etags, exc)
    except StorageRefused as exc:   # permanent: retrying would re-validate the whole drop to be refused again
        log.error("run %s: the registry refused a write (%s); ending the run as rejected", run_id, exc)
        advance(deps, run_id, states.REJECTED, actor=ACTOR, from_states={states.RECEIVED, states.VALIDATING},
                detail={"errors": [str(exc)]}, error={"code": "registry_refused", "message": str(exc)[:500]})
        quarantine(deps, run_id, drop, {})
    return run_id


def _intake(run_id: str, drop: Drop, deps: Deps, settings_override: dict[str, Any] | None,
            etags: dict[str, str], started_by: str | None = None) -> None:
    advance(deps, run_id, states.VALIDATING, actor=ACTOR)
    problems: list[Any] = []
    # every file is read at the version seen now (If-Match on its ETag): one replaced while it is validated
    # and split raises ResourceModifiedError instead of training on what was never validated
    files = _dataset_files(drop, deps, problems, etags)
    container = deps.settings.datasets_container
    data = files or ({} if drop.folder else {"train": drop.start_blob})   # a non-.jsonl blob: named by its content
    problems += _size_problems(deps, drop, data)   # before a byte is read: sizes are in the blobs' properties
    run_json = (deps.blobs.get_blob_client(container, drop.start_blob).download_blob(
        etag=etags[drop.start_blob], match_condition=MatchConditions.IfNotModified).readall()
        if drop.folder and not problems else None)
    deadline = time.monotonic() + deps.settings.validation_max_seconds
    spool, outputs = spool_files()
    with spool:
        try:
            checked = check_drop(DropFiles(start=drop.start_blob, folder=bool(drop.folder),
                                           data={role: _chunks(deps, blob, etags.get(blob), deadline)
                                                 for role, blob in data.items()},
                                           names=files, run_json=run_json, problems=tuple(problems)),
                                 default_base_model=deps.settings.default_base_model,
                                 environments=_configured_environments(deps), override=settings_override,
                                 outputs=outputs, hub_api=surface(deps.settings.hub.api_version),
                                 topology=deps.require_topology(), default_owner=started_by)
        except OutOfTime as exc:
            log.warning("run %s: %s", run_id, exc)
            checked = problems_only([Finding(line=None, code="validation_timeout", message=str(exc))])
        report, settings, prepared = checked.report, checked.settings, checked.prepared
        _write_reports(deps, run_id, drop, report)
        if not report.valid or prepared is None or settings is None:
            _reject(deps, run_id, drop, files, report)
            return
        upload_split(deps, run_id, prepared, outputs)
    environments = effective_environments(settings, deps.require_topology())
    advance(deps, run_id, states.ACCEPTED, actor=ACTOR,
            detail={"examples": report.examples, "method": report.method, "method_source": report.method_source,
                    "split": prepared.counts},
            # the deployment name is fixed now, from the drop's name: a re-upload replaces its model in place
            settings={**settings.model_dump(mode="json"), "deployment_name": settings.effective_deployment_name(drop.name)},
            owner=settings.owner, ticket=settings.ticket,
            claimed_by=started_by if started_by and (settings.owner or "").lower() == started_by.lower() else None,
            environments=environments, dataset_hash=prepared.dataset_hash, data_files=prepared.data_files,
            file_digests=prepared.file_digests,
            validation=_summary(report, prepared.counts), send=[(deps.settings.train_queue, _train_request(run_id))])


def _train_request(run_id: str) -> Any:
    return envelope(TrainRequest(run_id=run_id), message_id=f"train-{run_id}")


def _send_train(deps: Deps, run_id: str) -> None:
    deps.publisher.send(deps.settings.train_queue, _train_request(run_id))


def _dataset_files(drop: Drop, deps: Deps, problems: list[Any], etags: dict[str, str]) -> dict[str, str]:
    """role → blob name in the datasets container (their ETags into `etags`). A folder's train.jsonl may
    still be uploading: wait."""
    from shared.validation import Finding
    if not drop.folder:
        return {"train": drop.start_blob} if drop.start_blob.endswith(".jsonl") else {}
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    deadline = time.monotonic() + deps.settings.intake_wait_seconds
    while True:
        present = {b.name: b.etag for b in container.list_blobs(name_starts_with=f"{drop.folder}/")}
        files = {role: f"{drop.folder}/{leaf}" for role, leaf in FOLDER_FILES.items() if f"{drop.folder}/{leaf}" in present}
        if "train" in files or time.monotonic() >= deadline:
            break
        time.sleep(1.0)
    if "train" not in files:
        problems.append(Finding(line=None, code="missing_file", file=f"{drop.folder}/train.jsonl",
                                message=f"{drop.folder}/train.jsonl did not arrive within "
                                        f"{deps.settings.intake_wait_seconds:.0f} s of run.json"))
    etags.update({name: present[name] for name in files.values()})
    return files


class QuarantineUnfinished(RuntimeError):
    """Transient: a rejected drop's move to quarantine used its time; a retry of the same event (or the
    reconcile timer) lists what is left and goes on from there."""


class OutOfTime(Exception):
    """Validation ran past VALIDATION_MAX_SECONDS: the drop is rejected (validation_timeout) rather than
    left to the function's timeout, which only retries the same work until the message is poison."""


def _chunks(deps: Deps, blob_name: str, etag: str | None, deadline: float) -> Callable[[], Iterable[bytes]]:
    def read() -> Iterable[bytes]:
        blob = deps.blobs.get_blob_client(deps.settings.datasets_container, blob_name)
        if etag is None:
            download = blob.download_blob()
        else:
            download = blob.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified)
        for chunk in download.chunks():
            if time.monotonic() > deadline:
                raise OutOfTime(f"{deps.settings.datasets_container}/{blob_name}: validation took longer than "
                                f"{deps.settings.validation_max_seconds:.0f} s (VALIDATION_MAX_SECONDS); "
                                "split the data into smaller runs")
            yield chunk
    return read


def _size_problems(deps: Deps, drop: Drop, data: dict[str, str]) -> list[Any]:
    """What the blobs' sizes alone refuse: a run.json larger than settings need, data beyond MAX_DATASET_MB,
    a file the configured hub API cannot take. Checked before anything is read."""
    from shared.run.hub_api import UnsupportedOnSurface
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    problems = []
    if drop.folder:
        size = container.get_blob_client(drop.start_blob).get_blob_properties().size
        if size > RUN_JSON_MAX_BYTES:
            problems.append(Finding(line=None, code="run_json_too_large", file=drop.start_blob,
                                    message=f"{drop.start_blob} is {size:,} bytes; run.json holds settings and "
                                            f"may be at most {RUN_JSON_MAX_BYTES:,} bytes (it was not read)"))
    sizes = {name: container.get_blob_client(name).get_blob_properties().size for name in set(data.values())}
    total, limit = sum(sizes.values()), deps.settings.max_dataset_mb * 1024 ** 2
    if total > limit:
        problems.append(Finding(line=None, code="dataset_too_large", file=drop.start_blob,
                                message=f"the drop's data is {total / 1024 ** 2:,.0f} MB; intake validates at most "
                                        f"{deps.settings.max_dataset_mb:,} MB (MAX_DATASET_MB): split it into "
                                        "smaller runs"))
    hub_api = surface(deps.settings.hub.api_version)
    for name, size in sorted(sizes.items()):
        try:
            hub_api.require_upload_size(size, name)
        except UnsupportedOnSurface as exc:
            problems.append(Finding(line=None, code="dataset_too_large", file=name, message=str(exc)))
    return problems


def _replaced(deps: Deps, run_id: str, drop: Drop, etags: dict[str, str], exc: Exception) -> None:
    """A file changed under validation: end the run, trains nothing, quarantine exactly the versions it
    validated (the new upload stays), and say what starts a run from the new files."""
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    changed = []
    for name, etag in sorted(etags.items()):
        try:
            if container.get_blob_client(name).get_blob_properties().etag != etag:
                changed.append(name)
        except ResourceNotFoundError:
            changed.append(name)
    what = ", ".join(changed) or "a file of the drop"
    if drop.folder and drop.start_blob not in changed:
        todo = f"upload {drop.start_blob} again to start a run from the new files"
    else:
        todo = "the new upload starts a run of its own"
    message = (f"{what} was replaced while it was validated: this run trains nothing; what it validated is in "
               f"{deps.settings.quarantine_container}/{run_id}/ and the new version stays in "
               f"{deps.settings.datasets_container}/. To go on: {todo}")
    log.warning("run %s: %s", run_id, message)
    _write_reports(deps, run_id, drop, problems_only([Finding(line=None, code="dataset_replaced",
                                                              message=message)]).report)
    advance(deps, run_id, states.REJECTED, actor=ACTOR, from_states={states.RECEIVED, states.VALIDATING},
            detail={"errors": [message], "replaced": changed},
            error={"code": "dataset_replaced", "message": message, "detail": str(exc)[:300], "validated": etags})
    quarantine(deps, run_id, drop, {}, only=etags)


def _write_reports(deps: Deps, run_id: str, drop: Drop, report: Any) -> None:
    from shared.validation import render_html
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    body = json.dumps({"run_id": run_id, "drop": drop.name, **report.to_dict()}, indent=2)
    container.upload_blob(f"{run_id}/validation.json", body, overwrite=True)
    container.upload_blob(f"{run_id}/validation.html", render_html(report, title=f"{drop.name} — {run_id}"),
                          overwrite=True)


def _reject(deps: Deps, run_id: str, drop: Drop, files: dict[str, str], report: Any) -> None:
    # recorded first, then moved: if the move fails, the retry finds the run rejected and its files still
    # in datasets, and finishes the move (start_run); the other order left a run `validating` with no blob
    blobs = _drop_blobs(deps, drop, files)    # listed once: the plan, and what is moved
    planned = [f"{deps.settings.quarantine_container}/{run_id}/{name}" for name in blobs]
    # where each is, so the run's error (status, the demo's table) points at the line to fix
    errors = [(f"{f.file + ' ' if f.file and len(files) > 1 else ''}line {f.line}: " if f.line else "") + f.message
              for f in report.errors[:5]]
    where: dict[str, Any] = {"quarantine": planned[:QUARANTINE_LISTED], "quarantine_count": len(planned)}
    if len(planned) > QUARANTINE_LISTED:   # an event is bounded (Service Bus: 256 KB): the whole list goes to a blob
        path = f"{run_id}/quarantine.json"
        deps.blobs.get_blob_client(deps.settings.reports_container, path).upload_blob(
            json.dumps({"run_id": run_id, "quarantine": planned}).encode(), overwrite=True)
        where["quarantine_list"] = f"{deps.settings.reports_container}/{path}"
    advance(deps, run_id, states.REJECTED, actor=ACTOR, validation=_summary(report, None),
            detail={"errors": errors, **where,
                    "report": f"{deps.settings.reports_container}/{run_id}/validation.json"},
            error={"code": report.errors[0].code, "message": "; ".join(errors)})
    quarantine(deps, run_id, drop, files, only=blobs)


def _drop_blobs(deps: Deps, drop: Drop, files: dict[str, str]) -> dict[str, str]:
    """The blobs of this drop (name → ETag), in the order they are moved: its data files and start blob;
    for a folder, what lies directly in it (one listing). A nested folder is a drop of its own (its
    run.json starts it) and is left where it is."""
    source = deps.blobs.get_container_client(deps.settings.datasets_container)
    if drop.folder:
        prefix = f"{drop.folder}/"
        found = {b.name: b.etag for b in source.list_blobs(name_starts_with=prefix) if "/" not in b.name[len(prefix):]}
    else:
        found = {}
        for name in set(files.values()) | {drop.start_blob}:
            try:
                found[name] = source.get_blob_client(name).get_blob_properties().etag
            except ResourceNotFoundError:
                pass   # moved by an earlier attempt
    # the start blob last: while it is still there, a retry of its trigger comes back to finish the move
    return {name: found[name] for name in sorted(found, key=lambda n: (n == drop.start_blob, n))}


def quarantine(deps: Deps, run_id: str, drop: Drop, files: dict[str, str], *,
               only: dict[str, str] | None = None) -> list[str]:
    """Move the drop's files to quarantine/<run_id>/: copy (on the storage side, exactly the version listed),
    check the copy is complete, then delete that version — never lose data. `only` (name → ETag): move
    exactly these versions (what was listed or validated); a newer upload of a name stays where it is."""
    source = deps.blobs.get_container_client(deps.settings.datasets_container)
    target = deps.blobs.get_container_client(deps.settings.quarantine_container)
    blobs = _drop_blobs(deps, drop, files) if only is None else \
        {name: only[name] for name in sorted(only, key=lambda n: (n == drop.start_blob, n))}

    def copy(item: tuple[str, str]) -> str | None:
        name, etag = item
        src = source.get_blob_client(name)
        dst = target.get_blob_client(f"{run_id}/{name}")
        try:   # Copy Blob with x-ms-source-if-match: a re-upload in between is a new run and stays
            status = dst.start_copy_from_url(src.url, source_etag=etag,
                                             source_match_condition=MatchConditions.IfNotModified)["copy_status"]
        except ResourceNotFoundError:
            return None   # moved by an earlier attempt
        except ResourceModifiedError:
            log.warning("run %s: %s changed since it was listed; the new upload stays", run_id, name)
            return None
        deadline = time.monotonic() + QUARANTINE_COPY_SECONDS
        while status == "pending" and time.monotonic() < deadline:   # a copy in one account is usually at once
            time.sleep(0.5)
            status = dst.get_blob_properties().copy.status
        if status != "success":
            raise RuntimeError(f"quarantine copy of {name} for run {run_id} is {status}; source kept")
        return name

    def delete(names: list[str]) -> None:
        # Blob Batch: up to 256 deletes in one request, each only of the version copied (If-Match)
        results = source.delete_blobs(*[{"name": n, "etag": blobs[n], "match_condition": MatchConditions.IfNotModified}
                                        for n in names], raise_on_any_failure=False)
        for name, result in zip(names, results, strict=True):
            if result.status_code not in (200, 202, 404):
                log.warning("run %s: %s changed while quarantining (%s); the new upload stays", run_id, name,
                            result.status_code)

    # many files (a folder of 20,000) move a page at a time: copied a bounded number at once, then deleted in
    # one batch. An invocation stops between pages once it has had QUARANTINE_MAX_SECONDS (never before its
    # first page) and hands the rest on: its retry (or the reconcile timer) lists what is left and goes on.
    # The start blob goes last, once the rest are moved: while it is there, the move is not finished.
    items = list(blobs.items())
    rest, last = items[:-1], items[-1:]
    deadline = time.monotonic() + deps.settings.quarantine_max_seconds
    moved: list[str] = []
    with ThreadPoolExecutor(QUARANTINE_CONCURRENCY, thread_name_prefix="quarantine") as pool:
        deleting: list[Future[None]] = []   # a page is deleted while the next one is copied
        for start in range(0, len(rest), DELETE_BATCH):
            if start and time.monotonic() > deadline:
                wait(deleting)
                raise QuarantineUnfinished(
                    f"run {run_id}: {len(moved):,} of {len(items):,} files moved to "
                    f"{deps.settings.quarantine_container}/{run_id}/ within QUARANTINE_MAX_SECONDS "
                    f"({deps.settings.quarantine_max_seconds:.0f} s); the next delivery moves the rest")
            page = [n for n in pool.map(copy, rest[start:start + DELETE_BATCH]) if n]
            deleting.append(pool.submit(delete, page))
            moved += page
        for done in deleting:
            done.result()
    page = [n for n in map(copy, last) if n]
    if page:
        delete(page)
        moved += page
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for leaf in ("validation.json", "validation.html"):
        body = reports.get_blob_client(f"{run_id}/{leaf}").download_blob().readall()
        target.upload_blob(f"{run_id}/{leaf}", body, overwrite=True)
    return [f"{deps.settings.quarantine_container}/{run_id}/{name}" for name in moved]


def _configured_environments(deps: Deps) -> list[str]:
    return deps.require_topology().names


def _summary(report: Any, counts: dict[str, int] | None) -> dict[str, Any]:
    stats = report.stats or {}
    return {"valid": report.valid, "method": report.method, "examples": report.examples,
            "errors": len(report.errors), "warnings": len(report.warnings), "split": counts,
            "tokens": stats.get("tokens"), "cost": stats.get("cost")}
