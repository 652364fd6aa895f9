"""Where a run may go, decided at intake from its settings and the configured environments.

- `environments` in run.json must follow the configured order without gaps: a prefix of it (`["dev",
  "prod"]` would skip test, `["prod"]` would have nothing to promote from).
- A run that reaches an environment needing approval must name its `owner` as an Entra object id: the
  approver is compared with it (four eyes), by object id, never by a name that can look alike.
- Without run.json environments, a run with an owner goes everywhere; one without stops before the first
  environment that needs approval (a bare dataset drop has no way to name its owner).
- The owner run.json names is a claim: a gated environment opens only once a verified person stands behind
  the run's current model (`unverified_problem`): its starter or retrainer through the operator API, or the
  owner confirming it (`owner_confirmed`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from shared.run import states
from shared.run.actors import is_object_id
from shared.run.settings import RunSettings
from shared.run.topology import Topology

if TYPE_CHECKING:
    from shared.store.registry import RunRecord


def effective_environments(settings: RunSettings, topology: Topology) -> list[str]:
    if settings.environments:
        return list(settings.environments)
    if settings.owner:
        return topology.names
    ungated: list[str] = []
    for env in topology.environments:
        if env.requires_approval:
            break
        ungated.append(env.name)
    return ungated or topology.names[:1]


def environment_problems(settings: RunSettings, topology: Topology) -> list[str]:
    """What is wrong with the run's environments and owner, each in words a person can act on."""
    configured = topology.names
    asked = settings.environments
    if asked is not None:
        unknown = [e for e in asked if e not in configured]
        if unknown:
            return [(f"environments: {', '.join(unknown)} not configured in SPOKES_CONFIG "
                    f"(configured, in order: {', '.join(configured)})")]
        if not asked or asked != configured[:len(asked)]:
            prefixes = " or ".join(str(configured[:i]) for i in range(1, len(configured) + 1))
            return [f"environments {asked} must follow the configured order without gaps: one of {prefixes}"]
    gated = [e for e in effective_environments(settings, topology)
             if (env := topology.environment(e)) is not None and env.requires_approval]
    if gated and not settings.owner:
        return [(f"owner is missing: environment {gated[0]!r} requires approval, so run.json must name the "
                "run's owner (the Entra object id of the person responsible), who cannot approve it")]
    if gated and not is_object_id(settings.owner):
        return [(f"owner {settings.owner!r} is not an Entra object id (a GUID): approvals are checked against the "
                "owner by object id, never by a name or address")]
    return []


def cannot_progress(run: RunRecord, topology: Topology) -> str | None:
    """Why a run that stopped will never go further although the configured pipeline goes on, in words a
    person can act on; None when it can (or reached the last configured environment). Such a run follows
    the auto-retire policy like a run waiting for approval (shared.stages.retirement)."""
    kind, at = states.split(run.state)
    owner = run.owner or (run.settings or {}).get("owner")
    if kind == "deployed" and at is not None and at == run.last_environment and at in topology.names:
        following = topology.names[topology.names.index(at) + 1:]
        gated = next((e for e in following if (env := topology.environment(e)) is not None and env.requires_approval),
                     None)
        if following and not owner and gated is not None and not (run.settings or {}).get("environments"):
            return (f"stops at {at}: {gated} needs an approval, and a run without an owner (a bare .jsonl drop) can "
                    f"never have one; drop a run folder whose run.json names the owner (an Entra object id) to go "
                    f"on to {gated}")
    if kind == "awaiting_approval" and at is not None:
        env = topology.environment(at)
        if not owner:
            return f"can never be approved into {at}: the run names no owner (four eyes); drop it again with one"
        if env is not None and env.approvers and all(a.lower() == str(owner).lower() for a in env.approvers):
            return (f"can never be approved into {at}: its only listed approver owns the run (four eyes); add "
                    f"another approver to {at} in SPOKES_CONFIG, or reject it")
    return None


def owner_confirmed(run: RunRecord) -> bool:
    """The owner run.json names has confirmed it with their own token (the operator API's claim)."""
    owner = run.owner or (run.settings or {}).get("owner")
    return bool(owner and run.claimed_by and run.claimed_by.strip().lower() == str(owner).strip().lower())


def unverified_problem(run: RunRecord, env_name: str) -> str | None:
    """Why no verified person stands behind the run's current model yet (so the gated `env_name` stays shut:
    shared.stages.approvals), or None: it was started or retrained through the operator API, or its owner
    confirmed the claim."""
    if run.started_by or owner_confirmed(run):
        return None
    owner = run.owner or (run.settings or {}).get("owner") or "(none named)"
    return (f"run {run.run_id} waits for its owner {owner} to confirm it before "
            f"{env_name!r}: the owner in run.json (or a commands-queue retrain) is only a claim. The owner confirms "
            f"with `ftops claim {run.run_id}` (POST /api/runs/{run.run_id}/claim), or an Operator retrains it "
            "through the operator API")


def reached_end(run: RunRecord) -> bool:
    """Deployed to its last environment: the run did all it was meant to."""
    kind, env = states.split(run.state)
    return kind == "deployed" and env is not None and env == run.last_environment


def why_stopped(run: RunRecord, topology: Topology | None = None) -> str | None:
    """Why a run stopped short of its end (or what it waits for, or why it can never go further), in one
    line; None once it reached the last configured environment."""
    stuck = cannot_progress(run, topology) if topology is not None else None
    if stuck:
        return f"cannot progress: {stuck}"
    if reached_end(run):
        return None
    error = run.error or {}
    code = error.get("code") or error.get("stage")
    message = error.get("message") or error.get("reason") or error.get("description")
    if message:
        return f"{code}: {message}" if code else str(message)
    kind, env = states.split(run.state)
    if kind == "awaiting_approval" and env and unverified_problem(run, env):   # an approval would be refused
        return (f"waiting for its owner {run.owner or '(none named)'} to confirm it (ftops claim {run.run_id}), "
                f"then for an approver of {env}")
    waiting = {"awaiting_approval": f"waiting for an approver of {env} (ftops approve)",
               "waiting_for_quota": "waiting for training quota on the hub",
               states.CANCELLED: "cancelled by a command", states.RETIRED: "retired: its deployments were removed",
               states.APPROVAL_DENIED: f"promotion to {env or 'the next environment'} was denied",
               "rolled_back": f"its model was rolled back out of {env}; retrain it, or retire it (removes the rest)"}
    return waiting.get(kind) or (None if not run.terminal else f"ended in {run.state}")


def deployment_name(run: RunRecord) -> str:
    """One name per run on every spoke and environment: run settings, else the suffix, else the run id."""
    s = run.settings or {}
    return str(s.get("deployment_name") or s.get("suffix") or run.run_id)[:64]
