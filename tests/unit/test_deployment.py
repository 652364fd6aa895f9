"""Deploy stage, approvals, rollback, retire, keep-alive and cost with in-memory fakes (no I/O).

The fakes stand in for the registry (same transition rules and ETag checks), the publisher and the spokes
(ARM + data plane as a dict of what each account serves); the emulator tests cover the wire formats.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import httpx2 as httpx
import openai
import pytest
from fakes import MemoryDeps, make_deps

from local.settings import DEMO_SPOKES
from shared.app.settlement import PermanentError
from shared.azure import spokes
from shared.azure.access import AccessDenied, Caller
from shared.azure.arm_deployments import ArmDeployment, DeploymentError, foreign_problem
from shared.run import states
from shared.run.config import HubSettings, Settings
from shared.run.costs import daily_hosting_cost
from shared.run.messages import DeployRequest, RollbackCommand, RunCommand
from shared.stages import approvals, deployment, keepalive, rollback
from shared.store.registry import (
    DeploymentRecord,
    RunRecord,
)

MODEL = "gpt-4.1-mini-2025-04-14.ft-new"
OLD = "gpt-4.1-mini-2025-04-14.ft-old"
DEV = ("ftops-dev-eastus", "ftops-dev-swedencentral")
PROD = ("ftops-prod-eastus", "ftops-prod-westeurope")
APPROVER = "6f1c2d3e-0000-4000-8000-0000000000a1"    # listed for prod in local/spokes.demo.json
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"
OUTSIDER = "6f1c2d3e-0000-4000-8000-0000000000d4"    # not listed for prod


def caller(oid: str = APPROVER, roles: tuple[str, ...] = ("Approver.prod",)) -> Caller:
    return Caller(oid=oid, tenant="tenant-contoso", name="Someone", roles=frozenset(roles))


def deploy_id(run_id: str, env: str, model: str = MODEL) -> str:
    import hashlib
    return f"deploy-{run_id}-{env}-{hashlib.sha256(model.encode()).hexdigest()[:10]}"


@dataclass
class FakeSpokes:
    """The spokes port (`deps.spokes`): what each spoke serves, (account, name) → (model, tags)."""
    served: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    fail_deploy: set[str] = field(default_factory=set)
    fail_smoke: set[str] = field(default_factory=set)
    puts: list[tuple[str, str, str]] = field(default_factory=list)
    pings: list[str] = field(default_factory=list)
    ping_error: dict[str, Exception] = field(default_factory=dict)

    def get(self, target: Any, name: str) -> ArmDeployment | None:
        d = self.served.get((target.account, name))
        return ArmDeployment(name, d["model"], "Succeeded", "Standard", 1, d["tags"]) if d else None

    def foreign(self, target: Any, name: str) -> str | None:
        return foreign_problem(spokes.label(target), name, self.get(target, name))

    def deploy(self, target: Any, name: str, model: str, *, tags: dict[str, str],
               sku: str | None = None, capacity: int | None = None) -> ArmDeployment:
        self.puts.append((target.account, name, model))
        self.served[(target.account, name)] = {"model": model, "tags": dict(tags)}
        if target.account in self.fail_deploy:
            raise DeploymentError(f"{target.account}: provisioning failed")
        return ArmDeployment(name, model, "Succeeded", sku or target.sku, capacity or 1, tags)

    def delete(self, target: Any, name: str) -> bool:
        return self.served.pop((target.account, name), None) is not None

    def check_quota(self, target: Any, name: str) -> str | None:
        others = [k for k in self.served if k[0] == target.account and k[1] != name]
        return f"{target.account} quota {target.quota} is full" if len(others) >= target.quota else None

    def smoke_test(self, target: Any, name: str, **_: Any) -> spokes.SmokeResult:
        ok = target.account not in self.fail_smoke
        return spokes.SmokeResult(ok, 1, 5.0, "OK" if ok else "no answer")

    def ping(self, target: Any, name: str, **_: Any) -> str:
        client = target.account
        self.pings.append(client)
        if client in self.ping_error:
            raise self.ping_error[client]
        if (client, name) not in self.served:
            raise _api_error(openai.NotFoundError, 404)
        return "OK"


def _api_error(cls: type, status: int) -> Exception:
    request = httpx.Request("POST", "https://spoke/openai/deployments/x/chat/completions")
    return cls("error", response=httpx.Response(status, request=request), body=None)


@pytest.fixture
def world() -> tuple[MemoryDeps, FakeSpokes]:
    fake = FakeSpokes()
    settings = Settings(storage_connection="UseDevelopmentStorage=true", blob_service_uri=None,
                        queue_service_uri=None, table_service_uri=None, transport="local",
                        servicebus_namespace=None,
                        hub=HubSettings(endpoint="https://hub", tenant="tenant-contoso", resource_id=(
                            "/subscriptions/h/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub")),
                        spokes_config=DEMO_SPOKES.read_text(), keepalive_concurrency=4)
    return make_deps(settings, spokes=fake), fake


def add_run(deps: MemoryDeps, run_id: str = "run-1", *, state: str = states.EVALUATED, model: str = MODEL,
            owner: str = OWNER, name: str = "support-bot") -> RunRecord:
    run = RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=state, chosen_model=model,
                    settings={"deployment_name": name, "owner": owner}, owner=owner, claimed_by=owner,  # confirmed
                    environments=["dev", "test", "prod"], dataset_hash="sha256:abc", etag="e0")
    deps.registry.runs[run_id] = run
    return run


def to_prod_gate(deps: MemoryDeps, run_id: str = "run-1") -> None:
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="test"), deps)


# --- deploying -----------------------------------------------------------------------------------------
def test_dev_deploys_both_regions_with_one_name_then_hands_off_to_test(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert deps.registry.runs["run-1"].state == "deployed:dev"
    assert {(a, n) for (a, n) in fake.served} == {(a, "support-bot") for a in DEV}
    tags = fake.served[(DEV[0], "support-bot")]["tags"]
    assert tags["run_id"] == "run-1" and tags["model_version"] == MODEL and tags["dataset_hash"] == "sha256:abc"
    slot = deps.registry.get_deployment("dev", DEV[1], "support-bot")
    assert slot and slot.model == MODEL and slot.region == "swedencentral" and slot.last_ping is None
    assert deps.publisher.deploys() == [deploy_id("run-1", "test")]
    assert "ftops.run.deployed" in deps.publisher.types()
    evidence = next(a for a in deps.registry.audits if a["to_state"] == "deployed:dev")["detail"]
    assert {t["account"] for t in evidence["targets"]} == set(DEV) and all(t["smoke"]["ok"] for t in evidence["targets"])


def test_a_copy_delivered_while_another_worker_deploys_comes_back_later_and_touches_nothing(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deps.registry.keys[f"deploy-{_key('run-1', 'dev', MODEL)}"] = "IN_PROGRESS"   # another worker holds it
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert fake.puts == [] and deps.registry.runs["run-1"].state == "evaluated"
    assert deps.publisher.deploys() == [deploy_id("run-1", "dev") + "-a1"]


def _key(run_id: str, env: str, model: str) -> str:
    import hashlib
    return hashlib.sha256(f"{run_id}|{env}|{model}".encode()).hexdigest()[:32]


def test_test_environment_leads_to_awaiting_prod_approval(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    to_prod_gate(deps)
    assert deps.registry.runs["run-1"].state == "awaiting_approval:prod"
    assert deps.publisher.deploys() == [deploy_id("run-1", "test")]   # nothing sent towards prod
    assert not [k for k in fake.served if k[0] in PROD]


def test_duplicate_deploy_message_is_a_no_op(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    puts = len(fake.puts)
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert len(fake.puts) == puts and deps.registry.runs["run-1"].state == "deployed:dev"


@pytest.mark.parametrize("state", [states.EVALUATED, "deployed:dev", "deployed:test", "awaiting_approval:prod"])
def test_nothing_reaches_prod_without_a_recorded_approval(world: Any, state: str) -> None:
    deps, fake = world
    add_run(deps, state=state)
    with pytest.raises(PermanentError):
        deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    assert not fake.puts and deps.registry.runs["run-1"].state == state


@pytest.mark.parametrize(("approval", "why"), [
    ({"approver_oid": APPROVER, "ticket": "CHG-1"}, "four eyes"),
    ({"approver_oid": OUTSIDER, "ticket": "CHG-1"}, "not among the approvers"),
    ({"approver_oid": APPROVER, "ticket": ""}, "no ticket"),
    ({"approver": "demo-operator@contoso.example", "ticket": "CHG-1"}, "not come from a verified identity"),
])
def test_forged_approval_evidence_does_not_open_prod(world: Any, approval: dict[str, str], why: str) -> None:
    deps, fake = world
    run = add_run(deps, state="awaiting_approval:prod", owner=APPROVER if why == "four eyes" else OWNER)
    run.approvals = {"prod": {"run_id": "run-1", "environment": "prod", "model": MODEL,
                              "dataset_hash": "sha256:abc", **approval}}
    with pytest.raises(PermanentError, match=why):
        deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    assert not fake.puts and "deployment.refused" in deps.registry.actions("run-1")


def test_environments_cannot_be_skipped(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    with pytest.raises(PermanentError, match="cannot be deployed to 'test'"):
        deployment.handle_deploy(DeployRequest(run_id="run-1", environment="test"), deps)
    assert not fake.puts


def test_one_region_failing_rolls_the_environment_back(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-0", model=OLD)
    deployment.handle_deploy(DeployRequest(run_id="run-0", environment="dev"), deps)
    add_run(deps, "run-1")
    fake.fail_smoke.add(DEV[1])
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    run = deps.registry.runs["run-1"]
    assert run.state == "deployment_failed:dev" and DEV[1] in run.error["message"]  # type: ignore[index]
    # both regions serve the previous model again, and the registry still says so
    assert all(fake.served[(a, "support-bot")]["model"] == OLD for a in DEV)
    assert fake.served[(DEV[0], "support-bot")]["tags"]["run_id"] == "run-0"
    assert all(deps.registry.get_deployment("dev", a, "support-bot").run_id == "run-0" for a in DEV)  # type: ignore[union-attr]
    assert "ftops.run.deployment_failed" in deps.publisher.types()
    assert deps.publisher.deploys() == [deploy_id("run-0", "test", OLD)]


def test_failure_where_nothing_was_deployed_before_deletes_the_new_deployment(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    fake.fail_deploy.add(DEV[0])
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert deps.registry.runs["run-1"].state == "deployment_failed:dev"
    assert not fake.served and not deps.registry.slots
    failed = next(a for a in deps.registry.audits if a["to_state"] == "deployment_failed:dev")["detail"]
    assert sorted(r["action"] for r in failed["rolled_back"]) == ["deleted", "deleted"]


def test_quota_full_fails_before_touching_any_target(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    for i in range(10):   # Azure's default: 10 fine-tuned deployments per resource (it was 5)
        fake.served[(DEV[1], f"other-{i}")] = {"model": f"m.ft-{i}", "tags": {}}
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    run = deps.registry.runs["run-1"]
    assert run.state == "deployment_failed:dev" and "quota 10 is full" in run.error["message"]  # type: ignore[index]
    assert not fake.puts


# --- approvals -----------------------------------------------------------------------------------------
def test_an_approver_by_role_and_object_id_with_a_ticket_opens_prod(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deps.blobs.data[("reports", "run-1/evaluation.json")] = b'{"passed": true}'
    to_prod_gate(deps)
    evidence = approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-42", model=MODEL)
    assert evidence["model"] == MODEL and evidence["dataset_hash"] == "sha256:abc"
    assert evidence["evaluation_report_hash"].startswith("sha256:") and evidence["approver_oid"] == APPROVER
    assert deps.registry.runs["run-1"].approvals["prod"]["ticket"] == "CHG-42"
    assert deps.publisher.deploys()[-1] == deploy_id("run-1", "prod")
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    assert deps.registry.runs["run-1"].state == "deployed:prod"
    assert fake.served[(PROD[1], "support-bot")]["tags"]["approval_ticket"] == "CHG-42"
    assert "approval.granted" in deps.registry.actions("run-1")


def test_owner_cannot_approve_their_own_run(world: Any) -> None:
    deps, _ = world
    add_run(deps, owner=APPROVER)
    to_prod_gate(deps)
    with pytest.raises(AccessDenied, match="four eyes") as refused:
        approvals.approve(deps, caller(), "run-1", "prod", ticket="T", model=MODEL)
    assert refused.value.status == 403 and not deps.registry.runs["run-1"].approvals


@pytest.mark.parametrize(("who", "why"), [(caller(OUTSIDER), "not among the approvers"),
                                          (caller(roles=("Reader",)), "needs the app role Approver.prod")])
def test_no_role_or_unlisted_object_id_cannot_approve(world: Any, who: Caller, why: str) -> None:
    deps, _ = world
    add_run(deps)
    to_prod_gate(deps)
    with pytest.raises(AccessDenied, match=why):
        approvals.approve(deps, who, "run-1", "prod", ticket="T", model=MODEL)
    assert not deps.registry.runs["run-1"].approvals


def test_an_approval_for_one_model_never_deploys_another(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    to_prod_gate(deps)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="T", model=MODEL)
    with pytest.raises(approvals.Refused, match="another model"):   # a replayed request for an older model
        approvals.approve(deps, caller(), "run-1", "prod", ticket="T", model=OLD)
    deps.registry.runs["run-1"].chosen_model = OLD   # the run now holds another model, approval left behind
    with pytest.raises(PermanentError, match="approval is for model"):
        deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    assert not [k for k in fake.served if k[0] in PROD] and "deployment.refused" in deps.registry.actions("run-1")


def test_a_changed_evaluation_report_voids_the_approval(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deps.blobs.data[("reports", "run-1/evaluation.json")] = b'{"passed": false}'
    to_prod_gate(deps)
    approvals.approve(deps, caller(), "run-1", "prod", ticket="T", model=MODEL)
    deps.blobs.data[("reports", "run-1/evaluation.json")] = b'{"passed": true}'
    with pytest.raises(PermanentError, match="evaluation report changed"):
        deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)
    assert not [k for k in fake.served if k[0] in PROD]


def test_reject_denies_the_run(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    to_prod_gate(deps)
    approvals.reject(deps, caller(), "run-1", "prod", reason="too risky")
    assert deps.registry.runs["run-1"].state == states.APPROVAL_DENIED
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="prod"), deps)   # ignored
    assert not [k for k in fake.served if k[0] in PROD]


def test_a_deployment_ftops_did_not_create_is_never_replaced(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    fake.served[(DEV[1], "support-bot")] = {"model": "gpt-4o", "tags": {"app": "someone-else"}}
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    run = deps.registry.runs["run-1"]
    assert run.state == "deployment_failed:dev" and not fake.puts
    assert "ftops-dev-swedencentral" in run.error["message"] and "'support-bot'" in run.error["message"]  # type: ignore[index]
    assert "not managed by ftops" in run.error["message"]  # type: ignore[index]
    assert fake.served[(DEV[1], "support-bot")]["model"] == "gpt-4o"


def test_rollback_returns_the_environment_to_the_previous_model_once(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-0", model=OLD)
    deployment.handle_deploy(DeployRequest(run_id="run-0", environment="dev"), deps)
    add_run(deps, "run-1")
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert all(fake.served[(a, "support-bot")]["model"] == MODEL for a in DEV)
    command = RollbackCommand(environment="dev", run_id="run-1", requested_by="ops@x", reason="bad answers")
    rollback.rollback(command, deps)
    assert all(fake.served[(a, "support-bot")]["model"] == OLD for a in DEV)
    assert all(deps.registry.get_deployment("dev", a, "support-bot").run_id == "run-0" for a in DEV)  # type: ignore[union-attr]
    assert "ftops.run.rolled_back" in deps.publisher.types()
    evidence = next(a for a in deps.registry.audits if a["action"] == "deployment.rolled_back")["detail"]
    assert (evidence["from_model"], evidence["to_model"], evidence["to_run"]) == (MODEL, OLD, "run-0")
    assert any(a["action"] == "deployment.restored" for a in deps.registry.audits)   # on run-0's trail too
    puts = len(fake.puts)
    rollback.rollback(command, deps)   # a duplicate: nothing more to do
    assert len(fake.puts) == puts
    with pytest.raises(PermanentError, match="nothing to go back to"):
        rollback.rollback(RollbackCommand(environment="dev", deployment="support-bot"), deps)


def test_retire_removes_every_deployment_and_keepalive_stops(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    to_prod_gate(deps)
    rollback.retire(RunCommand(run_id="run-1", requested_by="ops@x"), deps)
    assert deps.registry.runs["run-1"].state == states.RETIRED and not fake.served
    assert {s.state for s in deps.registry.slots.values()} == {"retired"}
    assert keepalive.keepalive_tick(deps).total == 0


def test_newer_run_replaces_the_older_in_place(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-0", model=OLD)
    deployment.handle_deploy(DeployRequest(run_id="run-0", environment="dev"), deps)
    add_run(deps, "run-1")
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    assert len(fake.served) == 2 and len(deps.registry.slots) == 2
    slot = deps.registry.get_deployment("dev", DEV[0], "support-bot")
    assert slot and slot.previous_model == OLD and slot.previous_run_id == "run-0"
    assert "deployment.superseded" in deps.registry.actions("run-0")
    rollback.retire(RunCommand(run_id="run-0"), deps)   # the old run no longer owns anything
    assert all(fake.served[(a, "support-bot")]["model"] == MODEL for a in DEV)


# --- keep-alive, cost ----------------------------------------------------------------------------------
def test_keepalive_pings_all_heals_the_vanished_and_alerts_on_repeated_failure(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    to_prod_gate(deps)
    del fake.served[(DEV[0], "support-bot")]                          # Azure deleted it
    fake.ping_error["ftops-test-eastus2"] = _api_error(openai.InternalServerError, 500)
    summary = keepalive.keepalive_tick(deps)
    assert (summary.total, summary.ok, summary.healed, summary.failed) == (4, 2, 1, 1)
    assert fake.served[(DEV[0], "support-bot")]["model"] == MODEL      # recreated from the registry
    assert "deployment.healed" in deps.registry.actions("run-1")
    assert "ftops.run.deployment_healed" in deps.publisher.types()
    for _ in range(2):
        summary = keepalive.keepalive_tick(deps)
    assert summary.alerts == 1 and "ftops.run.keepalive_failed" in deps.publisher.types()
    slot = deps.registry.get_deployment("test", "ftops-test-eastus2", "support-bot")
    assert slot and slot.ping_failures == 3 and slot.last_ping_ok is False and slot.last_ping


def test_keepalive_interleaves_spokes() -> None:
    base = DeploymentRecord("dev", "a", "d0", "r", "s", "g", "run", "m")
    slots = [replace(base, account=a, deployment=f"d{i}") for a in ("a", "b") for i in range(2)]
    assert [s.account for s in keepalive.interleave(slots)] == ["a", "b", "a", "b"]


def test_daily_hosting_cost_per_deployment_and_total() -> None:
    base = DeploymentRecord("dev", "a", "bot", "eastus", "s", "g", "run", MODEL)
    cost = daily_hosting_cost([base, replace(base, account="b"), replace(base, account="c", state="retired"),
                               replace(base, account="d", sku="DeveloperTier")])
    assert [r["per_day"] for r in cost["deployments"]] == [40.8, 40.8, 0.0]
    assert cost["total_per_day"] == 81.6
    assert daily_hosting_cost([base], {"gpt-4.1-mini": 2.0})["total_per_day"] == 48.0


def test_cross_tenant_and_cross_subscription_model_bodies(world: Any) -> None:
    deps, _ = world
    topology = deps.require_topology()
    hub = deps.settings.hub
    same_tenant = spokes.model_body(topology.target(PROD[0]), hub, MODEL)  # type: ignore[arg-type]
    other_tenant = spokes.model_body(topology.target(PROD[1]), hub, MODEL)  # type: ignore[arg-type]
    assert same_tenant == {"format": "OpenAI", "name": MODEL, "version": "1", "source": hub.resource_id}
    assert other_tenant == {"format": "OpenAI", "name": MODEL, "version": "1", "sourceAccount": hub.resource_id}
    assert json.dumps(other_tenant)


def test_a_run_whose_base_model_a_spoke_cannot_host_fails_before_touching_any_target(world: Any) -> None:
    """gpt-4o fine-tunes deploy as Standard in East US 2 and Sweden Central only: the test environment's
    Standard spoke in North Central US cannot take one, and the failure names it."""
    deps, fake = world
    run = add_run(deps, state=states.deployed("dev"))
    run.settings = {**run.settings, "base_model": "gpt-4o-2024-08-06"}
    deps.registry.runs["run-1"] = run
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="test"), deps)
    failed = deps.registry.runs["run-1"]
    assert failed.state == "deployment_failed:test"
    assert "ftops-test-northcentralus (northcentralus): a fine-tuned gpt-4o cannot be deployed as Standard" in \
        failed.error["message"]  # type: ignore[index]
    assert not fake.puts


def test_keepalive_counts_a_developer_deployments_24_hour_end_as_expiry_not_failure(world: Any) -> None:
    deps, fake = world
    add_run(deps)
    deployment.handle_deploy(DeployRequest(run_id="run-1", environment="dev"), deps)
    slot = deps.registry.get_deployment("dev", DEV[1], "support-bot")
    assert slot is not None
    deps.registry.update_deployment(slot, sku="DeveloperTier")          # as a Developer target records it
    del fake.served[(DEV[1], "support-bot")]                            # Azure deleted it after 24 h
    summary = keepalive.keepalive_tick(deps)
    assert (summary.ok, summary.expired, summary.failed, summary.healed, summary.alerts) == (1, 1, 0, 0, 0)
    assert (DEV[1], "support-bot") not in fake.served                   # not recreated behind anyone's back
    assert deps.registry.get_deployment("dev", DEV[1], "support-bot").state == "expired"  # type: ignore[union-attr]
    assert "ftops.run.deployment_expired" in deps.publisher.types()
    assert keepalive.keepalive_tick(deps).total == 1                     # no longer pinged
class FixedVerifier:
    """Stands in for the token check (covered against the running stack): the caller it was given."""

    def __init__(self, who: Caller) -> None:
        self.who = who

    def verify(self, authorization: str | None) -> Caller:
        return self.who


def test_who_retrains_through_the_api_cannot_approve_the_model_it_makes(world: Any) -> None:
    from shared.operator.api import handle
    deps, _ = world
    add_run(deps, state="deployed:prod")
    deps.registry.runs["run-1"].approvals = {"prod": {"model": MODEL, "approver_oid": APPROVER}}
    operator = FixedVerifier(caller(roles=("Operator", "Approver.prod")))
    answer = handle("retrain", authorization="Bearer t", params={"run_id": "run-1"}, deps=deps, verifier=operator,
                    body=json.dumps({"settings": {"hyperparameters": {"n_epochs": 2}}}).encode())
    assert answer.status == 202, answer.body
    run = deps.registry.runs["run-1"]
    assert (run.state, run.started_by, run.approvals) == ("uploading", APPROVER, {})
    run.state, run.chosen_model = "awaiting_approval:prod", "gpt-4.1-mini-2025-04-14.ft-retrained"   # trained again
    answer = handle("approve", authorization="Bearer t", params={"run_id": "run-1"}, deps=deps, verifier=operator,
                    body=json.dumps({"environment": "prod", "ticket": "T", "model": run.chosen_model}).encode())
    assert answer.status == 403 and "retrained run run-1" in answer.body["error"]["message"]
    refused = [a for a in deps.registry.audits if a["action"] == "api.approve.refused"]
    assert refused and refused[0]["actor"] == f"Someone <{APPROVER}>" and not deps.registry.runs["run-1"].approvals
    assert "ftops.run.approval_refused" in deps.publisher.types()
