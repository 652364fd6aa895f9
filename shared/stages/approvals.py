"""Approve and reject: a verified person's decision, bound to exactly what they decided on.

An approval names the run, the environment, the model, the dataset hash and the evaluation report's hash.
The deploy stage re-checks it against what it is about to deploy (`approval_problem`), so a retrained
model, a replayed request or a changed report never rides on an earlier approval. The approver is the
token's object id; the right is the app role `Approver.<environment>` (narrowed by the environment's
`approvers` object ids when listed). Four eyes compares object ids: the run's owner, and every verified
person who started, claimed or retrained it (`RunRecord.makers`), cannot approve it.

The owner a run.json names is a claim. A gated environment opens only for a run whose current model a
verified person stands behind (`unverified_problem`): it was started or retrained through the operator API,
or its owner confirmed the claim (`claim`, POST runs/{id}/claim with a token whose oid is the owner).
"""
from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from shared.app.settlement import PermanentError
from shared.azure.access import AccessDenied, Caller, approver_role
from shared.run import states
from shared.run.actors import is_object_id
from shared.run.messages import deploy_request, run_event
from shared.run.rules import owner_confirmed, unverified_problem
from shared.run.topology import Environment
from shared.stages import report_lineage
from shared.store.claims import conditional_update
from shared.store.events import advance
from shared.store.outbox import send_held
from shared.store.registry import ApprovalAttempt, ApprovalTaken, RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


class Refused(PermanentError):
    """The request is understood and will never be granted as it stands (409 from the API)."""


def owner_of(run: RunRecord) -> str | None:
    return run.owner or (run.settings or {}).get("owner")


def evaluation_report_hash(deps: Deps, run_id: str) -> str | None:
    """sha256 of reports/<run>/evaluation.json as stored now (None if there is none)."""
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/evaluation.json")
    try:
        data = blob.download_blob().readall()
    except ResourceNotFoundError:
        return None
    return report_lineage.evidence_hash(data)


def candidate(deps: Deps, run: RunRecord, *, evidence: str | None = None) -> dict[str, Any]:
    """What an approval of this run would bind to, as it stands now. `evidence`: the evaluation report's hash if
    the caller has just read it (report_lineage.status), so it is not downloaded twice."""
    return {"run_id": run.run_id, "model": run.chosen_model or run.fine_tuned_model, "dataset_hash": run.dataset_hash,
            "evaluation_report_hash": evidence or evaluation_report_hash(deps, run.run_id)}


class ApprovalConflict(Refused):
    """Another approval of the same run, environment and model won: this attempt is kept, as lost (409)."""


def approve(deps: Deps, caller: Caller, run_id: str, environment: str, *, ticket: str, model: str,
            comment: str | None = None, dataset_hash: str | None = None,
            evaluation_report_hash: str | None = None) -> dict[str, Any]:
    """Record the approval and send the deploy; returns the evidence. AccessDenied (403) or Refused (409)
    say why not; the caller (the API) audits refusals with who tried.

    Every attempt is its own record (shared.store.registry.ApprovalAttempt: id, who, ticket, model, evidence
    hashes, time to the microsecond); exactly one per run × environment × model wins, by a conditional
    insert, and only the winner is written on the run, audited and announced. A concurrent loser gets
    ApprovalConflict (409) naming the winner."""
    run = deps.registry.require_run(run_id)
    env = gated_environment(deps, environment, run)
    _check_right(caller, env)
    now = candidate(deps, run)
    asked = {"model": model, "dataset_hash": dataset_hash, "evaluation_report_hash": evaluation_report_hash}
    stale = [f"{k} {v!r} (the run's is {now[k]!r})" for k, v in asked.items() if v is not None and v != now[k]]
    if stale:
        raise Refused(f"run {run_id}: this approval names {'; '.join(stale)}: it was prepared for another model "
                      "or evidence (a retrain, or a replayed request); look at the run again and approve what it "
                      "holds now")
    attempt = ApprovalAttempt(run_id=run_id, environment=env.name, approver_oid=caller.oid,
                              approver_name=caller.name, ticket=(ticket or "").strip(), model=str(now["model"] or ""),
                              dataset_hash=now["dataset_hash"], evaluation_report_hash=now["evaluation_report_hash"],
                              comment=comment)
    evidence = _evidence(attempt)
    existing = run.approvals.get(env.name)
    if existing and _same_decision(existing, evidence):
        if run.state == states.awaiting_approval(env.name):   # a repeat: finish what the first may not have
            _announce(deps, run_id, existing)
            send_deploy(deps, run.run_id, env.name, model=existing.get("model"))
        report_lineage.amend(deps, run_id)
        return existing
    if run.state != states.awaiting_approval(env.name):
        raise Refused(f"run {run_id} is {run.state!r}, not awaiting approval for {env.name!r}")
    problem = evidence_problem(run, env, evidence)
    if problem:
        raise (AccessDenied(403, problem, caller=caller) if "four eyes" in problem else Refused(problem))
    try:
        deps.registry.record_approval(attempt)
    except ApprovalTaken as taken:
        winner = _evidence(ApprovalAttempt(**{k: v for k, v in taken.winner.items() if k != "etag"}))
        if not _same_decision(winner, evidence):
            raise ApprovalConflict(
                f"run {run_id}: {env.name!r} was already approved for {attempt.model} by "
                f"{winner['approver_name'] or ''} <{winner['approver_oid']}> (ticket {winner['ticket']}, "
                f"{winner['at']}, approval {winner['approval_id']}); this attempt ({attempt.attempt_id}) is kept "
                "as lost") from None
        evidence = winner   # the same person's earlier attempt won (a repeat after a crash): finish it

    def record(fresh: RunRecord) -> RunRecord | None:   # the evidence only; the state moves when the deploy starts
        held = fresh.approvals.get(env.name)
        if held and held.get("approval_id") == evidence["approval_id"]:
            return None
        if fresh.state != states.awaiting_approval(env.name):
            raise Refused(f"run {run_id} is {fresh.state!r}, not awaiting approval for {env.name!r}")
        fresh.approvals = {**fresh.approvals, env.name: evidence}
        return fresh

    conditional_update(lambda: deps.registry.require_run(run_id), record, deps.registry.save_run,
                       gives_up=f"run {run_id}: too many concurrent updates while approving")
    _announce(deps, run_id, evidence)
    send_deploy(deps, run_id, env.name, model=evidence["model"])
    report_lineage.amend(deps, run_id)   # the report a reviewer opens shows it (its evidence unchanged)
    return evidence


