"""The operator commands that take a run's deployments back: rollback (to the model each slot served
before) and retire (remove them everywhere).
"""
from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.app.settlement import PermanentError
from shared.azure.arm_deployments import DeploymentError, DeploymentTransient, NotManagedByFtops
from shared.azure.spokes import at_once
from shared.run import actors, states
from shared.run.messages import RollbackCommand, RunCommand, run_event
from shared.run.topology import Target, Topology
from shared.stages.deployment import deployment_tags
from shared.store.claims import conditional_update
from shared.store.events import advance, publish
from shared.store.registry import DeploymentRecord, now_iso

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


def rollback(command: RollbackCommand, deps: Deps) -> None:
    """Return an environment's slots to the model each served before (the previous approved model).

    All or nothing, like a deployment: if one target cannot go back, the ones that did are put forward
    again and the command fails (retried). Each slot keeps one step of history, so a duplicate command
    finds nothing left to roll back instead of going back twice."""
    topology = deps.require_topology()
    env = topology.environment(command.environment)
    if env is None:
        raise PermanentError(f"rollback: environment {command.environment!r} is not in SPOKES_CONFIG")
    slots = [s for s in deps.registry.list_deployments(state="active") if s.environment == env.name
             and (command.run_id is None or s.run_id == command.run_id)
             and (command.deployment is None or s.deployment == command.deployment)]
    if not slots:
        if command.run_id:   # already rolled back (a duplicate), or never deployed there
            log.info("rollback: run %s has no active deployment in %s", command.run_id, env.name)
            return
        raise PermanentError(f"rollback: nothing active in {env.name!r} matches deployment {command.deployment!r}")
    runs = {s.run_id for s in slots}
    if len(runs) > 1 or len({s.deployment for s in slots}) > 1:
        raise PermanentError(f"rollback of {env.name!r} is ambiguous (runs {', '.join(sorted(runs))}): "
                             "name the run_id or the deployment")
    missing = [s.account for s in slots if not s.previous_model]
    if missing:
        raise PermanentError(f"rollback of {env.name!r}: {', '.join(missing)} had no model before run "
                             f"{slots[0].run_id}; retire the run instead")
    actor = actors.requester(command)
    run_id = slots[0].run_id
    targets = {s.account: _target_of(topology, s) for s in slots}

    def back(slot: DeploymentRecord) -> dict[str, Any]:
        previous = deps.registry.get_run(slot.previous_run_id) if slot.previous_run_id else None
        tags = deployment_tags(previous, slot.previous_model or "", env.name) if previous else \
            {"model_version": slot.previous_model or ""}
        try:
            deps.spokes.deploy(targets[slot.account], slot.deployment, slot.previous_model or "", tags=tags,
                               sku=slot.sku, capacity=slot.capacity)
            smoke = deps.spokes.smoke_test(targets[slot.account], slot.deployment,
                                           timeout_s=deps.settings.smoke_timeout_seconds)
            return {"account": slot.account, "ok": smoke.ok, "smoke": smoke.evidence(), "tags": tags,
                    "error": None if smoke.ok else smoke.detail}
        except NotManagedByFtops as exc:   # someone else's deployment now: never replaced
            return {"account": slot.account, "ok": False, "error": str(exc), "tags": tags, "foreign": True}
        except Exception as exc:  # noqa: BLE001 (per-target outcome, reported)
            return {"account": slot.account, "ok": False, "error": str(exc), "tags": tags}

    results = at_once(back, slots)
    if not all(r["ok"] for r in results):
        forward = at_once(lambda s: _redeploy(deps, targets[s.account], s), [
            s for s, r in zip(slots, results) if r["ok"]])
        detail: dict[str, Any] = {"environment": env.name, "results": results, "reverted": forward,
                                  "reason": command.reason}
        deps.registry.audit(run_id, "deployment.rollback_failed", actor=actor, detail=detail)
        publish(deps, run_id, "rollback_failed", detail)
        error = NotManagedByFtops if any(r.get("foreign") for r in results) else DeploymentError
        raise error(f"rollback of run {run_id} in {env.name!r} failed: "
                                + "; ".join(f"{r['account']}: {r['error']}" for r in results if not r["ok"]))
    # the evidence describes the change, so it is taken before the slots are rewritten
    detail = {"environment": env.name, "deployment": slots[0].deployment, "from_model": slots[0].model,
              "to_model": slots[0].previous_model, "to_run": slots[0].previous_run_id, "reason": command.reason,
              "targets": results}
    # recorded and held before the slots are rewritten: a crash after that leaves nothing to roll back for a
    # redelivery to find, so the audit and the event must already be kept (ids stable across redeliveries)
    detail["rollback_id"] = _rollback_id(deps, run_id, detail)
    _audit_once(deps, run_id, "deployment.rolled_back", actor, detail)
    if detail["to_run"]:
        _audit_once(deps, detail["to_run"], "deployment.restored", actor, detail)
    event = run_event("rolled_back", run_id, detail, event_id=detail["rollback_id"])
    deps.registry.hold_event(event.id, deps.settings.events_topic, event.to_json())
    for slot, result in zip(slots, results):
        deps.registry.update_deployment(slot, model=slot.previous_model, run_id=slot.previous_run_id,
                                        previous_model=None, previous_run_id=None, tags=result["tags"],
                                        last_ping=now_iso(), last_ping_ok=True)
    deps.publisher.send(deps.settings.events_topic, event)
    deps.registry.unmark_outbox("event", event.id)


