"""The deploy stage and the approval gate in front of gated environments (approve and reject:
shared.stages.approvals; rollback and retire: shared.stages.rollback).

An environment is deployed as a unit: every target in parallel, each waited for and smoke-tested; if one
fails, the targets already changed go back to what they had, so an environment is never left half-done.
The registry's deployment slots always describe what the spokes serve: they are written only once the
whole environment passed (or rolled back), and a newer run replaces an older one in place.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.app.settlement import PermanentError, retry_later
from shared.azure.arm_deployments import ArmDeployment
from shared.azure.spokes import SmokeResult, at_once
from shared.run import actors, states
from shared.run.messages import DeployRequest, deploy_message_id
from shared.run.rules import deployment_name, unverified_problem
from shared.run.topology import Environment, Target, Topology, target_problem
from shared.stages.approvals import approval_problem, owner_of, send_deploy
from shared.store import claims
from shared.store.events import advance
from shared.store.registry import DeploymentRecord, RunRecord, SlotEntry

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

ACTOR = actors.DEPLOYMENT


@dataclass
class Outcome:
    """What happened on one target during an environment's deployment (the audit evidence)."""
    target: Target
    restore_to: tuple[str, str | None] | None = None   # (model, run id) to go back to; None → delete
    changed: bool = False
    ok: bool = False
    smoke: SmokeResult | None = None
    error: str | None = None

    def evidence(self) -> dict[str, Any]:
        return {**self.target.describe(), "ok": self.ok, "error": self.error,
                "smoke": self.smoke.evidence() if self.smoke else None}


# --- the deploy stage ----------------------------------------------------------------------------------
def handle_deploy(request: DeployRequest, deps: Deps) -> None:
    run = deps.registry.require_run(request.run_id)
    topology = deps.require_topology()
    order = run_environments(run, topology)
    env = _environment(topology, request.environment, order, run)
    if _already_done(deps, run, env, order, topology):
        return
    _check_entry(run, env, order)
    model = run.chosen_model or run.fine_tuned_model
    if not model:
        raise PermanentError(f"run {run.run_id}: no chosen_model or fine_tuned_model to deploy")
    if env.requires_approval:   # checked here, so no path (a forged message, a replay) skips the gate
        _require_approval(deps, run, env, model)
    # One worker per run × environment × model: a duplicate delivery must not deploy (and roll back) twice.
    with claims.hold(deps.registry, claim_key(run.run_id, env.name, model),
                     ttl_seconds=deps.settings.claim_lease_seconds) as claim:
        if claim.in_progress:
            retry_later(deps, deps.settings.deploy_queue, request, deploy_message_id(run.run_id, env.name, model))
        elif claim.owned:
            claim.complete({"state": _deploy_environment(deps, run, env, order, topology, model)})


def claim_key(run_id: str, environment: str, model: str) -> str:
    """The deploy step's claim: one worker per run × environment × model."""
    return "deploy-" + hashlib.sha256(f"{run_id}|{environment}|{model}".encode()).hexdigest()[:32]


def _deploy_environment(deps: Deps, run: RunRecord, env: Environment, order: list[str], topology: Topology,
                        model: str) -> str:
    name = deployment_name(run)
    run = advance(deps, run.run_id, states.deploying(env.name), actor=ACTOR,
                  detail={"environment": env.name, "model": model, "deployment": name,
                          "targets": [t.describe() for t in env.targets]})

    # refuse before touching anything: better a clear failure than a half-done environment
    foreign = [m for m in at_once(lambda t: deps.spokes.foreign(t, name), env.targets) if m]
    if foreign:   # another application's deployment under this name: never replaced
        deps.registry.audit(run.run_id, "deployment.refused", actor=ACTOR, detail={
            "environment": env.name, "deployment": name, "reason": "not_managed_by_ftops", "problems": foreign,
            "owner": owner_of(run), "requested_by": run.source})
        return _fail(deps, run, env, {"reason": "not_managed_by_ftops", "problems": foreign, "deployment": name,
                                      "model": model})
    quota = [m for m in at_once(lambda t: deps.spokes.check_quota(t, name), env.targets) if m]
    if quota:
        return _fail(deps, run, env, {"reason": "quota", "problems": quota, "deployment": name, "model": model})

    base_model = str((run.settings or {}).get("base_model") or deps.settings.default_base_model)
    unfit = [f"{t.account} ({t.region}): {p}" for t in env.targets if (p := target_problem(t, base_model))]
    if unfit:   # the run chose a base model the start-up check did not cover
        return _fail(deps, run, env, {"reason": "deployment_type", "problems": unfit, "deployment": name,
                                      "model": model})

    tags = deployment_tags(run, model, env.name)
    outcomes = at_once(lambda t: _deploy_target(deps, run, env, t, name, model, tags), env.targets)
    if not all(o.ok for o in outcomes):
        restored = at_once(lambda o: _restore(deps, env, o, name), [o for o in outcomes if o.changed])
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