def _evidence(attempt: ApprovalAttempt) -> dict[str, Any]:
    """What the run keeps of the winning attempt (docs/CONTRACTS.md: `approvals[env]`)."""
    return {"environment": attempt.environment, "run_id": attempt.run_id, "model": attempt.model,
            "dataset_hash": attempt.dataset_hash, "evaluation_report_hash": attempt.evaluation_report_hash,
            "approver_oid": attempt.approver_oid, "approver_name": attempt.approver_name, "ticket": attempt.ticket,
            "comment": attempt.comment, "at": attempt.at, "approval_id": attempt.attempt_id}


def _same_decision(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("approver_oid", "ticket", "model", "evaluation_report_hash"))


def _announce(deps: Deps, run_id: str, evidence: dict[str, Any]) -> None:
    """The winning approval's audit record and event, once each, named by its approval id (evidence from before
    approval ids: its time and environment), so a repeat after a crash tells it and a second repeat adds
    nothing. The actor is the approver the evidence names, whoever repeats the call."""
    key = evidence.get("approval_id") or f"{evidence.get('environment')}|{evidence.get('at')}"
    if not any(a["action"] == "approval.granted" and (a["detail"].get("approval_id") or
                                                      f"{a['detail'].get('environment')}|{a['detail'].get('at')}") == key
               for a in deps.registry.audit_trail(run_id)):
        name, oid = evidence.get("approver_name"), evidence.get("approver_oid")
        deps.registry.audit(run_id, "approval.granted", actor=f"{name} <{oid}>" if name else str(oid), detail=evidence)
    event_id = hashlib.sha256(f"approved|{run_id}|{key}".encode())
    send_held(deps, deps.settings.events_topic, run_event("approved", run_id, evidence,
                                                           event_id=event_id.hexdigest()[:32]))


def claim(deps: Deps, caller: Caller, run_id: str) -> dict[str, Any]:
    """The run's named owner confirms it with their own token: the owner becomes a verified identity (who
    then cannot approve it, like the starter and retrainer). Anyone else is refused (403), never recorded
    as the owner."""
    if not caller.person:
        raise AccessDenied(403, "confirming a run's ownership is a person's decision: this is an application's "
                                "token (no delegated scope)", caller=caller)
    run = deps.registry.require_run(run_id)
    owner = owner_of(run)
    if not owner or owner.strip().lower() != caller.oid.lower():
        raise AccessDenied(403, f"run {run_id} names {owner or 'no owner'} as its owner, not {caller.oid}: only "
                                "the named owner can confirm it", caller=caller)
    if run.terminal:
        raise Refused(f"run {run_id} is {run.state!r}: there is nothing left to confirm")
    detail = {"owner": caller.oid, "name": caller.name}
    if owner_confirmed(run):
        return detail

    def record(fresh: RunRecord) -> RunRecord:
        if fresh.settings != run.settings:   # retrained with other settings meanwhile: not what they looked at
            raise Refused(f"run {run_id} was retrained while you confirmed it: look at it again, then confirm")
        fresh.claimed_by = caller.oid
        if not any(m.get("oid") == caller.oid and m.get("as") == "claimed" for m in fresh.makers):
            fresh.makers = [*fresh.makers, {"oid": caller.oid, "as": "claimed"}]
        return fresh

    conditional_update(lambda: deps.registry.require_run(run_id), record, deps.registry.save_run,
                       gives_up=f"run {run_id}: too many concurrent updates while confirming its owner")
    deps.registry.audit(run_id, "owner.confirmed", actor=caller.actor, detail=detail)
    return detail


