"""Nothing bills unnoticed: what auto-retire takes away, what it leaves, and that it says so first."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fakes import MemoryDeps
from test_deployment import FakeSpokes, world  # noqa: F401 (world is the fixture)

from local.settings import DEMO_SPOKES
from shared.run import states
from shared.run.config import ConfigError
from shared.run.topology import parse_topology
from shared.stages import keepalive
from shared.stages.retirement import plan
from shared.store.registry import DeploymentRecord, RunRecord

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ACCOUNTS = {"dev": ("ftops-dev-eastus", "ftops-dev-swedencentral"),
            "test": ("ftops-test-eastus2", "ftops-test-northcentralus"),
            "prod": ("ftops-prod-eastus", "ftops-prod-westeurope")}


def topology(**retire: Any):
    data = json.loads(DEMO_SPOKES.read_text())
    for env in data["environments"]:
        if env["name"] in retire:
            env["retire"] = retire[env["name"]]
    return parse_topology(data)


def run(run_id: str, state: str, *, days_ago: float = 1.0, created: str = "2026-11-01") -> RunRecord:
    return RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=state, created_at=created,
                     updated_at=(NOW - timedelta(days=days_ago)).isoformat(), environments=["dev", "test", "prod"])


def slots(run_id: str, *envs: str, name: str = "bot", model: str | None = None, **extra: Any) -> list[DeploymentRecord]:
    return [DeploymentRecord(environment=env, account=acct, deployment=name, region=acct.rsplit("-", 1)[-1],
                             subscription="s", resource_group="rg", run_id=run_id, model=model or f"ft-{run_id}",
                             **extra)
            for env in envs for acct in ACCOUNTS[env]]


def reasons(runs: list[RunRecord], all_slots: list[DeploymentRecord], **retire: Any) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in plan(topology(**retire), {x.run_id: x for x in runs}, all_slots, NOW):
        out.setdefault(r.slot.run_id, set()).add(r.reason)
    return out


def test_denied_failed_and_long_waiting_runs_lose_their_deployments() -> None:
    runs = [run("denied", states.APPROVAL_DENIED), run("failed", "deployment_failed:test"),
            run("waiting", "awaiting_approval:prod", days_ago=8), run("fresh", "awaiting_approval:prod", days_ago=2,
                                                                     created="2026-11-02")]
    all_slots = (slots("denied", "dev", "test", name="a") + slots("failed", "dev", name="b")
                 + slots("waiting", "dev", "test", name="c") + slots("fresh", "dev", "test", name="d"))
    assert reasons(runs, all_slots) == {"denied": {"approval_denied"}, "failed": {"failed"},
                                        "waiting": {"awaiting_approval_expired"}}


def test_a_newer_run_under_the_same_name_supersedes_but_what_prod_serves_stays() -> None:
    runs = [run("old", "deployed:test", created="2026-11-01"), run("new", "deployed:dev", created="2026-11-03"),
            run("prod-model", "deployed:prod", created="2026-10-01")]
    all_slots = (slots("old", "test", name="bot") + slots("new", "dev", name="bot")
                 + slots("prod-model", "dev", "test", "prod", name="other"))
    assert reasons(runs, all_slots) == {"old": {"superseded"}}
    # a denied run whose dev slots replaced the prod model's: that model comes back instead of a delete
    runs.append(run("denied", states.APPROVAL_DENIED, created="2026-11-05"))
    taken = slots("denied", "dev", name="other", previous_model="ft-prod-model", previous_run_id="prod-model")
    keep = [s for s in all_slots if not (s.run_id == "prod-model" and s.environment == "dev")]
    [first, second] = plan(topology(), {x.run_id: x for x in runs}, keep + taken, NOW)[-2:]
    assert {first.restore_run, second.restore_run} == {"prod-model"}


def test_each_environment_says_what_it_keeps() -> None:
    runs = [run("denied", states.APPROVAL_DENIED), run("waiting", "awaiting_approval:prod", days_ago=30,
                                                       created="2026-11-02")]
    all_slots = slots("denied", "dev", "test", name="a") + slots("waiting", "dev", "test", name="c")
    planned = plan(topology(dev={"approval_denied": False, "awaiting_approval_days": None}),
                   {x.run_id: x for x in runs}, all_slots, NOW)
    assert {(r.slot.run_id, r.slot.environment) for r in planned} == {("denied", "test"), ("waiting", "test")}
    with pytest.raises(ConfigError, match=r"environments\[0\]\.retire\.awaiting_approval_days"):
        topology(dev={"awaiting_approval_days": 0})
    with pytest.raises(ConfigError, match=r"retire\.superseed"):
        topology(dev={"superseed": True})


def test_the_keepalive_tick_announces_retires_and_pings_only_what_stays(world: Any) -> None:  # noqa: F811
    deps, fake = world
    deps: MemoryDeps
    fake: FakeSpokes
    for r in (run("denied", states.APPROVAL_DENIED), run("live", "deployed:prod")):
        r.etag = "e0"
        deps.registry.runs[r.run_id] = r
    for s in slots("denied", "dev", "test", name="a") + slots("live", "dev", "test", "prod", name="b"):
        deps.registry.save_deployment(s)
        fake.served[(s.account, s.deployment)] = {"model": s.model, "tags": {}}
    summary = keepalive.keepalive_tick(deps)
    assert summary.retired == 4 and summary.total == 6 and summary.ok == 6
    assert not [k for k in fake.served if k[1] == "a"]                       # gone from every spoke
    assert sorted(fake.pings) == sorted(a for env in ACCOUNTS.values() for a in env)   # live's six, once each
    assert deps.registry.runs["denied"].state == states.RETIRED
    actions = deps.registry.actions("denied")
    assert actions.index("deployment.auto_retiring") < actions.index("deployment.auto_retired")
    types = deps.publisher.types()
    assert types.index("ftops.run.auto_retiring") < types.index("ftops.run.retired")
    assert {s.state for s in deps.registry.list_deployments(run_id="denied")} == {"retired"}
