"""The stages chained through their real queues, Azurite and the emulator — without the dev host, so a
failure here points at a stage, not at delivery."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftops_cli.status import collect, render_table
from shared.azure.bus import decode_local
from shared.operator.api import handle
from shared.run.messages import parse_message
from shared.stages.commands import handle_command
from shared.stages.deployment import handle_deploy
from shared.stages.evaluation import handle_evaluate
from shared.stages.intake import handle_blob_created
from shared.stages.keepalive import keepalive_tick
from shared.stages.polling import poll_tick
from shared.stages.training import handle_train

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"
OWNER = "6f1c2d3e-0000-4000-8000-0000000000b2"      # the emulator's demo data scientist


def operator_token(deps, username: str = "demo-operator@contoso.example") -> str:
    from ftops_cli.operator_client import LOCAL_DEMO_PASSWORD
    from shared.azure.identity import LocalUserCredential
    s = deps.settings
    credential = LocalUserCredential(s.operator_authority, s.operator_tenant_id, username, LOCAL_DEMO_PASSWORD,
                                     ca_bundle=s.ca_bundle)
    return credential.get_token(f"api://{s.operator_api_audience}/.default").token


def pump(deps, queue: str) -> int:
    """Deliver every visible message on a local queue to its handler; returns how many were handled."""
    client = deps.publisher.queue_client(queue)
    handled = 0
    for message in client.receive_messages(max_messages=32, visibility_timeout=30):
        event, data = parse_message(decode_local(message.content)["body"])
        if event.type == "ftops.stage.train":
            handle_train(data, deps)
        elif event.type == "ftops.stage.evaluate":
            handle_evaluate(data, deps)
        elif event.type == "ftops.stage.deploy":
            handle_deploy(data, deps)
        else:
            handle_command(event, data, deps)
        client.delete_message(message)
        handled += 1
    return handled


def test_a_dropped_dataset_reaches_prod_in_two_regions_after_approval(make_deps, emulator):
    deps = make_deps()
    s = deps.settings
    datasets = deps.blobs.get_container_client(s.datasets_container)
    datasets.upload_blob("support-bot/train.jsonl", SAMPLE.read_bytes())
    datasets.upload_blob("support-bot/run.json", json.dumps({"owner": OWNER}).encode())
    run_id = handle_blob_created("support-bot/run.json", deps)
    assert pump(deps, s.train_queue) == 1
    assert deps.registry.require_run(run_id).state == "training"

    for _ in range(60):
        emulator.control.advance(5)
        poll_tick(deps)
        if deps.registry.require_run(run_id).state != "training":
            break
    run = deps.registry.require_run(run_id)
    assert run.state == "trained" and run.fine_tuned_model

    assert pump(deps, s.evaluate_queue) == 1
    run = deps.registry.require_run(run_id)
    assert run.state == "evaluated" and run.evaluation["passed"] is True

    assert pump(deps, s.deploy_queue) == 2      # dev, then test (sent by dev's success)
    assert pump(deps, s.deploy_queue) == 0      # prod waits for a person
    assert deps.registry.require_run(run_id).state == "awaiting_approval:prod"

    model = deps.registry.require_run(run_id).chosen_model
    approval = json.dumps({"environment": "prod", "ticket": "CHG-1", "model": model}).encode()
    answer = handle("approve", authorization=f"Bearer {operator_token(deps)}", params={"run_id": run_id},
                    body=approval, deps=deps)
    assert answer.status == 409 and "waits for its owner" in answer.body["error"]["message"]   # run.json's claim
    answer = handle("claim", authorization=f"Bearer {operator_token(deps, 'demo-scientist@contoso.example')}",
                    params={"run_id": run_id}, body=b"", deps=deps)
    assert answer.status == 200, answer.body
    answer = handle("approve", authorization=f"Bearer {operator_token(deps)}", params={"run_id": run_id},
                    body=approval, deps=deps)
    assert answer.status == 202, answer.body
    assert pump(deps, s.deploy_queue) == 1
    run = deps.registry.require_run(run_id)
    assert run.state == "deployed:prod" and run.terminal

    deployments = deps.registry.list_deployments(run_id=run_id)
    assert sorted((d.environment, d.region) for d in deployments) == [
        ("dev", "eastus"), ("dev", "swedencentral"), ("prod", "eastus"), ("prod", "westeurope"),
        ("test", "eastus2"), ("test", "northcentralus")]
    assert len({d.deployment for d in deployments}) == 1
    keepalive_tick(deps)
    assert all(d.last_ping for d in deps.registry.list_deployments(run_id=run_id))
    on_spokes = {(d["account"], d["deployment"]) for d in emulator.control.state()["deployments"]}
    assert {(d.account, d.deployment) for d in deployments} <= on_spokes
    trail = deps.registry.audit_trail(run_id)
    approval = next(a for a in trail if a["action"] == "approval.granted")
    assert approval["actor"] == "Demo Operator <6f1c2d3e-0000-4000-8000-0000000000a1>"
    assert approval["detail"]["ticket"] == "CHG-1" and approval["detail"]["model"] == model
    assert [a["to_state"] for a in trail if a["to_state"]][-3:] == ["awaiting_approval:prod", "deploying:prod",
                                                                     "deployed:prod"]

    status = collect(deps, run_id)                      # what `ftops status RUN_ID` shows
    assert status["runs"][0]["state"] == "deployed:prod" and status["runs"][0]["audit"]
    assert len(status["hosting_cost"]["deployments"]) == 6 and status["hosting_cost"]["total_per_day"] > 0
    assert "prod/westeurope" in render_table(status)
