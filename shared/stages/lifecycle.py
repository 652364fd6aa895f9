"""Model retirements: Azure closes new fine-tuning of a base model, then retires every deployment of a model
fine-tuned from it (Learn "model retirements"). The dates come from the ARM Models API of the region
(`deprecation.fineTune`, `deprecation.inference`: shared.azure.arm_deployments.model_lifecycles).

- Training: a run whose base model can no longer be fine-tuned fails at once with the date, not after upload.
- Deployments: each active slot's retirement day (`retirement_of`), shown by `ftops status` and the console; the
  keep-alive tick warns, and publishes `ftops.run.model_retiring` once per slot and date, when it is less than
  RETIREMENT_WARNING_DAYS away. A Models API that cannot be read never blocks anything: it is logged and skipped.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import date
from typing import TYPE_CHECKING

from shared.azure.arm_deployments import ArmAccount, DeploymentError
from shared.evaluation.hubdeploy import hub_account
from shared.run.models import ModelLifecycle, lifecycle_of
from shared.store.events import publish

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.run.topology import Topology
    from shared.store.registry import DeploymentRecord

log = logging.getLogger(__name__)


def training_closed_problem(deps: Deps, base_model: str) -> str | None:
    """Why a job on `base_model` cannot start (fine-tuning retired on the hub's region), or None."""
    hub = hub_account(deps.settings.hub)
    try:
        lifecycle = lifecycle_of(base_model, deps.arm_deployments.model_lifecycles(
            hub, deps.arm_deployments.location(hub)))
    except DeploymentError as exc:
        log.warning("model retirements: could not read the hub's Models API (%s); not checked", exc)
        return None
    today = deps.clock.now().date()
    if lifecycle is not None and lifecycle.training_closed(today):
        return (f"{base_model}: Azure stopped new fine-tuning of {lifecycle.name} {lifecycle.version} on "
                f"{lifecycle.fine_tune.isoformat() if lifecycle.fine_tune else '?'} (Models API deprecation.fineTune); "
                "choose a newer base model in run.json")
    return None


def retirement_of(deps: Deps, topology: Topology, slots: Iterable[DeploymentRecord]
                  ) -> dict[str, ModelLifecycle | None]:
    """slot → the lifecycle of the model it serves, one Models API call per subscription and region."""
    per_region: dict[tuple[str, str], dict[str, ModelLifecycle] | None] = {}
    found: dict[str, ModelLifecycle | None] = {}
    for slot in slots:
        key = (slot.subscription, slot.region)
        if key not in per_region:
            target = topology.target(slot.account)
            at = ArmAccount(slot.subscription, slot.resource_group, slot.account, f"{slot.account} ({slot.region})",
                            tenant=target.tenant if target else None, client_id=target.client_id if target else None)
            try:
                per_region[key] = deps.arm_deployments.model_lifecycles(at, slot.region)
            except DeploymentError as exc:
                log.warning("model retirements: %s: %s", slot.region, exc)
                per_region[key] = None
        table = per_region[key]
        found[slot.slot] = lifecycle_of(slot.model, table) if table is not None else None
    return found


def retirement_warnings(deps: Deps, topology: Topology, slots: list[DeploymentRecord]) -> list[str]:
    """One line per active slot whose model retires within RETIREMENT_WARNING_DAYS, and its event (once per slot
    and retirement date)."""
    today, window = deps.clock.now().date(), deps.settings.retirement_warning_days
    lines = []
    lifecycles = retirement_of(deps, topology, slots)
    for slot in slots:
        lifecycle = lifecycles.get(slot.slot)
        retires_on = lifecycle.inference if lifecycle else None
        if retires_on is None:
            continue
        day = retires_on.isoformat()
        if slot.retires_on != day:   # what status and the console show
            deps.registry.update_deployment(slot, retires_on=day)
        days = (retires_on - today).days
        if days > window:
            continue
        lines.append(warning_line(slot.slot, slot.model, retires_on, today))
        if slot.retirement_warned != day:   # once per slot and date
            publish(deps, slot.run_id, "model_retiring", {
                "slot": slot.slot, "model": slot.model, "retires_on": day, "days_left": days,
                "base_model": f"{lifecycle.name}-{lifecycle.version}" if lifecycle else None})
            deps.registry.update_deployment(slot, retirement_warned=day)
    return lines


def warning_line(slot: str, model: str, retires_on: date, today: date) -> str:
    days = (retires_on - today).days
    when = f"in {days} days" if days > 0 else "today" if days == 0 else f"{-days} days ago"
    return (f"{slot}: {model} retires on {retires_on.isoformat()} ({when}; Models API deprecation.inference): "
            "train on a newer base model and deploy it before then")
