"""Deploying across the emulator's spokes (several subscriptions, regions and two tenants) with the app's real
dependencies: what an operator would see on the spokes, in the registry and on the wire."""
from __future__ import annotations

import json
import ssl
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import openai
import pytest

from local.settings import HUB, hub_resource_id
from shared.app.settlement import PermanentError
from shared.azure.access import AccessDenied, Caller
from shared.azure.arm_deployments import NotManagedByFtops
from shared.run import states
from shared.run.messages import DeployRequest, RollbackCommand, RunCommand
from shared.stages import approvals, deployment, keepalive, rollback
from shared.store.registry import RunRecord
from tests.integration.emulator_jobs import trained_job

pytestmark = pytest.mark.integration

DEV = ("ftops-dev-eastus", "ftops-dev-swedencentral")
PROD = ("ftops-prod-eastus", "ftops-prod-westeurope")
APPROVER = Caller(oid="6f1c2d3e-0000-4000-8000-0000000000a1", tenant="tenant-contoso", name="Demo Operator",
                  roles=frozenset({"Approver.prod"}))
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"
QA = [("How do I reset my password?", "Open Settings, choose Security, then Reset password."),
      ("Where is my invoice?", "Invoices are under Billing, then History."),
      ("How do I add a user?", "Go to Admin, Users, then Add user."),
      ("Can I export my data?", "Yes: Settings, Privacy, Export data."),
      ("How do I close my account?", "Contact support from the Help page to close it.")]


def _hub_client(emulator: Any) -> openai.AzureOpenAI:
    http = httpx2.Client(verify=ssl.create_default_context(cafile=emulator.ca_file))
    return openai.AzureOpenAI(azure_endpoint=emulator.endpoint(HUB["name"]), api_version="2024-10-21",
                              api_key="local-key", http_client=http)


def _train(emulator: Any, suffix: str) -> str:
    """A fine-tuned model on the emulator hub, named with `suffix`."""
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
             for q, a in QA * 2]
    job = trained_job(_hub_client(emulator), emulator, "\n".join(lines).encode(), base_model="gpt-4.1-mini-2025-04-14",
                      suffix=suffix)
    return str(job.fine_tuned_model)


@pytest.fixture(scope="module")
def models(emulator: Any) -> tuple[str, str]:
    """(older, newer) fine-tuned models on the hub."""
    return _train(emulator, "old"), _train(emulator, "new")


@pytest.fixture
def deps(make_deps: Callable[..., Any], emulator: Any) -> Iterator[Any]:
    emulator.control.clear_requests()
    built = make_deps(SMOKE_TIMEOUT_SECONDS="20")
    yield built
    emulator.control.faults(fail_deployments_on=[], next_500=0, next_429=0, latency_ms=0, accounts=None,
                            fail_next_deployments={})
    emulator.control.config(warmup_seconds=0)
    # spokes hold five fine-tuned deployments each: leave them empty for the next test
    for d in emulator.control.state()["deployments"]:
        if d["deployment"].startswith("it-"):
            emulator.control.vanish(d["account"], d["deployment"])


def add_run(deps: Any, model: str, *, name: str, state: str = states.EVALUATED, run_id: str | None = None,
            owner: str = OWNER) -> str:
    run_id = run_id or f"run-{uuid.uuid4().hex[:8]}"
    deps.registry.create_run(RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=state,
                                       chosen_model=model, owner=owner, claimed_by=owner,  # confirmed
                                       environments=["dev", "test", "prod"],
                                       settings={"deployment_name": name, "owner": owner},
                                       dataset_hash="sha256:feed"), actor="test")
    return run_id


def served(emulator: Any, name: str) -> dict[str, dict[str, Any]]:
    return {d["account"]: d for d in emulator.control.state()["deployments"] if d["deployment"] == name}


def puts(emulator: Any, name: str) -> dict[str, dict[str, Any]]:
    return {r["path"].split("/accounts/")[1].split("/")[0]: r for r in emulator.control.requests()
            if r["method"] == "PUT" and r["path"].endswith(f"/deployments/{name}")}


