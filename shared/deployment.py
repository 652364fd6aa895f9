"""The deploy stage and the approval gate around it: approve, reject (rollback and retire: shared.rollback).

An environment is deployed as a unit: every target in parallel, each waited for and smoke-tested; if one
fails, the targets already changed go back to what they had, so an environment is never left half-done.
The registry's deployment slots always describe what the spokes serve: they are written only once the
whole environment passed (or rolled back), and a newer run replaces an older one in place.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from shared import spokes, states
from shared.events import advance, publish
from shared.handling import PermanentError, retry_later
from shared.messages import ApproveCommand, DeployRequest, RejectCommand, deploy_message_id, envelope
from shared.registry import ConcurrencyError, DeploymentRecord, RunRecord, now_iso
from shared.topology import Environment, Target, Topology, load_topology

log = logging.getLogger(__name__)

ACTOR = "ftops-deploy"
CLAIM_TTL_SECONDS = 1800   # longer than an environment's deployment with patient smoke tests
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Outcome:
    """What happened on one target during an environment's deployment (the audit evidence)."""
    target: Target
    restore_to: tuple[str, str | None] | None = None   # (model, run id) to go back to; None → delete
    changed: bool = False
    ok: bool = False
    smoke: spokes.SmokeResult | None = None
    error: str | None = None

    def evidence(self) -> dict[str, Any]:
        return {**self.target.describe(), "ok": self.ok, "error": self.error,
                "smoke": self.smoke.evidence() if self.smoke else None}


# --- the deploy stage ----------------------------------------------------------------------------------
def handle_deploy(request: DeployRequest, deps: Any) -> None:
    run = deps.registry.require_run(request.run_id)
    topology = load_topology(deps.settings)
    order = run_environments(run, topology)
    env = _environment(topology, request.environment, order, run)
    if _already_done(deps, run, env, order, topology):
        return
    _check_entry(run, env, order)
    if env.requires_approval:   # checked here too, so no path (a forged message, a replay) skips the gate
        _require_approval(deps, run, env)
    model = run.chosen_model or run.fine_tuned_model
    if not model:
        raise PermanentError(f"run {run.run_id}: no chosen_model or fine_tuned_model to deploy")
    # One worker per run × environment × model: a duplicate delivery must not deploy (and roll back) twice.
    key = "deploy-" + hashlib.sha256(f"{run.run_id}|{env.name}|{model}".encode()).hexdigest()[:32]
    status, _ = deps.registry.claim(key, ttl_seconds=CLAIM_TTL_SECONDS)
    if status == "in_progress":
        retry_later(deps, deps.settings.deploy_queue, request, deploy_message_id(run.run_id, env.name, model))
        return
    if status == "completed":
        return
    try:
        final = _deploy_environment(deps, run, env, order, topology, model)
    except BaseException:
        deps.registry.release(key)
        raise
    deps.registry.complete(key, {"state": final})


def _deploy_environment(deps: Any, run: RunRecord, env: Environment, order: list[str], topology: Topology,
                        model: str) -> str:
    name = deployment_name(run)
    run = advance(deps, run.run_id, states.deploying(env.name), actor=ACTOR,
                  detail={"environment": env.name, "model": model, "deployment": name,
                          "targets": [t.describe() for t in env.targets]})

    quota = [m for m in parallel(lambda t: spokes.check_quota(deps, t, name), env.targets) if m]
    if quota:   # refuse before touching anything: better a clear failure than a half-done environment
        return _fail(deps, run, env, {"reason": "quota", "problems": quota, "deployment": name, "model": model})

    tags = deployment_tags(run, model, env.name)
    outcomes = parallel(lambda t: _deploy_target(deps, run, env, t, name, model, tags), env.targets)
    if not all(o.ok for o in outcomes):
        restored = parallel(lambda o: _restore(deps, env, o, name), [o for o in outcomes if o.changed])
        return _fail(deps, run, env, {"reason": "target_failed", "deployment": name, "model": model,
                                      "targets": [o.evidence() for o in outcomes], "rolled_back": restored})

    for outcome in outcomes:
        _save_slot(deps, run, env, outcome, name, model, tags)
    advance(deps, run.run_id, states.deployed(env.name), actor=ACTOR, from_states={states.deploying(env.name)},
            detail={"environment": env.name, "model": model, "deployment": name,
                    "targets": [o.evidence() for o in outcomes], "approval": run.approvals.get(env.name)})
    _promote(deps, run, env, order, topology)
    return states.deployed(env.name)


