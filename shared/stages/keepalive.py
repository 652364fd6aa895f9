"""Keep-alive: Azure deletes a fine-tuned deployment after 15 days without a chat-completions or responses
call, so a timer sends every active deployment that is meant to stay one minimal real completion (what
is not — denied, failed, superseded, waiting too long — is retired first: shared.stages.retirement).

Calls run with bounded concurrency (KEEPALIVE_CONCURRENCY), interleaved across spokes so no single
account takes the whole burst. 429/5xx are retried by the openai client (backoff, Retry-After); a 404 is
checked against ARM: a deployment that is really gone is recreated from the registry and reported —
except a Developer one: Azure deletes those 24 hours after creation whatever their use (fine-tuning-deploy
"Developer Tier"), which the environment accepted (`accepts_developer_expiry`), so that is recorded as an
expiry (slot `expired`, event `deployment_expired`), neither a failure nor something to recreate.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.run import actors, states
from shared.run.messages import run_event
from shared.run.models import DEVELOPER
from shared.run.ncrontab import CronError, Schedule
from shared.run.topology import Topology
from shared.stages.lifecycle import retirement_warnings
from shared.stages.retirement import retire_unneeded
from shared.store.claims import ConcurrencyError
from shared.store.events import publish
from shared.store.registry import DeploymentRecord, now_iso

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

ACTOR = actors.KEEPALIVE
ALERT_AFTER = 3          # consecutive failed ticks before an event asks a person to look
PING_TIMEOUT_S = 60.0
INACTIVITY_LIMIT = timedelta(days=15)   # Learn: a fine-tuned deployment unused this long is deleted
SAFETY_MARGIN = timedelta(days=3)       # warn when the schedule or a stale ping leaves less than this
CLIENT_RETRIES = 3       # transient failures are retried by the openai client, honoring Retry-After


@dataclass
class KeepaliveSummary:
    total: int = 0
    ok: int = 0
    failed: int = 0
    healed: int = 0
    expired: int = 0
    skipped: int = 0
    retired: int = 0         # retired automatically before pinging (shared.stages.retirement)
    alerts: int = 0
    seconds: float = 0.0
    problems: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # the schedule or a stale ping leaves too little margin


def keepalive_tick(deps: Deps, *, concurrency: int | None = None) -> KeepaliveSummary:
    started = time.monotonic()
    topology = deps.require_topology()
    # first what bills for runs that will never reach the end: retired, announced, and not pinged
    kept, retired = retire_unneeded(deps, topology, deps.registry.list_deployments(state="active"))
    slots = interleave(kept)
    summary = KeepaliveSummary(total=len(slots), retired=sum(r["ok"] for r in retired))
    summary.problems += [{"slot": r["slot"], "run_id": r["run_id"], "error": f"auto-retire: {r['error']}"}
                         for r in retired if not r["ok"]]
    summary.warnings = schedule_warnings(deps.settings.keepalive_schedule) + stale_ping_warnings(deps, slots)
    workers = max(1, concurrency or deps.settings.keepalive_concurrency)
    if slots:
        with ThreadPoolExecutor(max_workers=min(workers, len(slots)), thread_name_prefix="keepalive") as pool:
            results = list(pool.map(lambda s: _keep(deps, topology, s), slots))
        for slot, (status, problem) in zip(slots, results):
            setattr(summary, status, getattr(summary, status) + 1)
            if problem:
                summary.problems.append({"slot": slot.slot, "run_id": slot.run_id, **problem})
                summary.alerts += bool(problem.get("alert"))
    summary.warnings += retirement_warnings(deps, topology, slots)   # a daily look at the Models API
    summary.seconds = round(time.monotonic() - started, 3)
    log.info("keep-alive: %d deployments, %d ok, %d failed, %d healed, %d expired, %d skipped (%d retired "
             "first) in %.1fs", summary.total, summary.ok, summary.failed, summary.healed, summary.expired,
             summary.skipped, summary.retired,
             summary.seconds)
    return summary


def longest_gap(expression: str, *, occurrences: int = 2000) -> timedelta:
    """The longest wait between two firings of an NCRONTAB schedule, over a year's worth of them at most."""
    schedule = Schedule.parse(expression)
    t = schedule.next_after(datetime(2026, 1, 1, tzinfo=UTC))
    end, gap = t + timedelta(days=400), timedelta(0)
    for _ in range(occurrences):
        following = schedule.next_after(t)
        gap, t = max(gap, following - t), following
        if t > end:
            break
    return gap