def queued(deps: Any, queue: str) -> list[str]:
    messages = deps.publisher.queue_client(queue).peek_messages(max_messages=32)
    return [json.loads(m.content)["message_id"] for m in messages]


def test_dev_same_name_in_both_regions_cross_subscription_then_test_queued(deps: Any, emulator: Any,
                                                                           models: tuple[str, str]) -> None:
    name = "it-dev"
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    assert deps.registry.require_run(run_id).state == "deployed:dev"
    on_spokes = served(emulator, name)
    assert set(on_spokes) == set(DEV)
    assert {d["model"] for d in on_spokes.values()} == {models[1]}
    assert all(d["state"] == "Succeeded" and d["tags"]["run_id"] == run_id for d in on_spokes.values())
    sent = puts(emulator, name)
    assert {r["model_source"] for r in sent.values()} == {hub_resource_id()}   # the hub is in another subscription
    assert not any(r["has_aux"] for r in sent.values())
    assert any(m.startswith(f"deploy-{run_id}-test-") for m in queued(deps, deps.settings.deploy_queue))


def test_prod_cross_tenant_carries_source_account_and_auxiliary_token(deps: Any, emulator: Any,
                                                                      models: tuple[str, str]) -> None:
    name = "it-prod"
    run_id = add_run(deps, models[1], name=name, state="awaiting_approval:prod")
    with pytest.raises(PermanentError, match="requires an approval"):
        deployment.handle_deploy(DeployRequest(run_id=run_id, environment="prod"), deps)
    assert not served(emulator, name)
    approvals.approve(deps, APPROVER, run_id, "prod", ticket="CHG-7", model=models[1])
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="prod"), deps)
    assert deps.registry.require_run(run_id).state == "deployed:prod"
    sent = puts(emulator, name)
    fabrikam, contoso = sent[PROD[1]], sent[PROD[0]]
    assert fabrikam["auth_tenant"] == "tenant-fabrikam" and fabrikam["aux_tenants"] == ["tenant-contoso"]
    assert fabrikam["model_source_account"] == hub_resource_id() and not fabrikam["model_source"]
    assert contoso["model_source"] == hub_resource_id() and not contoso["has_aux"]
    on_spokes = served(emulator, name)
    assert {d["tags"]["approval_ticket"] for d in on_spokes.values()} == {"CHG-7"}
    # the smoke test really called the fabrikam spoke with a fabrikam token
    chats = [r for r in emulator.control.requests() if r["path"].startswith(f"/{PROD[1]}/openai/")]
    assert chats and chats[-1]["auth_tenant"] == "tenant-fabrikam" and chats[-1]["status"] == 200
    trail = deps.registry.audit_trail(run_id)
    assert any(a["action"] == "approval.granted" and a["actor"] == APPROVER.actor for a in trail)


def test_approval_rules_on_the_gate(deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    run_id = add_run(deps, models[1], name="it-gate", state="awaiting_approval:prod", owner=APPROVER.oid)
    with pytest.raises(AccessDenied, match="four eyes"):
        approvals.approve(deps, APPROVER, run_id, "prod", ticket="T", model=models[1])
    approvals.reject(deps, APPROVER, run_id, "prod", reason="no")
    assert deps.registry.require_run(run_id).state == states.APPROVAL_DENIED
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="prod"), deps)
    assert not served(emulator, "it-gate")


