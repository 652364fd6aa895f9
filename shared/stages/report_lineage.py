"""The evaluation report, amended with the decisions taken on it after it was written.

`reports/<run>/evaluation.json` is the evidence an approver weighs: an approval binds to its sha256
(`approvals.evaluation_report_hash`) and the deploy checks that hash again, so it is never rewritten. What is
decided afterwards — approvals (the run's approval records, as `GET runs/{id}` shows them), a rejection,
rollbacks, a restoration, the retirement (the audit trail) — is kept beside it in
`reports/<run>/evaluation-lineage.json`: append-only, versioned (version 1 is the report as evaluated; each
amendment adds a version with when it was made and which decisions it added), naming the hash of the
evaluation.json it amends. `evaluation.html` is then rendered again from the unchanged evaluation.json and
that document: only its lineage section differs, and it says when it was amended.

`amend` is idempotent (it derives the decisions from the records each time and adds only those not yet
there) and safe against a concurrent amendment (conditional writes on both blobs). The stages that record a
decision call it after recording it; a repeat of the call finishes an amendment a crash interrupted.
Docs: docs/evaluation.md, "Reports".
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.run import states
from shared.run.echo import echo
from shared.store.claims import ConcurrencyError, conditional_update
from shared.store.registry import RunRecord, now_iso

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
LINEAGE_BLOB = "evaluation-lineage.json"
SCHEMA_VERSION = 1
ATTEMPTS = 5
# audit actions that are decisions on the evaluated model, and what the report calls them
AUDITED = {f"run.{states.APPROVAL_DENIED}": "rejection", "deployment.rolled_back": "rollback",
           "deployment.restored": "restored", f"run.{states.RETIRED}": "retirement",
           "deployment.retired": "retirement"}


def decisions(run: RunRecord, trail: Sequence[Mapping[str, Any]], *, evidence: str, since: str) -> list[dict[str, Any]]:
    """Every decision on the model this report evaluated, oldest first: the approvals given on this very
    evidence (its hash), and the audited decisions recorded since the report was generated."""
    found = []
    for env, given in run.approvals.items():
        if given.get("evaluation_report_hash") != evidence:   # given on another report: not this one's
            continue
        who = given.get("approver_name")
        found.append({"id": f"approval:{given.get('approval_id') or env + '|' + str(given.get('at'))}",
                      "kind": "approval", "at": given.get("at"), "environment": env,
                      "who": f"{who} <{given.get('approver_oid')}>" if who else given.get("approver_oid"),
                      "ticket": _said(given.get("ticket")), "comment": _said(given.get("comment")),
                      "model": given.get("model"),
                      "evaluation_report_hash": given.get("evaluation_report_hash"),
                      "dataset_hash": given.get("dataset_hash")})
    for record in trail:
        kind = AUDITED.get(str(record.get("action")))
        if kind is None or str(record.get("at") or "") < since:
            continue
        detail = record.get("detail") or {}
        key = detail.get("rollback_id") or hashlib.sha256(
            f"{record['action']}|{record.get('at')}|{record.get('actor')}".encode()).hexdigest()[:16]
        found.append({"id": f"{kind}:{key}", "kind": kind, "at": record.get("at"), "who": record.get("actor"),
                      "environment": detail.get("environment"), "ticket": _said(detail.get("ticket")),
                      "reason": _said(detail.get("reason")),
                      **({"from_model": detail.get("from_model"), "to_model": detail.get("to_model")}
                         if kind in ("rollback", "restored") else {})})
    found.sort(key=lambda d: (str(d.get("at") or ""), d["id"]))
    return found


def _said(text: Any) -> str | None:
    """What a person wrote (ticket, reason, comment), as the report may echo it: bounded, secrets masked."""
    return None if text is None else echo(text, 1000)


def amend(deps: Deps, run_id: str) -> dict[str, Any] | None:
    """Bring the run's evaluation report up to its decisions: the lineage document (a new version when a
    decision is not in it yet) and the HTML rendered from it. None when there is no measured report or no
    decision yet."""
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    measured = _measured(container, run_id)
    if measured is None:
        return None
    report, evidence = measured
    found = decisions(deps.registry.require_run(run_id), deps.registry.audit_trail(run_id), evidence=evidence,
                      since=str(report.get("generated_at") or ""))
    doc = _amend_document(container, run_id, evidence, found)
    if doc is not None:
        _render(container, run_id, report, doc)
    return doc


def status(deps: Deps, run: RunRecord, trail: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """What GET runs/{id} says of the report's lineage: its version, when it was last amended, the decisions it
    shows, and those the records hold that it does not show yet (`missing`; empty when it is in step)."""
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    measured = _measured(container, run.run_id)
    if measured is None:
        return None
    report, evidence = measured
    doc = _read(container, run.run_id)[0]
    if doc is not None and doc.get("evaluation_report_hash") != evidence:
        doc = None
    shown = [d["id"] for d in (doc or {}).get("decisions", [])]
    recorded = decisions(run, trail, evidence=evidence, since=str(report.get("generated_at") or ""))
    return {"version": doc["version"] if doc else 1, "amended_at": doc["amended_at"] if doc else None,
            "evaluation_report_hash": evidence, "document": LINEAGE_BLOB if doc else None, "decisions": shown,
            "missing": [d["id"] for d in recorded if d["id"] not in shown]}


def _measured(container: Any, run_id: str) -> tuple[dict[str, Any], str] | None:
    """The evaluation report and the hash approvals bind to; None without one, or for a minimal report of
    an evaluation that measured nothing."""
    from azure.core.exceptions import ResourceNotFoundError
    try:
        data = container.get_blob_client(f"{run_id}/evaluation.json").download_blob().readall()
    except ResourceNotFoundError:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return None
    if not isinstance(report, dict) or "candidates" not in report:
        return None
    return report, evidence_hash(data)


def evidence_hash(data: bytes) -> str:
    """What an approval binds to: the sha256 of evaluation.json's bytes as stored."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _read(container: Any, run_id: str) -> tuple[dict[str, Any] | None, str | None]:
    from azure.core.exceptions import ResourceNotFoundError
    try:
        download = container.get_blob_client(f"{run_id}/{LINEAGE_BLOB}").download_blob()
    except ResourceNotFoundError:
        return None, None
    return json.loads(download.readall()), download.properties.etag


