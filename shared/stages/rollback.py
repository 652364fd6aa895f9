"""The operator commands that take a run's deployments back: rollback (to the last model each slot
served that was healthy and not retired, from the slot history) and retire (remove them everywhere).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.app.settlement import PermanentError
from shared.azure.arm_deployments import DeploymentError, DeploymentTransient, NotManagedByFtops
from shared.azure.spokes import at_once
from shared.run import actors, states
from shared.run.messages import RollbackCommand, RunCommand, run_event
from shared.run.topology import Target, Topology
from shared.stages import report_lineage
from shared.stages.deployment import deployment_tags
from shared.store.claims import conditional_update
from shared.store.events import advance, publish
from shared.store.registry import DeploymentRecord, SlotEntry, now_iso

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoBack:
    """Where one slot goes back to: an earlier entry of its history (or, for a slot older than the history,
    the one model it remembered)."""
    model: str
    run_id: str | None
    approved_by: str | None = None
    ticket: str | None = None


def rollback(command: RollbackCommand, deps: Deps) -> str | None:
    """Return an environment's slots to the last model each served that was healthy and not retired (the
    slot history, shared.store.registry.SlotEntry), whatever run it came from: another run's, or this run's
    own earlier model. A retired or denied model, or one a rollback took out before, is never brought back.

    All or nothing, like a deployment: if one target cannot go back, the ones that did are put forward
    again and the command fails (retried). With a run named, only that run's current model is taken out, so
    a repeat of the command finds nothing left to roll back instead of going back twice. Returns None when it
    rolled back, else what it found instead (nothing was changed)."""
    topology = deps.require_topology()
    env = topology.environment(command.environment)
    if env is None:
        raise PermanentError(f"rollback: environment {command.environment!r} is not in SPOKES_CONFIG")
    actor = actors.requester(command)
    slots = [s for s in deps.registry.list_deployments(state="active") if s.environment == env.name
             and (command.run_id is None or s.run_id == command.run_id)
             and (command.deployment is None or s.deployment == command.deployment)]
    if command.run_id:
        run = deps.registry.get_run(command.run_id)
        current = (run.chosen_model or run.fine_tuned_model) if run else None
        if current and any(s.model == current for s in slots):
            slots = [s for s in slots if s.model == current]   # the run's earlier model (a rollback's) stays
        elif slots and current:
            slots = []
    if not slots:
        if command.run_id:   # already rolled back (a repeat), or never deployed there
            log.info("rollback: run %s has no active deployment of its current model in %s", command.run_id, env.name)
            _settle_state(deps, command.run_id, env.name, actor, {"environment": env.name, "repeat": True})
            report_lineage.amend(deps, command.run_id)   # a repeat finishes an amendment a crash interrupted
            return (f"nothing changed: run {command.run_id}'s current model serves nowhere in {env.name} (rolled "
                    f"back already, retired, or never deployed there); `ftops history {env.name}` shows what it serves")
        raise PermanentError(f"rollback: nothing active in {env.name!r} matches deployment {command.deployment!r}")
    runs = {s.run_id for s in slots}
    if len(runs) > 1 or len({s.deployment for s in slots}) > 1 or len({s.model for s in slots}) > 1:
        raise PermanentError(f"rollback of {env.name!r} is ambiguous (runs {', '.join(sorted(runs))}): "
                             "name the run_id or the deployment")
    run_id = slots[0].run_id
    plans = {s.account: go_back_to(deps, s) for s in slots}
    nowhere = {account: why for account, (to, why) in plans.items() if to is None}
    if nowhere:
        raise PermanentError(
            f"rollback of {env.name!r}: nothing to go back to for {slots[0].deployment!r} in "
            f"{', '.join(sorted(nowhere))} — {next(iter(nowhere.values()))}. Instead: retire run {run_id} "
            f"(removes its deployments; {env.name} then serves nothing under {slots[0].deployment!r}), or "
            "deploy another run under that name (retrain, or drop a new run)")
    targets = {s.account: _target_of(topology, s) for s in slots}
    to_of = {account: to for account, (to, _) in plans.items() if to is not None}

    def back(slot: DeploymentRecord) -> dict[str, Any]:
        to = to_of[slot.account]
        tags = _tags_for(deps, to, env.name)
        try:
            deps.spokes.deploy(targets[slot.account], slot.deployment, to.model, tags=tags,
                               sku=slot.sku, capacity=slot.capacity)
            smoke = deps.spokes.smoke_test(targets[slot.account], slot.deployment,
                                           timeout_s=deps.settings.smoke_timeout_seconds)
            return {"account": slot.account, "ok": smoke.ok, "smoke": smoke.evidence(), "tags": tags,
                    "to_model": to.model, "to_run": to.run_id, "error": None if smoke.ok else smoke.detail}
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
    first = to_of[slots[0].account]
    # the evidence describes the change, so it is taken before the slots are rewritten
    detail = {"environment": env.name, "deployment": slots[0].deployment, "from_model": slots[0].model,
              "to_model": first.model, "to_run": first.run_id, "reason": command.reason, "targets": results}
    # recorded and held before the slots are rewritten: a crash after that leaves nothing to roll back for a
    # redelivery to find, so the audit and the event must already be kept (ids stable across redeliveries)
    detail["rollback_id"] = _rollback_id(deps, run_id, detail, slots)
    _audit_once(deps, run_id, "deployment.rolled_back", actor, detail)
    if first.run_id and first.run_id != run_id:
        _audit_once(deps, first.run_id, "deployment.restored", actor, detail)
    event = run_event("rolled_back", run_id, detail, event_id=detail["rollback_id"])
    deps.registry.hold_event(event.id, deps.settings.events_topic, event.to_json())
    left = f"rolled back by {actor}" + (f": {command.reason}" if command.reason else "")
    for slot, result in zip(slots, results):   # history first: a repeat after a crash in between finds the
        to = to_of[slot.account]                # rolled-back model unhealthy and goes to the same place
        deps.registry.begin_serving(SlotEntry(environment=slot.environment, account=slot.account,
                                              deployment=slot.deployment, region=slot.region,
                                              run_id=to.run_id or slot.run_id, model=to.model, came="rolled back to",
                                              approved_by=to.approved_by, ticket=to.ticket),
                                    previous_left=left, previous_healthy=False)
        deps.registry.update_deployment(slot, model=to.model, run_id=to.run_id or slot.run_id,
                                        previous_model=None, previous_run_id=None, tags=result["tags"],
                                        last_ping=now_iso(), last_ping_ok=True)
    deps.publisher.send(deps.settings.events_topic, event)
    deps.registry.unmark_outbox("event", event.id)
    _settle_state(deps, run_id, env.name, actor, detail)
    for amended in dict.fromkeys(r for r in (run_id, first.run_id) if r):   # each run's report shows it
        report_lineage.amend(deps, amended)
    return None


def go_back_to(deps: Deps, slot: DeploymentRecord) -> tuple[GoBack | None, str]:
    """Where this slot would go back to, and, when nowhere, why not (each earlier model's reason)."""
    history = deps.registry.slot_history(slot.environment, account=slot.account, deployment=slot.deployment)
    if not history:   # a slot deployed before the history was kept: the one model it remembers
        if slot.previous_model:
            return GoBack(slot.previous_model, slot.previous_run_id), ""
        return None, f"it served no model before run {slot.run_id}"
    skipped: list[str] = []
    runs: dict[str, Any] = {}
    for entry in reversed([e for e in history if not e.serving]):
        why = _not_restorable(deps, entry, slot, runs)
        if why is None:
            return GoBack(entry.model, entry.run_id, entry.approved_by, entry.ticket), ""
        skipped.append(f"{entry.model} of run {entry.run_id}: {why}")
    if not skipped:
        return None, f"it served no model before run {slot.run_id}'s {slot.model}"
    return None, "no earlier model was healthy and not retired (" + "; ".join(skipped[:4]) + ")"


def _not_restorable(deps: Deps, entry: SlotEntry, slot: DeploymentRecord, runs: dict[str, Any]) -> str | None:
    if entry.model == slot.model:
        return "the model served now"
    if entry.retired:
        return "retired"
    if not entry.healthy:
        return f"taken out ({entry.left or 'unhealthy'})"
    if entry.run_id not in runs:
        runs[entry.run_id] = deps.registry.get_run(entry.run_id)
    run = runs[entry.run_id]
    if run is None:
        return "its run is no longer in the registry"
    if run.state == states.RETIRED:
        return "its run was retired"
    if run.state == states.APPROVAL_DENIED and entry.model == (run.chosen_model or run.fine_tuned_model):
        return "its promotion was denied"
    return None


def _tags_for(deps: Deps, to: GoBack, environment: str) -> dict[str, str]:
    run = deps.registry.get_run(to.run_id) if to.run_id else None
    if run is None:
        return {"model_version": to.model, "managed_by": "ftops"}
    tags = {**deployment_tags(run, to.model, environment), "model_version": to.model}
    if to.ticket:
        tags["approval_ticket"] = to.ticket[:256]
    return tags


def _settle_state(deps: Deps, run_id: str, environment: str, actor: str, detail: dict[str, Any]) -> None:
    """The run whose model was taken out says so: `rolled_back:<env>` when `env` was as far as it had got
    (deployed there, or waiting for the next environment's approval); a run further on keeps its state."""
    run = deps.registry.get_run(run_id)
    if run is None:
        return
    kind, at = states.split(run.state)
    order = list(run.environments)
    after = order[order.index(environment) + 1] if environment in order[:-1] else None
    if run.state == states.deployed(environment) or (kind == "awaiting_approval" and at == after):
        still = [s for s in deps.registry.list_deployments(run_id=run_id, state="active")
                 if s.environment == environment and s.model == (run.chosen_model or run.fine_tuned_model)]
        if not still:
            deps.registry.transition(run_id, states.rolled_back(environment), actor=actor,
                                     from_states={run.state}, detail=detail)


def _rollback_id(deps: Deps, run_id: str, detail: dict[str, Any], slots: list[DeploymentRecord]) -> str:
    """The same for every delivery of one rollback (named by the slots' serving entries), new for a later one."""
    serving = sorted(e.entry_id for s in slots for e in deps.registry.slot_history(
        s.environment, account=s.account, deployment=s.deployment) if e.serving)
    about = [run_id, detail["environment"], detail["deployment"], detail["from_model"], detail["to_model"], *serving]
    return hashlib.sha256("|".join(map(str, about)).encode()).hexdigest()[:32]


def _audit_once(deps: Deps, run_id: str, action: str, actor: str, detail: dict[str, Any]) -> None:
    if not any(a["action"] == action and a["detail"].get("rollback_id") == detail["rollback_id"]
               for a in deps.registry.audit_trail(run_id)):
        deps.registry.audit(run_id, action, actor=actor, detail=detail)


def retire(command: RunCommand, deps: Deps) -> None:
    """Remove the run's deployments from every spoke (keep-alive stops with them) and mark it retired: its
    models, in every slot's history, are never brought back by a rollback. Slots a newer run has taken over
    are that run's, and are left alone. A run already `retired` that serves somewhere again (a slot restored
    before it was retired) has those deployments removed too."""
    run = deps.registry.require_run(command.run_id)
    actor = actors.requester(command)
    reason = f"retired by {actor}" + (f": {command.reason}" if command.reason else "")
    if run.state != states.RETIRED and not states.can_transition(run.state, states.RETIRED):
        raise PermanentError(f"run {run.run_id} is {run.state!r} and cannot be retired now")
    topology = deps.require_topology()
    # marked `retiring` before ARM is asked: a keep-alive tick working from an older read then never
    # re-creates what is being removed; a slot it is re-creating right now is waited for (retried)
    marked = [_retiring(deps, run.run_id, s) for s in deps.registry.list_deployments(run_id=run.run_id)
              if s.state in ("active", "retiring")]
    slots = [s for s in marked if s is not None]
    if run.state == states.RETIRED and not slots:
        deps.registry.retire_models(run.run_id, reason=reason)
        report_lineage.amend(deps, run.run_id)
        return

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
            deps.registry.close_slot(slot.environment, slot.account, slot.deployment, left=reason, retired=True)
    failed = [r for r in results if not r["ok"]]
    if any(r.get("foreign") for r in failed):
        raise NotManagedByFtops(f"retire {run.run_id}: " + "; ".join(r["error"] for r in failed if r.get("foreign")))
    if failed:   # transient: deletes are idempotent, the retry finishes the rest
        raise DeploymentError(f"retire {run.run_id}: " + "; ".join(f"{r['slot']}: {r['error']}" for r in failed))
    deps.registry.retire_models(run.run_id, reason=reason)
    detail = {"deployments": results, "reason": command.reason}
    if run.state == states.RETIRED:   # retired before; what served again is gone now
        deps.registry.audit(run.run_id, "deployment.retired", actor=actor, detail=detail)
        publish(deps, run.run_id, "retired", detail)
    else:
        advance(deps, run.run_id, states.RETIRED, actor=actor, detail=detail)
    report_lineage.amend(deps, run.run_id)


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