def run_environments(run: RunRecord, topology: Topology) -> list[str]:
    order = list(run.environments) or topology.names
    unknown = [e for e in order if topology.environment(e) is None]
    if unknown:
        raise PermanentError(f"run {run.run_id}: environment {unknown[0]!r} is not in SPOKES_CONFIG "
                             f"(configured: {', '.join(topology.names)})")
    return order


def deployment_name(run: RunRecord) -> str:
    """One name per run on every spoke and environment: run settings, else the suffix, else the run id."""
    s = run.settings or {}
    return str(s.get("deployment_name") or s.get("suffix") or run.run_id)[:64]


def deployment_tags(run: RunRecord, model: str, environment: str) -> dict[str, str]:
    approval = run.approvals.get(environment) or {}
    tags = {"run_id": run.run_id, "model_version": model, "dataset_hash": run.dataset_hash,
            "approval_ticket": approval.get("ticket"), "managed_by": "ftops"}
    return {k: str(v)[:256] for k, v in tags.items() if v}   # ARM: tag values up to 256 characters


def owner_of(run: RunRecord) -> str | None:
    return run.owner or (run.settings or {}).get("owner")


def parallel[T, R](fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over items concurrently, results in order (targets of one environment are few: a thread each)."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(len(items), 32), thread_name_prefix="spoke") as pool:
        return list(pool.map(fn, items))


def _environment(topology: Topology, name: str, order: list[str], run: RunRecord) -> Environment:
    env = topology.environment(name)
    if env is None or name not in order:
        raise PermanentError(f"run {run.run_id}: environment {name!r} is not one of its environments "
                             f"({', '.join(order)})")
    return env


def _already_done(deps: Any, run: RunRecord, env: Environment, order: list[str], topology: Topology) -> bool:
    """A duplicate or late message: the run is already at or past this environment."""
    kind, at = states.split(run.state)
    if run.state in (states.APPROVAL_DENIED, states.RETIRED) or run.state == states.deployment_failed(env.name):
        log.info("run %s is %s; deploy to %s ignored", run.run_id, run.state, env.name)
        return True
    if at is None or at not in order:
        return False
    here, there = order.index(env.name), order.index(at)
    if run.state == states.deployed(env.name):
        _promote(deps, run, env, order, topology)   # finish a hand-off a crash may have interrupted
        return True
    return there > here or (kind == "deployed" and there >= here)


def _check_entry(run: RunRecord, env: Environment, order: list[str]) -> None:
    """Environments are entered in order: the first from `evaluated`, the others after the previous one."""
    i = order.index(env.name)
    allowed = {states.deploying(env.name), states.awaiting_approval(env.name)}
    allowed.add(states.EVALUATED if i == 0 else states.deployed(order[i - 1]))
    if run.state not in allowed:
        raise PermanentError(f"run {run.run_id} is {run.state!r}: it cannot be deployed to {env.name!r} now "
                             f"(expected one of {', '.join(sorted(allowed))})")


def approval_problem(run: RunRecord, env: Environment, approval: dict[str, Any] | None) -> str | None:
    """Why this approval evidence does not open `env`, or None if it does (listed approver, four eyes, ticket)."""
    if not approval:
        return f"environment {env.name!r} requires an approval and run {run.run_id} has none"
    approver = str(approval.get("approver") or "")
    if not env.may_approve(approver):
        return f"{approver!r} is not an approver of {env.name!r} (approvers: {', '.join(env.approvers)})"
    owner = owner_of(run)
    if owner and approver.strip().lower() == owner.strip().lower():
        return f"{approver!r} owns run {run.run_id} and cannot approve it (four eyes)"
    if not str(approval.get("ticket") or "").strip():
        return f"the approval of {env.name!r} by {approver!r} names no ticket"
    return None


def _require_approval(deps: Any, run: RunRecord, env: Environment) -> None:
    problem = approval_problem(run, env, run.approvals.get(env.name))
    if problem:
        deps.registry.audit(run.run_id, "deployment.refused", actor=ACTOR, detail={"environment": env.name,
                                                                                  "reason": problem})
        raise PermanentError(f"run {run.run_id}: not deploying to {env.name!r}: {problem}")


def _restore_point(deps: Any, run: RunRecord, env: Environment, target: Target, name: str, model: str,
                   before: spokes.SpokeDeployment | None) -> tuple[str, str | None] | None:
    """What this slot served before this run: the registry first (it survives a crash half-way through
    this very deployment), else what ARM showed, else nothing (the deployment is deleted on rollback)."""
    slot = deps.registry.get_deployment(env.name, target.account, name)
    if slot is not None and slot.state == "active":
        if slot.run_id != run.run_id:
            return slot.model, slot.run_id
        return (slot.previous_model, slot.previous_run_id) if slot.previous_model else None
    if before is not None and before.model != model:
        return before.model, before.tags.get("run_id")
    return None


def _deploy_target(deps: Any, run: RunRecord, env: Environment, target: Target, name: str, model: str,
                   tags: dict[str, str]) -> Outcome:
    outcome = Outcome(target)
    try:
        before = spokes.get(deps, target, name)
        outcome.restore_to = _restore_point(deps, run, env, target, name, model, before)
        outcome.changed = True   # from here on ARM may have applied the PUT, even if it raised
        spokes.deploy(deps, target, name, model, tags=tags)
        outcome.smoke = spokes.smoke_test(deps, target, name, timeout_s=deps.settings.smoke_timeout_seconds)
        outcome.ok = outcome.smoke.ok
        if not outcome.ok:
            outcome.error = f"smoke test failed: {outcome.smoke.detail}"
    except Exception as exc:  # noqa: BLE001 (one target failing must not stop the others being collected)
        log.warning("run %s: %s on %s failed: %s", run.run_id, name, target.account, exc)
        outcome.error = str(exc)
    return outcome


def _restore(deps: Any, env: Environment, outcome: Outcome, name: str) -> dict[str, Any]:
    """Put one changed target back: the previous model (with its slot's tags and sku), or delete."""
    target = outcome.target
    try:
        if outcome.restore_to is None:
            spokes.delete(deps, target, name)
            return {"account": target.account, "action": "deleted"}
        model, run_id = outcome.restore_to
        slot = deps.registry.get_deployment(env.name, target.account, name)
        if slot is not None and slot.run_id == run_id and slot.model == model:
            spokes.deploy(deps, target, name, model, tags=slot.tags, sku=slot.sku, capacity=slot.capacity)
        else:
            previous = deps.registry.get_run(run_id) if run_id else None
            tags = deployment_tags(previous, model, env.name) if previous else {"model_version": model}
            spokes.deploy(deps, target, name, model, tags=tags)
        return {"account": target.account, "action": "restored", "model": model, "run_id": run_id}
    except Exception as exc:  # noqa: BLE001 (per-target outcome, reported)
        log.error("rollback of %s on %s failed: %s", name, target.account, exc)
        return {"account": target.account, "action": "failed", "error": str(exc)}


def _fail(deps: Any, run: RunRecord, env: Environment, detail: dict[str, Any]) -> str:
    message = "; ".join(detail.get("problems") or
                        [f"{t['account']}: {t['error']}" for t in detail.get("targets", []) if t.get("error")])
    advance(deps, run.run_id, states.deployment_failed(env.name), actor=ACTOR,
            from_states={states.deploying(env.name)}, detail={"environment": env.name, **detail},
            error={"stage": "deploy", "environment": env.name, "message": message})
    return states.deployment_failed(env.name)


def _save_slot(deps: Any, run: RunRecord, env: Environment, outcome: Outcome, name: str, model: str,
               tags: dict[str, str]) -> None:
    t = outcome.target
    for _ in range(5):
        slot = deps.registry.get_deployment(env.name, t.account, name)
        previous = outcome.restore_to or (None, None)
        record = DeploymentRecord(
            environment=env.name, account=t.account, deployment=name, region=t.region,
            subscription=t.subscription, resource_group=t.resource_group, run_id=run.run_id, model=model,
            previous_model=previous[0], previous_run_id=previous[1], state="active", sku=t.sku,
            capacity=t.capacity, tags=tags)   # last_ping: the keep-alive's own (the smoke test is in the audit)
        record.etag = slot.etag if slot else None
        try:
            deps.registry.save_deployment(record)
        except ConcurrencyError:
            continue
        if slot is not None and slot.state == "active" and slot.run_id != run.run_id:
            deps.registry.audit(slot.run_id, "deployment.superseded", actor=ACTOR,
                                detail={"slot": record.slot, "by_run": run.run_id, "model": model})
        return
    raise ConcurrencyError(f"deployment slot {env.name}|{t.account}|{name}: too many concurrent updates")


def _promote(deps: Any, run: RunRecord, env: Environment, order: list[str], topology: Topology) -> None:
    i = order.index(env.name)
    if i + 1 >= len(order):
        return
    nxt = topology.environment(order[i + 1])
    assert nxt is not None   # run_environments checked every name
    if nxt.requires_approval:
        advance(deps, run.run_id, states.awaiting_approval(nxt.name), actor=ACTOR,
                detail={"environment": nxt.name, "approvers": list(nxt.approvers)})
        return
    _send_deploy(deps, run.run_id, nxt.name)


def _send_deploy(deps: Any, run_id: str, environment: str) -> None:
    # A MessageId stable per model: Service Bus duplicate detection drops the resend after a crash, while a
    # retrain's next model is a new request.
    run = deps.registry.get_run(run_id)
    model = (run.chosen_model or run.fine_tuned_model) if run else None
    deps.publisher.send(deps.settings.deploy_queue, envelope(DeployRequest(run_id=run_id, environment=environment),
                                                             message_id=deploy_message_id(run_id, environment, model)))


# --- commands ------------------------------------------------------------------------------------------
def approve(command: ApproveCommand, deps: Any) -> None:
    run = deps.registry.require_run(command.run_id)
    env = _gated(load_topology(deps.settings), command.environment, run)
    evidence = {"environment": env.name, "approver": command.approver.strip(), "ticket": command.ticket.strip(),
                "comment": command.comment, "at": now_iso()}
    existing = run.approvals.get(env.name)
    if existing and existing.get("approver") == evidence["approver"] and existing.get("ticket") == evidence["ticket"]:
        if run.state == states.awaiting_approval(env.name):
            _send_deploy(deps, run.run_id, env.name)   # a duplicate command: make sure the deploy went out
        return
    if run.state != states.awaiting_approval(env.name):
        raise PermanentError(f"run {run.run_id} is {run.state!r}, not awaiting approval for {env.name!r}")
    problem = approval_problem(run, env, evidence)
    if problem:
        deps.registry.audit(run.run_id, "approval.refused", actor=command.approver,
                            detail={**evidence, "reason": problem})
        publish(deps, run.run_id, "approval_refused", {"environment": env.name, "reason": problem})
        raise PermanentError(f"run {run.run_id}: approval refused: {problem}")
    for _ in range(5):   # a conditional write of the evidence; the state moves when the deploy starts
        run = deps.registry.require_run(command.run_id)
        if run.state != states.awaiting_approval(env.name):
            raise PermanentError(f"run {run.run_id} is {run.state!r}, not awaiting approval for {env.name!r}")
        run.approvals = {**run.approvals, env.name: evidence}
        try:
            deps.registry.save_run(run)
            break
        except ConcurrencyError:
            continue
    else:
        raise ConcurrencyError(f"run {run.run_id}: too many concurrent updates while approving")
    deps.registry.audit(run.run_id, "approval.granted", actor=command.approver, detail=evidence)
    publish(deps, run.run_id, "approved", evidence)
    _send_deploy(deps, run.run_id, env.name)


def reject(command: RejectCommand, deps: Any) -> None:
    run = deps.registry.require_run(command.run_id)
    env = _gated(load_topology(deps.settings), command.environment, run)
    if run.state == states.APPROVAL_DENIED:
        return
    if run.state != states.awaiting_approval(env.name):
        raise PermanentError(f"run {run.run_id} is {run.state!r}, not awaiting approval for {env.name!r}")
    if not env.may_approve(command.approver):
        raise PermanentError(f"{command.approver!r} is not an approver of {env.name!r} and cannot reject it")
    detail = {"environment": env.name, "approver": command.approver, "reason": command.reason,
              "ticket": command.ticket}
    advance(deps, run.run_id, states.APPROVAL_DENIED, actor=command.approver, detail=detail,
            error={"stage": "approval", **detail})


def _gated(topology: Topology, name: str, run: RunRecord) -> Environment:
    env = topology.environment(name)
    if env is None:
        raise PermanentError(f"run {run.run_id}: environment {name!r} is not in SPOKES_CONFIG")
    if not env.requires_approval:
        raise PermanentError(f"environment {name!r} does not require approval")
    return env
