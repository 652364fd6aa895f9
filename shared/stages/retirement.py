"""Nothing bills unnoticed: deployments of runs that will never reach their last environment are retired
automatically, on the keep-alive timer, before it pings what is meant to stay.

A slot is retired when its run was denied approval, failed later (a deployment that was rolled back, a
retrain that failed), was superseded (a newer run under the same deployment name is deployed somewhere),
or has waited for approval longer than its environment allows, or can never go further (no owner for the
gated environment that follows, no approver who is not its owner: shared.run.rules.cannot_progress) for
longer than that — the clock starts when the run entered its state — each per environment's `retire` policy in
SPOKES_CONFIG (`shared.run.topology.RetirePolicy`, defaults: all on, 7 days). Never retired: any slot of a run
the last environment (prod) serves, so the model prod serves keeps its lower-environment deployments. A
slot whose previous model belongs to that run gets it back (in place) instead of being deleted.

Every retirement is announced before it happens: an audit record and a `ftops.run.auto_retiring` event
per run, then `deployment.auto_retired` with the outcome; a run left with nothing deployed becomes
`retired` (where its state allows).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.run import actors, states
from shared.run.rules import cannot_progress
from shared.run.topology import Topology
from shared.store.events import advance, publish
from shared.store.registry import DeploymentRecord, RunRecord, SlotEntry, now_iso

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
ACTOR = actors.AUTO_RETIRE
FAILED = {states.TRAINING_FAILED, states.EVALUATION_FAILED, "deployment_failed", "rolled_back"}


@dataclass(frozen=True)
class Retirement:
    slot: DeploymentRecord
    reason: str              # approval_denied | failed | superseded | awaiting_approval_expired
    detail: str              # the sentence people read
    restore_run: str | None  # put this run's (the previous) model back instead of deleting


def plan(topology: Topology, runs: dict[str, RunRecord], slots: list[DeploymentRecord],
         now: datetime | None = None) -> list[Retirement]:
    """Which active slots to retire, and why (pure: the tick and `ftops status` can both ask)."""
    now = now or datetime.now(UTC)
    last = topology.environments[-1].name if topology.environments else None
    active = [s for s in slots if s.state == "active"]
    serving = {s.run_id for s in active if s.environment == last}   # what prod serves: never retired
    newest: dict[str, RunRecord] = {}   # deployment name → the newest run deployed under it
    for s in active:
        run = runs.get(s.run_id)
        if run is not None and (s.deployment not in newest or run.created_at > newest[s.deployment].created_at):
            newest[s.deployment] = run
    out = []
    for s in active:
        run, env = runs.get(s.run_id), topology.environment(s.environment)
        if run is None or env is None or run.run_id in serving:
            continue
        why = _why(run, s, env.retire, newest.get(s.deployment), now, cannot_progress(run, topology))
        if why is not None:
            restore = s.previous_run_id if s.previous_run_id in serving and s.previous_model else None
            out.append(Retirement(s, *why, restore_run=restore))
    return out


def waiting_since(run: RunRecord) -> str:
    """When the run entered its state: the policy's clock (a later save of the run, an approval attempt or
    an outbox flush, does not restart it). Runs recorded before `state_since` existed: their last update."""
    return run.state_since or run.updated_at


def _why(run: RunRecord, slot: DeploymentRecord, policy: Any, newest: RunRecord | None,
         now: datetime, stuck: str | None = None) -> tuple[str, str] | None:
    kind, env = states.split(run.state)
    if kind == states.APPROVAL_DENIED and policy.approval_denied:
        return "approval_denied", f"run {run.run_id} was denied promotion"
    if kind in FAILED and policy.failed:
        return "failed", f"run {run.run_id} ended {run.state}"
    if (kind == "awaiting_approval" or stuck) and policy.awaiting_approval_days is not None:
        waited = (now - datetime.fromisoformat(waiting_since(run))).total_seconds() / 86400
        if waited > policy.awaiting_approval_days:
            limit = policy.awaiting_approval_days
            if kind != "awaiting_approval" and stuck:
                return "cannot_progress", (f"run {run.run_id} {stuck} (waited {waited:.1f} days; limit {limit:g} "
                                           f"in {slot.environment})")
            return "awaiting_approval_expired", (f"run {run.run_id} waited {waited:.1f} days for approval of "
                                                 f"{env} (limit {limit:g} in {slot.environment})")
    if policy.superseded and newest is not None and newest.run_id != run.run_id \
            and newest.created_at > run.created_at:
        return "superseded", f"run {newest.run_id} is newer under the deployment name {slot.deployment!r}"
    return None


def retire_unneeded(deps: Deps, topology: Topology, slots: list[DeploymentRecord]) -> tuple[list[DeploymentRecord], list[dict[str, Any]]]:
    """Retire what the plan names; returns the slots still meant to stay (for keep-alive) and the outcomes.
    A failed retirement is retried on the next tick; its slot is not pinged meanwhile (it is meant to go)."""
    runs = {run_id: run for run_id in sorted({s.run_id for s in slots})
            if (run := deps.registry.get_run(run_id)) is not None}
    retirements = plan(topology, runs, slots, deps.clock.now())
    if not retirements:
        return [s for s in slots if s.state == "active"], []
    going = {r.slot.slot for r in retirements}
    by_run: dict[str, list[Retirement]] = {}
    for r in retirements:
        by_run.setdefault(r.slot.run_id, []).append(r)
    outcomes = []
    for run_id, items in by_run.items():
        announce = {"reason": items[0].reason, "detail": items[0].detail,
                    "slots": [{"slot": r.slot.slot, "action": "restore" if r.restore_run else "delete",
                               "restore_run": r.restore_run} for r in items]}
        deps.registry.audit(run_id, "deployment.auto_retiring", actor=ACTOR, detail=announce)
        publish(deps, run_id, "auto_retiring", announce)
        results = [_retire(deps, topology, r) for r in items]
        deps.registry.audit(run_id, "deployment.auto_retired", actor=ACTOR,
                            detail={"reason": items[0].reason, "results": results})
        outcomes += [{"run_id": run_id, "reason": items[0].reason, **res} for res in results]
        _close_run(deps, runs[run_id], items[0])
    return [s for s in slots if s.state == "active" and s.slot not in going], outcomes


def _retire(deps: Deps, topology: Topology, item: Retirement) -> dict[str, Any]:
    slot = item.slot
    target = topology.target(slot.account)
    if target is None:
        return {"slot": slot.slot, "ok": False, "error": f"account {slot.account!r} is not in SPOKES_CONFIG"}

    def still_ours(fresh: DeploymentRecord) -> bool:
        return fresh.state == "active" and fresh.run_id == slot.run_id and fresh.model == slot.model
    try:
        fresh = deps.registry.get_deployment(slot.environment, slot.account, slot.deployment)
        if fresh is None or not still_ours(fresh):
            return {"slot": slot.slot, "ok": True, "action": "none: a newer deployment took the slot"}
        live = deps.spokes.get(target, slot.deployment)
        if live is not None and live.model != slot.model:   # a deployment is replacing it right now
            return {"slot": slot.slot, "ok": True, "action": "none: the spoke already serves another model"}
        if item.restore_run:
            restore = deps.registry.get_run(item.restore_run)
            tags = {"run_id": item.restore_run, "model_version": slot.previous_model or "", "managed_by": "ftops"}
            if restore is not None and restore.dataset_hash:
                tags["dataset_hash"] = restore.dataset_hash
            deps.spokes.deploy(target, slot.deployment, slot.previous_model or "", tags=tags, sku=slot.sku,
                               capacity=slot.capacity)
            deps.registry.update_deployment(fresh, still_applies=still_ours, model=slot.previous_model,
                                            run_id=item.restore_run, previous_model=None, previous_run_id=None,
                                            tags=tags, last_ping=now_iso(), last_ping_ok=True)
            deps.registry.begin_serving(SlotEntry(environment=slot.environment, account=slot.account,
                                                  deployment=slot.deployment, region=slot.region,
                                                  run_id=item.restore_run, model=slot.previous_model or "",
                                                  came="restored"),
                                        previous_left=f"auto-retired: {item.detail}")
            return {"slot": slot.slot, "ok": True, "action": f"restored the model of run {item.restore_run}"}
        existed = deps.spokes.delete(target, slot.deployment)
        deps.registry.update_deployment(fresh, still_applies=still_ours, state="retired")
        deps.registry.close_slot(slot.environment, slot.account, slot.deployment, left=f"auto-retired: {item.detail}",
                                 retired=True)
        return {"slot": slot.slot, "ok": True, "action": "deleted" if existed else "already gone"}
    except Exception as exc:  # noqa: BLE001 (per-slot outcome, retried on the next tick)
        log.warning("auto-retire of %s failed: %s", slot.slot, exc)
        return {"slot": slot.slot, "ok": False, "error": str(exc)[:500]}


def _close_run(deps: Deps, run: RunRecord, item: Retirement) -> None:
    left = deps.registry.list_deployments(run_id=run.run_id, state="active")
    if left or run.state == states.RETIRED or not states.can_transition(run.state, states.RETIRED):
        return
    advance(deps, run.run_id, states.RETIRED, actor=ACTOR, from_states={run.state},
            detail={"reason": item.reason, "detail": item.detail, "automatic": True})
    deps.registry.retire_models(run.run_id, reason=f"auto-retired: {item.detail}")
