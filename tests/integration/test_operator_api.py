"""The operator API over HTTP, against the running local stack (Azurite, the emulator as hub, spokes and
Entra ID, the dev host serving the app's HTTP triggers): forged, expired, misdirected or role-less tokens
are refused and change nothing; operator actions on the commands queue are dead-lettered; four eyes; an
approval prepared for one model cannot approve another. Every refusal is in the audit trail with who tried."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from local.emulator.identity import USERS
from shared.run import states
from shared.store.registry import RunRecord

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("operator_api")]   # one LocalStack (module fixture): one lane
OPERATOR = USERS["demo-operator@contoso.example"]
SCIENTIST = USERS["demo-scientist@contoso.example"]
MODEL_A = "gpt-4.1-mini-2025-04-14.ft-aaaa"
MODEL_B = "gpt-4.1-mini-2025-04-14.ft-bbbb"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from local.stack import LocalStack
    with LocalStack(log_dir=tmp_path_factory.mktemp("operator-api-logs")) as running:
        running.wait_for_api()
        yield running


def seed_run(stack: Any, *, owner: str = SCIENTIST.oid, model: str = MODEL_A) -> str:
    run_id = f"api-{uuid.uuid4().hex[:8]}"
    stack.deps().registry.create_run(RunRecord(
        run_id=run_id, source=f"datasets/{run_id}/run.json", state=states.awaiting_approval("prod"),
        chosen_model=model, fine_tuned_model=model, owner=owner, claimed_by=owner, environments=["dev", "test", "prod"],
        settings={"deployment_name": run_id, "owner": owner}, dataset_hash="sha256:d1"), actor="test")
    return run_id


def call(stack: Any, method: str, path: str, token: str | None, body: dict[str, Any] | None = None
         ) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{stack.api_url}/{path}", method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def token(stack: Any, user: str = OPERATOR.username, **overrides: Any) -> str:
    return str(stack.emulator_control.call("POST", "identity/token", {"user": user, **overrides})["access_token"])


def signed_in(stack: Any, user: str = OPERATOR.username) -> str:
    """A token as a user gets it: the identity provider's token endpoint (what `ftops approve` uses)."""
    from ftops_cli.operator_client import local_client
    client = local_client(stack.api_url, stack.env, user)
    return str(client.credential.get_token(client.scope).token)


def approve_body(model: str = MODEL_A) -> dict[str, Any]:
    return {"environment": "prod", "ticket": "CHG-9", "model": model}


def refusals(stack: Any, run_id: str) -> list[dict[str, Any]]:
    return [a for a in stack.deps().registry.audit_trail(run_id) if a["action"].endswith(".refused")]


def forged(stack: Any, *, key: Any = None, algorithm: str = "RS256") -> str:
    """The operator's real claims, re-signed with another key (or not signed at all) under the real kid."""
    real = token(stack)
    claims = jwt.decode(real, options={"verify_signature": False})
    kid = jwt.get_unverified_header(real)["kid"]
    if algorithm == "none":
        return jwt.encode(claims, None, algorithm="none", headers={"kid": kid})
    return jwt.encode(claims, key or rsa.generate_private_key(public_exponent=65537, key_size=2048),
                      algorithm=algorithm, headers={"kid": kid})


@pytest.mark.parametrize(("make_token", "status", "why"), [
    (lambda s: None, 401, "no bearer token"),
    (lambda s: forged(s, algorithm="none"), 401, "token is invalid"),
    (lambda s: forged(s), 401, "Signature verification failed"),
    (lambda s: token(s, expires_in=-600), 401, "expired"),
    (lambda s: token(s, audience="api://someone-elses-api"), 401, "not for this API"),
    (lambda s: token(s, tenant="tenant-fabrikam"), 401, "not issued by this API's tenant"),
    (lambda s: token(s, roles=["Reader"]), 403, "needs the app role Approver.prod"),
    (lambda s: signed_in(s, "demo-reader@contoso.example"), 403, "needs the app role Approver.prod"),
    (lambda s: token(s, app_only=True), 403, "is a person's decision"),
], ids=["none", "unsigned", "other-key", "expired", "other-audience", "other-tenant", "role-removed",
        "reader", "app-only"])