def test_a_dev_run_naming_another_applications_deployment_is_refused_before_any_put(
        deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku
    name = "it-theirs"
    arm = deps.arm_client("00000000-0000-0000-0000-0000000dev01", tenant_id="tenant-contoso")
    arm.deployments.begin_create_or_update("rg-ftops-dev", DEV[1], name, Deployment(   # another team's, no tags
        sku=Sku(name="Standard", capacity=1), properties=DeploymentProperties(model=DeploymentModel(
            format="OpenAI", name="gpt-4.1-mini", version="2025-04-14")))).result()
    emulator.control.clear_requests()
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == "deployment_failed:dev"
    assert f"{DEV[1]} (swedencentral): deployment '{name}' exists and is not managed by ftops" in run.error["message"]
    assert puts(emulator, name) == {}                                    # neither dev spoke was touched
    assert served(emulator, name)[DEV[1]]["model"] == "gpt-4.1-mini"     # theirs still serves their model
    refusal = next(a for a in deps.registry.audit_trail(run_id) if a["action"] == "deployment.refused")
    assert refusal["detail"]["reason"] == "not_managed_by_ftops" and refusal["detail"]["owner"] == OWNER
    with pytest.raises(NotManagedByFtops, match="not managed by ftops"):  # nor is it deleted by anything ftops does
        deps.spokes.delete(deps.require_topology().target(DEV[1]), name)
    assert served(emulator, name)


def test_a_failing_region_rolls_the_environment_back(deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    name = "it-fail"
    emulator.control.faults(fail_deployments_on=[DEV[1]])
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == "deployment_failed:dev" and DEV[1] in run.error["message"]  # type: ignore[index]
    assert not served(emulator, name)   # the eastus deployment that succeeded was removed again
    assert not deps.registry.list_deployments(run_id=run_id)
    assert DEV[0] in puts(emulator, name)


def test_rollback_after_a_failed_region_restores_the_previous_model(deps: Any, emulator: Any,
                                                                    models: tuple[str, str]) -> None:
    name = "it-restore"
    old = add_run(deps, models[0], name=name)
    deployment.handle_deploy(DeployRequest(run_id=old, environment="dev"), deps)
    emulator.control.faults(fail_next_deployments={DEV[1]: 1})   # only the new model's PUT fails there
    emulator.control.clear_requests()
    new = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=new, environment="dev"), deps)
    run = deps.registry.require_run(new)
    assert run.state == "deployment_failed:dev" and DEV[1] in run.error["message"]  # type: ignore[index]
    on_spokes = served(emulator, name)
    assert set(on_spokes) == set(DEV)    # BOTH regions serve the old model again, tagged with its run
    assert all(d["model"] == models[0] and d["state"] == "Succeeded" and d["tags"]["run_id"] == old
               for d in on_spokes.values())
    sent = [r for r in emulator.control.requests() if r["method"] == "PUT" and r["path"].endswith(f"/{name}")]
    assert sorted((r["account"], r["model_name"]) for r in sent) == sorted(
        [(a, models[1]) for a in DEV] + [(a, models[0]) for a in DEV])   # deploy, then restore, per region
    failed = next(a for a in deps.registry.audit_trail(new) if a.get("to_state") == "deployment_failed:dev")
    assert sorted((r["account"], r["action"], r["model"]) for r in failed["detail"]["rolled_back"]) == \
        sorted((a, "restored", models[0]) for a in DEV)
    assert all(s.run_id == old for s in deps.registry.list_deployments(state="active") if s.deployment == name)


def test_a_slow_first_answer_is_waited_for_and_the_environment_deploys(deps: Any, emulator: Any,
                                                                      models: tuple[str, str]) -> None:
    name = "it-warm"
    emulator.control.config(warmup_seconds=2.5)   # at time_scale 1: 2.5 real seconds of 429s per new deployment
    emulator.control.clear_requests()
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    assert deps.registry.require_run(run_id).state == "deployed:dev"
    assert {d["model"] for d in served(emulator, name).values()} == {models[1]}
    done = next(a for a in deps.registry.audit_trail(run_id) if a.get("to_state") == "deployed:dev")
    smokes = {t["account"]: t["smoke"] for t in done["detail"]["targets"]}
    assert set(smokes) == set(DEV) and all(s["ok"] and s["attempts"] >= 2 for s in smokes.values())
    for account in DEV:
        chats = [r for r in emulator.control.requests()
                 if r["account"] == account and r["path"].endswith(f"/deployments/{name}/chat/completions")]
        assert {r["fault"] for r in chats[:-1]} == {"warmup"} and chats[-1]["status"] == 200