def _rollback_id(deps: Deps, run_id: str, detail: dict[str, Any]) -> str:
    """The same for every delivery of one rollback (the run is not rewritten by it), new for a later one."""
    run = deps.registry.get_run(run_id)
    about = [run_id, detail["environment"], detail["deployment"], detail["from_model"], detail["to_model"],
             run.updated_at if run else ""]
    return hashlib.sha256("|".join(map(str, about)).encode()).hexdigest()[:32]


def _audit_once(deps: Deps, run_id: str, action: str, actor: str, detail: dict[str, Any]) -> None:
    if not any(a["action"] == action and a["detail"].get("rollback_id") == detail["rollback_id"]
               for a in deps.registry.audit_trail(run_id)):
        deps.registry.audit(run_id, action, actor=actor, detail=detail)


def retire(command: RunCommand, deps: Deps) -> None:
    """Remove the run's deployments from every spoke (keep-alive stops with them) and mark it retired.
    Slots a newer run has taken over are that run's, and are left alone."""
    run = deps.registry.require_run(command.run_id)
    if run.state == states.RETIRED:
        return
    if not states.can_transition(run.state, states.RETIRED):
        raise PermanentError(f"run {run.run_id} is {run.state!r} and cannot be retired now")
    topology = deps.require_topology()
    # marked `retiring` before ARM is asked: a keep-alive tick working from an older read then never
    # re-creates what is being removed; a slot it is re-creating right now is waited for (retried)
    marked = [_retiring(deps, run.run_id, s) for s in deps.registry.list_deployments(run_id=run.run_id)
              if s.state in ("active", "retiring")]
    slots = [s for s in marked if s is not None]

    def remove(slot: DeploymentRecord) -> dict[str, Any]:
        try:
            existed = deps.spokes.delete(_target_of(topology, slot), slot.deployment)
            return {"slot": slot.slot, "ok": True, "existed": existed}
        except NotManagedByFtops as exc:   # someone else's deployment now: never deleted, never retried
            return {"slot": slot.slot, "ok": False, "error": str(exc), "foreign": True}
        except Exception as exc:  # noqa: BLE001 (per-target outcome, reported)
            return {"slot": slot.slot, "ok": False, "error": str(exc)}

    results = at_once(remove, slots)
    for slot, result in zip(slots, results):
        if result["ok"]:
            deps.registry.update_deployment(slot, state="retired")
    failed = [r for r in results if not r["ok"]]
    if any(r.get("foreign") for r in failed):
        raise NotManagedByFtops(f"retire {run.run_id}: " + "; ".join(r["error"] for r in failed if r.get("foreign")))
    if failed:   # transient: deletes are idempotent, the retry finishes the rest
        raise DeploymentError(f"retire {run.run_id}: " + "; ".join(f"{r['slot']}: {r['error']}" for r in failed))
    advance(deps, run.run_id, states.RETIRED, actor=actors.requester(command),
            detail={"deployments": results, "reason": command.reason})


HEAL_WAIT = timedelta(minutes=30)   # a keep-alive heal claim older than this belongs to a tick that died


def _retiring(deps: Deps, run_id: str, slot: DeploymentRecord) -> DeploymentRecord | None:
    """The slot marked `retiring` (conditionally); None if another run took it over meanwhile."""
    def change(current: DeploymentRecord | None) -> DeploymentRecord | None:
        if current is None or current.run_id != run_id or current.state not in ("active", "retiring"):
            raise _NotOurs
        if current.healing_since and datetime.fromisoformat(current.healing_since) > datetime.now(UTC) - HEAL_WAIT:
            raise DeploymentTransient(f"retire {run_id}: keep-alive is re-creating {current.slot} right now; retried")
        if current.state == "retiring":
            return None
        current.state = "retiring"
        return current

    try:
        return conditional_update(lambda: deps.registry.get_deployment(slot.environment, slot.account, slot.deployment),
                                  change, deps.registry.save_deployment, first=slot,
                                  gives_up=f"retire {run_id}: {slot.slot} keeps changing; retried")
    except _NotOurs:
        return None


class _NotOurs(Exception):
    """The slot is gone or another run's now."""


def _target_of(topology: Topology, slot: DeploymentRecord) -> Target:
    target = topology.target(slot.account)
    if target is None:
        raise PermanentError(f"deployment {slot.slot}: account {slot.account!r} is no longer in SPOKES_CONFIG")
    return target


def _redeploy(deps: Deps, target: Target, slot: DeploymentRecord) -> dict[str, Any]:
    try:
        deps.spokes.deploy(target, slot.deployment, slot.model, tags=slot.tags, sku=slot.sku,
                           capacity=slot.capacity)
        return {"account": slot.account, "action": "redeployed", "model": slot.model}
    except Exception as exc:  # noqa: BLE001 (per-target outcome, reported)
        return {"account": slot.account, "action": "failed", "error": str(exc)}