def test_a_token_that_does_not_prove_an_approver_is_refused_and_nothing_changes(
        stack: Any, make_token: Any, status: int, why: str) -> None:
    run_id = seed_run(stack)
    before = stack.deps().registry.require_run(run_id)
    answer, body = call(stack, "POST", f"runs/{run_id}/approve", make_token(stack), approve_body())
    assert answer == status and why in body["error"]["message"]
    after = stack.deps().registry.require_run(run_id)
    assert (after.state, after.approvals, after.etag) == (before.state, {}, before.etag)
    if status == 401:   # nobody verified: counted (shared.operator.unverified), no record and no event of its own
        assert refusals(stack, run_id) == [] and stack.deps().registry.audit_trail(run_id)[-1]["action"] == "run.created"
        return
    [refusal] = refusals(stack, run_id)
    assert refusal["detail"]["status"] == status and why in refusal["detail"]["reason"]
    # who tried: the verified caller
    subjects = {OPERATOR.oid, USERS["demo-reader@contoso.example"].oid}
    assert any(oid in refusal["actor"] for oid in subjects) and not refusal["actor"].startswith("unverified:")


def test_the_owner_cannot_approve_their_own_run(stack: Any) -> None:
    run_id = seed_run(stack, owner=OPERATOR.oid)
    answer, body = call(stack, "POST", f"runs/{run_id}/approve", signed_in(stack), approve_body())
    assert answer == 403 and "four eyes" in body["error"]["message"]
    assert stack.deps().registry.require_run(run_id).approvals == {}
    [refusal] = refusals(stack, run_id)
    assert refusal["actor"] == f"{OPERATOR.name} <{OPERATOR.oid}>" and refusal["detail"]["who"]["verified"] is True


def test_an_approve_on_the_commands_queue_is_dead_lettered_with_a_reason(stack: Any) -> None:
    from shared.run.messages import ApproveCommand, envelope
    deps = stack.deps()
    run_id = seed_run(stack)
    command = ApproveCommand(run_id=run_id, environment="prod", approver="demo-operator@contoso.example", ticket="X")
    deps.publisher.send(deps.settings.commands_queue, envelope(command, type_="ftops.command.approve"))
    letters = wait_for(lambda: dead_letters(stack, deps.settings.commands_queue))
    assert letters[0]["reason"] == "OperatorActionNotAccepted"
    assert "operator API" in letters[0]["description"] and "cannot prove who sent it" in letters[0]["description"]
    assert deps.registry.require_run(run_id).state == states.awaiting_approval("prod")
    [refusal] = refusals(stack, run_id)
    assert refusal["actor"] == "unverified: demo-operator@contoso.example via ftops-commands"


def test_an_approval_prepared_for_model_a_does_not_approve_or_deploy_model_b(stack: Any) -> None:
    deps = stack.deps()
    run_id = seed_run(stack)
    operator = signed_in(stack)
    status, view = call(stack, "GET", f"runs/{run_id}", operator)
    assert status == 200 and view["candidate"]["model"] == MODEL_A
    prepared = approve_body(view["candidate"]["model"])
    # the run is retrained meanwhile: a new model waits for approval, old approvals are gone
    run = deps.registry.require_run(run_id)
    run.chosen_model = run.fine_tuned_model = MODEL_B
    deps.registry.save_run(run)
    status, body = call(stack, "POST", f"runs/{run_id}/approve", operator, prepared)   # replayed / stale
    assert status == 409 and MODEL_A in body["error"]["message"] and MODEL_B in body["error"]["message"]
    assert deps.registry.require_run(run_id).approvals == {}
    [refusal] = refusals(stack, run_id)
    assert refusal["actor"] == f"{OPERATOR.name} <{OPERATOR.oid}>" and refusal["detail"]["status"] == 409
    # a replayed deploy request for prod goes nowhere without an approval of the model it would deploy
    from shared.run.messages import DeployRequest, envelope
    deps.publisher.send(deps.settings.deploy_queue, envelope(DeployRequest(run_id=run_id, environment="prod")))
    letters = wait_for(lambda: [m for m in dead_letters(stack, deps.settings.deploy_queue) if run_id in json.dumps(m)])
    assert "requires an approval" in letters[0]["description"]
    assert not [d for d in stack.emulator_state()["deployments"] if d["deployment"] == run_id]