def reject(deps: Deps, caller: Caller, run_id: str, environment: str, *, reason: str,
           ticket: str | None = None) -> dict[str, Any]:
    run = deps.registry.require_run(run_id)
    env = gated_environment(deps, environment, run)
    _check_right(caller, env)
    detail = {"environment": env.name, "approver_oid": caller.oid, "approver_name": caller.name,
              "reason": reason, "ticket": ticket}
    if run.state == states.APPROVAL_DENIED:
        report_lineage.amend(deps, run_id)   # a repeat finishes an amendment a crash interrupted
        return detail
    if run.state != states.awaiting_approval(env.name):
        raise Refused(f"run {run_id} is {run.state!r}, not awaiting approval for {env.name!r}")
    advance(deps, run_id, states.APPROVAL_DENIED, actor=caller.actor, detail=detail,
            error={"stage": "approval", **detail})
    report_lineage.amend(deps, run_id)
    return detail


def evidence_problem(run: RunRecord, env: Environment, approval: dict[str, Any]) -> str | None:
    """Why this approval evidence cannot open `env` for this run (who and what), or None."""
    approver = str(approval.get("approver_oid") or "")
    if not is_object_id(approver):
        return f"the approval of {env.name!r} does not come from a verified identity (no approver object id)"
    if not env.allows_approver(approver):
        return f"{approver} is not among the approvers of {env.name!r} listed in SPOKES_CONFIG"
    owner = owner_of(run)
    if not owner:
        return f"run {run.run_id} names no owner; every run that reaches {env.name!r} must name one (four eyes)"
    if owner.strip().lower() == approver.lower():
        return f"{approver} owns run {run.run_id} and cannot approve it (four eyes)"
    if run.started_by and run.started_by.lower() == approver.lower():
        return f"{approver} started or retrained run {run.run_id} (this model) and cannot approve it (four eyes)"
    for maker in run.makers:
        if str(maker.get("oid", "")).lower() == approver.lower():
            return f"{approver} {maker.get('as', 'made')} run {run.run_id} and cannot approve it (four eyes)"
    unverified = unverified_problem(run, env.name)
    if unverified:
        return unverified
    if not str(approval.get("ticket") or "").strip():
        return f"the approval of {env.name!r} names no ticket"
    return None


def approval_problem(deps: Deps, run: RunRecord, env: Environment, model: str) -> str | None:
    """Why the deploy of `model` to `env` may not proceed on the run's recorded approval, or None."""
    approval = run.approvals.get(env.name)
    if not approval:
        return f"environment {env.name!r} requires an approval and run {run.run_id} has none"
    problem = evidence_problem(run, env, approval)
    if problem:
        return problem
    if approval.get("run_id") != run.run_id or approval.get("environment") != env.name:
        return f"the approval was given for run {approval.get('run_id')} / {approval.get('environment')}"
    if approval.get("model") != model:
        return f"the approval is for model {approval.get('model')!r}, not {model!r} (retrained since?)"
    if approval.get("dataset_hash") != run.dataset_hash:
        return "the approval was given for another dataset (dataset hash differs)"
    if approval.get("evaluation_report_hash") != evaluation_report_hash(deps, run.run_id):
        return "the evaluation report changed since the approval (its hash differs)"
    return None


def gated_environment(deps: Deps, name: str, run: RunRecord) -> Environment:
    env = deps.require_topology().environment(name)
    if env is None:
        raise Refused(f"run {run.run_id}: environment {name!r} is not in SPOKES_CONFIG")
    if not env.requires_approval:
        raise Refused(f"environment {name!r} does not require approval")
    return env


def send_deploy(deps: Deps, run_id: str, environment: str, *, model: str | None = None) -> None:
    """A stable MessageId per run × environment × model: duplicate detection drops a resend after a crash,
    yet a retrained model's deploy is a new message, not a duplicate of the old model's."""
    deps.publisher.send(deps.settings.deploy_queue, deploy_request(run_id, environment, model))


def _check_right(caller: Caller, env: Environment) -> None:
    if not caller.person:
        raise AccessDenied(403, f"approving or rejecting {env.name!r} is a person's decision: this is an "
                                "application's token (no delegated scope)", caller=caller)
    role = approver_role(env.name)
    if not caller.has(role):
        raise AccessDenied(403, f"approving or rejecting {env.name!r} needs the app role {role}; the token has "
                                f"{', '.join(sorted(caller.roles)) or 'no roles'}", caller=caller)
    if not env.allows_approver(caller.oid):
        raise AccessDenied(403, f"{caller.oid} is not among the approvers of {env.name!r} listed in "
                                "SPOKES_CONFIG", caller=caller)