def test_rollback_command_and_retire(deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    name = "it-rollback"
    old = add_run(deps, models[0], name=name)
    deployment.handle_deploy(DeployRequest(run_id=old, environment="dev"), deps)
    new = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=new, environment="dev"), deps)
    assert {d["model"] for d in served(emulator, name).values()} == {models[1]}
    rollback.rollback(RollbackCommand(environment="dev", run_id=new, requested_by="ops@x", reason="regressed"), deps)
    assert {d["model"] for d in served(emulator, name).values()} == {models[0]}
    assert {d["tags"]["run_id"] for d in served(emulator, name).values()} == {old}
    rollback.retire(RunCommand(run_id=old, requested_by="ops@x"), deps)
    assert not served(emulator, name)
    assert deps.registry.require_run(old).state == states.RETIRED


def test_quota_full_fails_clearly_without_a_half_done_environment(deps: Any, emulator: Any,
                                                                  models: tuple[str, str]) -> None:
    fillers = [add_run(deps, models[0], name=f"it-fill{i}") for i in range(10)]
    for run_id in fillers:   # ten fine-tuned deployments (Azure's limit) on both dev spokes, through the app itself
        deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    emulator.control.clear_requests()
    run_id = add_run(deps, models[1], name="it-quota")
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == "deployment_failed:dev"
    assert "quota is 10" in run.error["message"] and DEV[0] in run.error["message"]  # type: ignore[index]
    assert not puts(emulator, "it-quota") and not served(emulator, "it-quota")