def test_reads_show_the_run_with_its_audit_trail_to_readers_only(stack: Any) -> None:
    run_id = seed_run(stack)
    status, view = call(stack, "GET", f"runs/{run_id}", signed_in(stack, "demo-reader@contoso.example"))
    assert status == 200 and view["state"] == "awaiting_approval:prod" and view["audit"][0]["action"] == "run.created"
    assert "reports" in view and view["candidate"]["dataset_hash"] == "sha256:d1"
    assert view["caller"]["may_approve"] == [] and view["caller"]["oid"] == USERS["demo-reader@contoso.example"].oid
    status, listed = call(stack, "GET", "runs", signed_in(stack))
    assert status == 200 and run_id in {r["run_id"] for r in listed["runs"]}
    status, _ = call(stack, "GET", "runs", token(stack, roles=[]))
    assert status == 403


def test_deployments_are_listed_with_their_cost_to_readers_only(stack: Any) -> None:
    from shared.store.registry import DeploymentRecord
    run_id = seed_run(stack)
    stack.deps().registry.save_deployment(DeploymentRecord(
        environment="prod", account="ftops-prod-eastus", deployment=run_id, region="eastus", subscription="s",
        resource_group="rg", run_id=run_id, model=MODEL_A, sku="standard"))
    status, listed = call(stack, "GET", "deployments", signed_in(stack, "demo-reader@contoso.example"))
    [mine] = [d for d in listed["deployments"] if d["run_id"] == run_id]
    assert status == 200 and mine["region"] == "eastus" and mine["per_day"] > 0 and mine["etag"] is None
    assert listed["total_per_day"] >= mine["per_day"]
    status, _ = call(stack, "GET", "deployments", token(stack, roles=[]))
    assert status == 403


def dead_letters(stack: Any, queue: str) -> list[dict[str, Any]]:
    from ftops_cli.demo import dead_letters as all_letters
    return [m for m in all_letters(stack.env["AzureWebJobsStorage"]) if m["queue"] == queue]