def deployment_tags(run: RunRecord, model: str, environment: str) -> dict[str, str]:
    approval = run.approvals.get(environment) or {}
    tags = {"run_id": run.run_id, "model_version": model, "dataset_hash": run.dataset_hash,
            "approval_ticket": approval.get("ticket"), "managed_by": "ftops"}
    return {k: str(v)[:256] for k, v in tags.items() if v}   # ARM: tag values up to 256 characters


def _environment(topology: Topology, name: str, order: list[str], run: RunRecord) -> Environment:
    env = topology.environment(name)
    if env is None or name not in order:
        raise PermanentError(f"run {run.run_id}: environment {name!r} is not one of its environments "
                             f"({', '.join(order)})")
    return env


def _already_done(deps: Deps, run: RunRecord, env: Environment, order: list[str], topology: Topology) -> bool:
    """A duplicate or late message: the run is already at or past this environment."""
    kind, at = states.split(run.state)
    if run.state in (states.APPROVAL_DENIED, states.RETIRED) or run.state == states.deployment_failed(env.name) \
            or kind == "rolled_back":
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


def _require_approval(deps: Deps, run: RunRecord, env: Environment, model: str) -> None:
    problem = approval_problem(deps, run, env, model)
    if problem:
        deps.registry.audit(run.run_id, "deployment.refused", actor=ACTOR, detail={
            "environment": env.name, "model": model, "reason": problem, "approval": run.approvals.get(env.name)})
        raise PermanentError(f"run {run.run_id}: not deploying to {env.name!r}: {problem}")


def _restore_point(deps: Deps, run: RunRecord, env: Environment, target: Target, name: str, model: str,
                   before: ArmDeployment | None) -> tuple[str, str | None] | None:
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


def _deploy_target(deps: Deps, run: RunRecord, env: Environment, target: Target, name: str, model: str,
                   tags: dict[str, str]) -> Outcome:
    outcome = Outcome(target)
    try:
        before = deps.spokes.get(target, name)
        outcome.restore_to = _restore_point(deps, run, env, target, name, model, before)
        outcome.changed = True   # from here on ARM may have applied the PUT, even if it raised
        deps.spokes.deploy(target, name, model, tags=tags)
        outcome.smoke = deps.spokes.smoke_test(target, name, timeout_s=deps.settings.smoke_timeout_seconds)
        outcome.ok = outcome.smoke.ok
        if not outcome.ok:
            outcome.error = f"smoke test failed: {outcome.smoke.detail}"
    except Exception as exc:  # noqa: BLE001 (one target failing must not stop the others being collected)
        log.warning("run %s: %s on %s failed: %s", run.run_id, name, target.account, exc)
        outcome.error = str(exc)
    return outcome