def schedule_warnings(expression: str | None) -> list[str]:
    """A schedule that can leave a deployment unpinged for longer than 15 days minus the margin."""
    if not expression:
        return []
    try:
        gap = longest_gap(expression)
    except CronError as exc:
        return [f"KEEPALIVE_SCHEDULE cannot be checked against the 15-day limit: {exc}"]
    if gap <= INACTIVITY_LIMIT - SAFETY_MARGIN:
        return []
    warning = (f"KEEPALIVE_SCHEDULE {expression!r} can wait {gap.total_seconds() / 86400:.1f} days between ticks: "
               f"less than {SAFETY_MARGIN.days} days of margin before Azure deletes an unused fine-tuned "
               f"deployment ({INACTIVITY_LIMIT.days} days); run it at least every "
               f"{(INACTIVITY_LIMIT - SAFETY_MARGIN).days} days")
    log.warning("keep-alive: %s", warning)
    return [warning]


def stale_ping_warnings(deps: Deps, slots: list[DeploymentRecord]) -> list[str]:
    """Deployments whose last ping (or creation) is older than the margin: the timer may have been down."""
    now = deps.clock.now()
    warnings = []
    for slot in slots:
        since = datetime.fromisoformat(slot.last_ping or slot.updated_at)
        if now - since <= SAFETY_MARGIN:
            continue
        left = INACTIVITY_LIMIT - (now - since)
        warning = (f"{slot.slot}: last pinged {(now - since).total_seconds() / 86400:.1f} days ago (more than the "
                   f"{SAFETY_MARGIN.days}-day margin; was the keep-alive timer down?): about "
                   f"{max(0.0, left.total_seconds() / 86400):.1f} days before Azure may delete it")
        log.warning("keep-alive: %s", warning)
        publish(deps, slot.run_id, "keepalive_at_risk", {"slot": slot.slot, "last_ping": slot.last_ping,
                                                          "days_left": round(max(0.0, left.total_seconds() / 86400), 1)})
        warnings.append(warning)
    return warnings


def interleave(slots: list[DeploymentRecord]) -> list[DeploymentRecord]:
    """Round-robin over accounts: the first calls in flight hit different spokes (per-account rate limits)."""
    by_account: dict[str, list[DeploymentRecord]] = defaultdict(list)
    for slot in sorted(slots, key=lambda s: (s.account, s.deployment)):
        by_account[slot.account].append(slot)
    queues = list(by_account.values())
    out: list[DeploymentRecord] = []
    for i in range(max((len(q) for q in queues), default=0)):
        out.extend(q[i] for q in queues if i < len(q))
    return out