def wait_for(probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail("nothing arrived in time")


def test_a_command_the_api_does_not_offer_is_404_in_the_apis_error_shape(stack: Any) -> None:
    run_id = seed_run(stack)
    for path, offered in ((f"runs/{run_id}/launch", "approve"), ("environments/prod/deploy", "rollback")):
        status, answer = call(stack, "POST", path, signed_in(stack), {})
        assert status == 404 and answer["error"]["status"] == 404
        assert path.rsplit("/", 1)[1] in answer["error"]["message"] and offered in answer["error"]["message"]
    assert refusals(stack, run_id) == [] and stack.deps().registry.require_run(run_id).state == "awaiting_approval:prod"


def test_a_run_started_through_the_api_has_the_verified_caller_as_its_starter_and_owner(stack: Any) -> None:
    from pathlib import Path
    deps = stack.deps()
    name = f"started-{uuid.uuid4().hex[:6]}.jsonl"
    sample = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"
    deps.blobs.get_blob_client(deps.settings.datasets_container, name).upload_blob(sample.read_bytes())
    status, body = call(stack, "POST", "runs", None, {"blob": f"datasets/{name}"})
    assert status == 401
    status, body = call(stack, "POST", "runs", signed_in(stack, "demo-reader@contoso.example"), {"blob": name})
    assert status == 403 and "Operator" in body["error"]["message"]
    # settings of its own: the stack's blob trigger may already have made the upload a run of its own (intake)
    started = {"blob": f"datasets/{name}", "settings": {"seed": 7}}
    status, body = call(stack, "POST", "runs", signed_in(stack), started)
    assert status == 202, body
    assert body["started_by"]["oid"] == OPERATOR.oid and body["owner"] == OPERATOR.oid and body["owner_confirmed"]
    run = deps.registry.require_run(body["run_id"])
    assert (run.started_by, run.claimed_by, run.owner) == (OPERATOR.oid, OPERATOR.oid, OPERATOR.oid)
    created = deps.registry.audit_trail(run.run_id)[0]
    assert created["action"] == "run.created" and created["actor"] == f"{OPERATOR.name} <{OPERATOR.oid}>"
    status, again = call(stack, "POST", "runs", signed_in(stack), started)
    assert status == 409 and f"already is your run {run.run_id}" in again["error"]["message"]


def test_an_over_long_or_malformed_run_id_is_a_400_in_the_apis_shape_never_a_500(stack: Any) -> None:
    operator = signed_in(stack)
    for run_id in ("r" * 20_000, "a%2Fb", "x'--"):
        status, body = call(stack, "GET", f"runs/{run_id}", operator)
        assert status == 400 and body["error"]["status"] == 400 and "is not a run id" in body["error"]["message"]
        assert len(body["error"]["message"]) < 300
        status, body = call(stack, "POST", f"runs/{run_id}/approve", operator, approve_body())
        assert status == 400 and body["error"]["status"] == 400
    # the console, signed in, on the same id: a page saying so, not a server error
    request = urllib.request.Request(f"{stack.api_url}/console/runs/{'r' * 20_000}",
                                     headers={"Cookie": f"ftops_console={operator}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 400 and "is not a run id" in refused.value.read().decode()


def evaluated_report(run_id: str) -> dict[str, Any]:
    """An evaluation report as the evaluation stage builds it (40 held-out examples, final vs base)."""
    from shared.evaluation.examples import Example
    from shared.evaluation.gates import Gate
    from shared.evaluation.metrics import aggregate, score
    from shared.evaluation.report import build_report
    from shared.evaluation.runner import Candidate
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}")
                for i in range(40)]
    cands = [Candidate("final", "final", MODEL_A, "d1"), Candidate("base", "base", "gpt-4.1-mini", "d2")]
    results = {"final": [score(i, f"a{i}", f"a{i}", latency_ms=90) for i in range(40)],
               "base": [score(i, "no idea", f"a{i}", latency_ms=80) for i in range(40)]}
    return build_report(run_id=run_id, base_model="gpt-4.1-mini", fine_tuned_model=MODEL_A, eval_path="eval.jsonl",
                        examples=examples, available=40, skipped_lines=[], candidates=cands, results=results,
                        metrics={k: aggregate(v) for k, v in results.items()}, skipped_candidates=[],
                        chosen=cands[0], gates=[Gate("min_score", 1.0, 0.5, True, "ok")], training_metrics=None,
                        lineage={"dataset_hash": "d1", "approvals": {}})


def test_an_approval_given_through_the_api_is_in_the_report_a_reviewer_opens(stack: Any) -> None:
    """Issue 19, item 6 (approvals once given): before, the report was rendered once, at evaluation time, and
    kept saying 'approvals: none yet'. The evidence it was given on stays byte for byte what its hash names."""
    from shared.stages.evaluation import _write_reports
    deps = stack.deps()
    run_id = seed_run(stack)
    _write_reports(deps, run_id, evaluated_report(run_id))
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    evidence = reports.download_blob(f"{run_id}/evaluation.json").readall()
    operator = signed_in(stack)
    status, view = call(stack, "GET", f"runs/{run_id}", operator)
    status, body = call(stack, "POST", f"runs/{run_id}/approve", operator,
                        {**approve_body(), "evaluation_report_hash": view["candidate"]["evaluation_report_hash"]})
    assert status == 202, body
    # what a reviewer opens: the console's report page (the same blob `ftops report` fetches)
    request = urllib.request.Request(f"{stack.api_url}/console/runs/{run_id}/reports/evaluation.html",
                                     headers={"Cookie": f"ftops_console={operator}"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        page = answer.read().decode()
    lineage = page[page.index("<h2>Lineage</h2>"):]
    lineage = lineage[: lineage.index("<h2>", 4)]
    assert "approved" in lineage and "CHG-9" in lineage and OPERATOR.oid in lineage and "lineage version 2" in lineage
    assert "none yet" not in page
    assert reports.download_blob(f"{run_id}/evaluation.json").readall() == evidence
    status, view = call(stack, "GET", f"runs/{run_id}", operator)
    approval_id = view["approvals"]["prod"]["approval_id"]
    assert view["report_lineage"]["decisions"] == [f"approval:{approval_id}"] and view["report_lineage"]["missing"] == []
    assert view["report_lineage"]["version"] == 2
    assert approval_id in reports.download_blob(f"{run_id}/evaluation-lineage.json").readall().decode()
    assert "evaluation-lineage.json" in view["reports"]