def _restore(deps: Deps, env: Environment, outcome: Outcome, name: str) -> dict[str, Any]:
    """Put one changed target back: the previous model (with its slot's tags and sku), or delete."""
    target = outcome.target
    try:
        if outcome.restore_to is None:
            deps.spokes.delete(target, name)
            return {"account": target.account, "action": "deleted"}
        model, run_id = outcome.restore_to
        slot = deps.registry.get_deployment(env.name, target.account, name)
        if slot is not None and slot.run_id == run_id and slot.model == model:
            deps.spokes.deploy(target, name, model, tags=slot.tags, sku=slot.sku, capacity=slot.capacity)
        else:
            previous = deps.registry.get_run(run_id) if run_id else None
            tags = deployment_tags(previous, model, env.name) if previous else {"model_version": model}
            deps.spokes.deploy(target, name, model, tags=tags)
        return {"account": target.account, "action": "restored", "model": model, "run_id": run_id}
    except Exception as exc:  # noqa: BLE001 (per-target outcome, reported)
        log.error("rollback of %s on %s failed: %s", name, target.account, exc)
        return {"account": target.account, "action": "failed", "error": str(exc)}


def _fail(deps: Deps, run: RunRecord, env: Environment, detail: dict[str, Any]) -> str:
    message = "; ".join(detail.get("problems") or
                        [f"{t['account']}: {t['error']}" for t in detail.get("targets", []) if t.get("error")])
    advance(deps, run.run_id, states.deployment_failed(env.name), actor=ACTOR,
            from_states={states.deploying(env.name)}, detail={"environment": env.name, **detail},
            error={"stage": "deploy", "environment": env.name, "message": message})
    return states.deployment_failed(env.name)


def _save_slot(deps: Deps, run: RunRecord, env: Environment, outcome: Outcome, name: str, model: str,
               tags: dict[str, str]) -> None:
    t = outcome.target
    previous = outcome.restore_to or (None, None)
    slot: DeploymentRecord | None = None

    def replace(found: DeploymentRecord | None) -> DeploymentRecord:
        nonlocal slot
        slot = found
        record = DeploymentRecord(
            environment=env.name, account=t.account, deployment=name, region=t.region,
            subscription=t.subscription, resource_group=t.resource_group, run_id=run.run_id, model=model,
            previous_model=previous[0], previous_run_id=previous[1], state="active", sku=t.sku,
            capacity=t.capacity, tags=tags)   # last_ping: the keep-alive's own (the smoke test is in the audit)
        record.etag = found.etag if found else None
        return record

    record = claims.conditional_update(
        lambda: deps.registry.get_deployment(env.name, t.account, name), replace, deps.registry.save_deployment,
        gives_up=f"deployment slot {env.name}|{t.account}|{name}: too many concurrent updates")
    assert record is not None   # replace() always returns a record to write
    if slot is not None and slot.state == "active" and slot.run_id != run.run_id:
        deps.registry.audit(slot.run_id, "deployment.superseded", actor=ACTOR,
                            detail={"slot": record.slot, "by_run": run.run_id, "model": model})
    approval = run.approvals.get(env.name) or {}
    deps.registry.begin_serving(SlotEntry(environment=env.name, account=t.account, deployment=name, region=t.region,
                                          run_id=run.run_id, model=model, approved_by=approver_of(approval),
                                          ticket=approval.get("ticket")),
                                previous_left=(f"replaced by run {run.run_id}'s model {model}"))


def approver_of(approval: dict[str, Any]) -> str | None:
    """How an approval's approver is shown: `name <object id>`, or None without an approval."""
    oid = approval.get("approver_oid")
    if not oid:
        return None
    return f"{approval.get('approver_name')} <{oid}>" if approval.get("approver_name") else str(oid)


def _promote(deps: Deps, run: RunRecord, env: Environment, order: list[str], topology: Topology) -> None:
    i = order.index(env.name)
    if i + 1 >= len(order):
        return
    nxt = topology.environment(order[i + 1])
    assert nxt is not None   # run_environments checked every name
    if nxt.requires_approval:
        waits = unverified_problem(run, nxt.name)   # says so now, not only when someone tries to approve
        advance(deps, run.run_id, states.awaiting_approval(nxt.name), actor=ACTOR,
                detail={"environment": nxt.name, "approvers": list(nxt.approvers),
                        **({"waiting_for_owner": waits} if waits else {})})
        return
    send_deploy(deps, run.run_id, nxt.name, model=run.chosen_model or run.fine_tuned_model)