def _keep(deps: Deps, topology: Topology, slot: DeploymentRecord) -> tuple[str, dict[str, Any] | None]:
    import openai
    target = topology.target(slot.account)
    if target is None:
        log.warning("keep-alive: %s is no longer in SPOKES_CONFIG; skipped", slot.slot)
        return "skipped", {"error": f"account {slot.account!r} is not in SPOKES_CONFIG"}
    try:
        deps.spokes.ping(target, slot.deployment, max_retries=CLIENT_RETRIES, timeout=PING_TIMEOUT_S)
    except openai.NotFoundError as exc:
        try:
            if deps.spokes.get(target, slot.deployment) is None:
                if slot.sku.lower() == DEVELOPER.lower():
                    return _expired(deps, slot)
                return _heal(deps, target, slot)
            if slot.healing_since:   # re-created by a tick that died before reporting it: a new deployment,
                return _healed(deps, target, slot)   # not serving yet (404 after ARM's Succeeded): wait patiently
        except Exception as arm_exc:  # noqa: BLE001 (ARM unreachable: report the ping failure, retry next tick)
            log.warning("keep-alive: ARM check of %s failed: %s", slot.slot, arm_exc)
        return _failed(deps, slot, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001 (after the client's own retries: counted, alert when repeated)
        return _failed(deps, slot, f"{type(exc).__name__}: {exc}")
    if slot.healing_since:   # a tick re-created it and died before reporting it: finish that
        return _healed(deps, target, slot)
    _record(deps, slot, last_ping=now_iso(), last_ping_ok=True, ping_failures=0)
    return "ok", None


def _heal(deps: Deps, target: Any, slot: DeploymentRecord) -> tuple[str, dict[str, Any] | None]:
    """The deployment vanished (inactivity, or someone deleted it): recreate it from the registry — if the
    registry still wants it. The tick works from a snapshot: `retire` or a rollback may have removed it on
    purpose since, and re-creating it then would bring back what a person just took away. So the slot is
    claimed first (`healing_since`, a conditional write on the fresh read): a retire that marked it
    `retiring` before makes the claim fail, and a retire that comes after waits for the claim (shared.stages.rollback).
    The claim also records the heal before ARM is called: a tick that dies after re-creating it leaves the
    claim, and the next tick finishes the report (`_healed`)."""
    fresh = deps.registry.get_deployment(slot.environment, slot.account, slot.deployment)
    run = deps.registry.get_run(slot.run_id)

    def still_wanted(current: DeploymentRecord) -> bool:
        return current.state == "active" and current.model == slot.model and current.run_id == slot.run_id

    if fresh is None or not still_wanted(fresh) or (run is not None and run.state == states.RETIRED):
        log.info("keep-alive: %s is gone and no longer wanted (retired or replaced meanwhile); not healed", slot.slot)
        return "skipped", None
    try:
        claimed = deps.registry.update_deployment(fresh, attempts=3, still_applies=still_wanted,
                                                  healing_since=fresh.healing_since or now_iso())
    except ConcurrencyError:
        claimed = None
    if claimed is None:   # changed since it was read (a retire marked it): look again next tick
        log.info("keep-alive: %s changed while being claimed for healing; not healed this tick", slot.slot)
        return "skipped", None
    try:
        deps.spokes.deploy(target, slot.deployment, slot.model, tags=slot.tags, sku=slot.sku,
                           capacity=slot.capacity)
    except Exception as exc:  # noqa: BLE001 (counted and reported per deployment)
        return _failed(deps, claimed, f"deployment is gone and recreating it failed: {exc}", healing_since=None)
    return _healed(deps, target, claimed)


def _healed(deps: Deps, target: Any, slot: DeploymentRecord) -> tuple[str, dict[str, Any] | None]:
    """Report a re-created deployment (audit once, event with an id fixed by the claim) and release the
    claim; a repeat after a crash adds nothing."""
    # a healed deployment is a new one: as patient as a first deployment
    smoke = deps.spokes.smoke_test(target, slot.deployment, timeout_s=deps.settings.smoke_timeout_seconds)
    heal_id = hashlib.sha256(f"healed|{slot.slot}|{slot.healing_since}".encode()).hexdigest()[:32]
    detail: dict[str, Any] = {"slot": slot.slot, "account": slot.account, "region": slot.region,
                              "deployment": slot.deployment, "model": slot.model, "heal_id": heal_id,
                              "smoke": smoke.evidence()}
    if not any(a["action"] == "deployment.healed" and a["detail"].get("heal_id") == heal_id
               for a in deps.registry.audit_trail(slot.run_id)):
        deps.registry.audit(slot.run_id, "deployment.healed", actor=ACTOR, detail=detail)
    deps.publisher.send(deps.settings.events_topic, run_event("deployment_healed", slot.run_id, detail,
                                                              event_id=heal_id))
    now = now_iso()
    _record(deps, slot, healed_at=now, healing_since=None, last_ping=now, last_ping_ok=smoke.ok,
            ping_failures=0 if smoke.ok else slot.ping_failures + 1)
    return "healed", {"healed": True, "smoke_ok": smoke.ok}


def _expired(deps: Deps, slot: DeploymentRecord) -> tuple[str, dict[str, Any] | None]:
    """A Developer deployment reached the end of its 24-hour life: expected, so reported, not retried."""
    detail = {"slot": slot.slot, "account": slot.account, "region": slot.region, "deployment": slot.deployment,
              "model": slot.model, "sku": slot.sku,
              "reason": "Developer deployments are deleted by Azure 24 hours after creation"}
    try:
        deps.registry.update_deployment(slot, attempts=3, state="expired", last_ping=now_iso(),
                                        still_applies=lambda fresh: fresh.model == slot.model
                                        and fresh.state == "active")
    except ConcurrencyError:
        log.warning("keep-alive: could not record the expiry of %s (concurrent updates)", slot.slot)
    deps.registry.close_slot(slot.environment, slot.account, slot.deployment, left=detail["reason"])
    deps.registry.audit(slot.run_id, "deployment.expired", actor=ACTOR, detail=detail)
    publish(deps, slot.run_id, "deployment_expired", detail)
    log.info("keep-alive: Developer deployment %s expired after its 24 hours", slot.slot)
    return "expired", {"expired": True}


def _failed(deps: Deps, slot: DeploymentRecord, error: str, **also: Any) -> tuple[str, dict[str, Any] | None]:
    failures = slot.ping_failures + 1
    _record(deps, slot, last_ping=now_iso(), last_ping_ok=False, ping_failures=failures, **also)
    alert = failures >= ALERT_AFTER
    log.warning("keep-alive of %s failed (%d in a row): %s", slot.slot, failures, error)
    if alert:
        detail = {"slot": slot.slot, "account": slot.account, "deployment": slot.deployment,
                  "failures": failures, "error": error[:500]}
        deps.registry.audit(slot.run_id, "keepalive.failing", actor=ACTOR, detail=detail)
        publish(deps, slot.run_id, "keepalive_failed", detail)
    return "failed", {"error": error[:500], "failures": failures, "alert": alert}


def _record(deps: Deps, slot: DeploymentRecord, **fields: Any) -> None:
    """Write the ping result conditionally; if a deploy or rollback changed the slot meanwhile, apply the
    result only if the slot still holds the same model (else this ping is about something gone)."""
    model = slot.model
    try:
        deps.registry.update_deployment(slot, attempts=3, **fields,
                                        still_applies=lambda fresh: fresh.model == model and fresh.state == "active")
    except ConcurrencyError:
        log.warning("keep-alive: could not record the ping of %s (concurrent updates)", slot.slot)