def test_keepalive_heals_a_vanished_deployment(deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    name = "it-heal"
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    emulator.control.vanish(DEV[1], name)
    summary = keepalive.keepalive_tick(deps)
    assert (summary.total, summary.ok, summary.healed) == (2, 1, 1)
    assert served(emulator, name)[DEV[1]]["model"] == models[1]
    assert all(d["last_used_at"] for d in served(emulator, name).values())
    assert any(a["action"] == "deployment.healed" for a in deps.registry.audit_trail(run_id))
    slot = deps.registry.get_deployment("dev", DEV[1], name)
    assert slot and slot.healed_at and slot.last_ping_ok


def test_a_spoke_identity_without_rights_on_the_hub_fails_clearly(make_deps: Callable[..., Any], emulator: Any,
                                                                   models: tuple[str, str]) -> None:
    """The dev spoke in Sweden deploys with its own app registration (client id `spoke-deployer`), which has
    no role on the hub: ARM refuses the cross-subscription deployment, and the run says who needs what."""
    from local.settings import DEMO_SPOKES
    config = json.loads(DEMO_SPOKES.read_text())
    config["environments"][0]["targets"][1]["credential"] = {"client_id": "spoke-deployer"}
    deps = make_deps(SPOKES_CONFIG=json.dumps(config), SMOKE_TIMEOUT_SECONDS="20")
    name = "it-rights"
    run_id = add_run(deps, models[1], name=name)
    try:
        deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
        run = deps.registry.require_run(run_id)
        assert run.state == "deployment_failed:dev"
        message = run.error["message"]
        assert "ftops-dev-swedencentral" in message and "403 AuthorizationFailed" in message
        assert "client id spoke-deployer" in message and hub_resource_id() in message
        assert served(emulator, name) == {}   # the other region was rolled back: nothing half-done
    finally:
        for d in emulator.control.state()["deployments"]:
            if d["deployment"] == name:
                emulator.control.vanish(d["account"], d["deployment"])


def test_developer_spokes_end_after_24_hours_and_keepalive_says_expired(make_deps: Callable[..., Any],
                                                                        emulator: Any,
                                                                        models: tuple[str, str]) -> None:
    """An environment that accepts Developer deployments gets them; Azure (the emulator) deletes them 24 hours
    later whatever their use, and keep-alive reports that as an expiry, not a failure, without recreating."""
    from local.settings import DEMO_SPOKES
    config = json.loads(DEMO_SPOKES.read_text())
    config["environments"][0]["accepts_developer_expiry"] = True
    for target in config["environments"][0]["targets"]:
        target["sku"] = "DeveloperTier"
    deps = make_deps(SPOKES_CONFIG=json.dumps(config), SMOKE_TIMEOUT_SECONDS="20")
    name = "it-developer"
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    assert deps.registry.require_run(run_id).state == "deployed:dev"
    assert {d["sku"] for d in served(emulator, name).values()} == {"DeveloperTier"}
    assert keepalive.keepalive_tick(deps).ok == 2

    emulator.control.advance(24 * 3600)
    summary = keepalive.keepalive_tick(deps)

    assert (summary.total, summary.expired, summary.failed, summary.healed, summary.alerts) == (2, 2, 0, 0, 0)
    assert served(emulator, name) == {}
    assert {s.state for s in deps.registry.list_deployments(run_id=run_id)} == {"expired"}
    assert keepalive.keepalive_tick(deps).total == 0


def test_keepalive_from_a_snapshot_does_not_bring_back_what_retire_removed(deps: Any, emulator: Any,
                                                                         models: tuple[str, str]) -> None:
    name = "it-retired"
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    snapshot = deps.registry.list_deployments(run_id=run_id, state="active")   # what a tick read first …
    rollback.retire(RunCommand(run_id=run_id, requested_by="ops@x"), deps)     # … before retire removed it
    topology = deps.require_topology()
    outcomes = [keepalive._keep(deps, topology, slot)[0] for slot in snapshot]
    assert outcomes == ["skipped", "skipped"]
    assert not served(emulator, name)                                            # not re-created
    assert not any(a["action"] == "deployment.healed" for a in deps.registry.audit_trail(run_id))


def event_types(deps: Any) -> list[str]:
    messages = deps.publisher.queue_client(deps.settings.events_topic).peek_messages(max_messages=32)
    return [json.loads(json.loads(m.content)["body"])["type"] for m in messages]


def test_a_model_retiring_within_the_warning_window_is_shown_warned_and_announced_once(
        deps: Any, emulator: Any, models: tuple[str, str]) -> None:
    """The Models API dates (deprecation.inference) reach the slot, a warning and one event; a base model whose
    fine-tuning Azure has closed is refused before anything is uploaded."""
    from datetime import UTC, datetime, timedelta

    from ftops_cli.views import deployment_view
    from shared.stages.lifecycle import training_closed_problem
    name = "it-retiring"
    run_id = add_run(deps, models[1], name=name)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
    soon = (datetime.now(UTC) + timedelta(days=40)).date()
    emulator.control.config(model_deprecations={"gpt-4.1-mini": {
        "fineTune": "2026-01-01T00:00:00Z", "inference": f"{soon.isoformat()}T00:00:00Z"}})
    try:
        first = keepalive.keepalive_tick(deps)
        assert any(f"retires on {soon.isoformat()} (in 40 days" in w for w in first.warnings), first.warnings
        slots = [d for d in deps.registry.list_deployments(run_id=run_id)]
        assert {d.retires_on for d in slots} == {soon.isoformat()} and len(slots) == 2
        assert deployment_view(slots[0])["retires_on"] == soon.isoformat()
        from ftops_cli.status import collect, render_table
        shown = render_table(collect(deps))
        assert "warning: dev|" in shown and f"retires on {soon.isoformat()}" in shown   # ftops status
        assert event_types(deps).count("ftops.run.model_retiring") == 2      # one per slot
        keepalive.keepalive_tick(deps)
        assert event_types(deps).count("ftops.run.model_retiring") == 2      # not again for the same date
        problem = training_closed_problem(deps, "gpt-4.1-mini-2025-04-14")
        assert problem and "stopped new fine-tuning" in problem and "2026-01-01" in problem
    finally:
        emulator.control.config(model_deprecations={})
    assert training_closed_problem(deps, "gpt-4.1-mini-2025-04-14") is None   # the real date: 2027-04