def _amend_document(container: Any, run_id: str, evidence: str, found: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The lineage document with every decision in `found`, written as a new version when one is missing."""
    from azure.storage.blob import ContentSettings

    def read() -> tuple[dict[str, Any] | None, str | None]:
        doc, etag = _read(container, run_id)
        # none yet, or one of a replaced report: none of this report's
        return (doc if doc is not None and doc.get("evaluation_report_hash") == evidence else None), etag

    def change(current: tuple[dict[str, Any] | None, str | None]) -> tuple[dict[str, Any], str | None] | None:
        doc, etag = current
        known = {d["id"] for d in doc["decisions"]} if doc else set()
        new = [d for d in found if d["id"] not in known]   # append-only: a decision once shown stays shown
        if not new:
            return None
        doc = doc or {"schema_version": SCHEMA_VERSION, "run_id": run_id, "evaluation_report": "evaluation.json",
                      "evaluation_report_hash": evidence, "version": 1, "amended_at": None, "decisions": [],
                      "versions": [{"version": 1, "amended_at": None, "added": [],
                                    "note": "the report as evaluated"}]}
        at = now_iso()
        return {**doc, "version": doc["version"] + 1, "amended_at": at, "decisions": [*doc["decisions"], *new],
                "versions": [*doc["versions"], {"version": doc["version"] + 1, "amended_at": at,
                                                "added": [d["id"] for d in new]}]}, etag

    def write(update: tuple[dict[str, Any], str | None]) -> tuple[dict[str, Any], str | None]:
        doc, etag = update
        _upload_over(etag, lambda **condition: container.upload_blob(
            f"{run_id}/{LINEAGE_BLOB}", json.dumps(doc, indent=2, ensure_ascii=False), overwrite=True,
            content_settings=ContentSettings(content_type="application/json"), **condition))
        log.info("run %s: evaluation report amended to lineage version %d (%s)", run_id, doc["version"],
                 ", ".join(d["kind"] for d in doc["decisions"] if d["id"] in doc["versions"][-1]["added"]))
        return update

    # the document as written, or as read when nothing was missing
    return conditional_update(read, change, write, attempts=ATTEMPTS,
                              gives_up=f"run {run_id}: too many concurrent amendments of {LINEAGE_BLOB}; will retry")[0]


def _upload_over(etag: str | None, upload: Callable[..., Any]) -> None:
    """`upload(**condition)` only over what was read: the blob with this ETag, or none. One that lost the race
    raises ConcurrencyError (conditional_update then reads again)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
    try:
        upload(**({"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag
                  else {"match_condition": MatchConditions.IfMissing}))
    except (ResourceModifiedError, ResourceExistsError) as exc:
        raise ConcurrencyError(f"written meanwhile (ETag {etag})") from exc


def _render(container: Any, run_id: str, report: dict[str, Any], doc: dict[str, Any]) -> None:
    """evaluation.html from the unchanged evaluation.json and the lineage document, unless it already shows
    this version or a later one (blob metadata; conditional on the ETag read, so an older amendment never
    overwrites a newer one)."""
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.blob import ContentSettings

    from shared.evaluation.report import render_html
    blob = container.get_blob_client(f"{run_id}/evaluation.html")
    evidence = doc["evaluation_report_hash"].removeprefix("sha256:")

    def read() -> tuple[str | None, dict[str, str]]:
        try:
            props = blob.get_blob_properties()
            return props.etag, props.metadata or {}
        except ResourceNotFoundError:
            return None, {}

    def change(current: tuple[str | None, dict[str, str]]) -> tuple[str | None, dict[str, str]] | None:
        _, meta = current
        if meta.get("evidence") == evidence and int(meta.get("lineage_version") or 1) >= doc["version"]:
            return None   # shows this version or a later one already
        return current   # rendered again, over the version read

    def write(update: tuple[str | None, dict[str, str]]) -> None:
        etag, _ = update
        _upload_over(etag, lambda **condition: blob.upload_blob(
            render_html(report, amendments=doc), overwrite=True, content_settings=ContentSettings(
                content_type="text/html; charset=utf-8"),
            metadata={"lineage_version": str(doc["version"]), "evidence": evidence}, **condition))

    conditional_update(read, change, write, attempts=ATTEMPTS,
                       gives_up=f"run {run_id}: too many concurrent renderings of evaluation.html; will retry")
