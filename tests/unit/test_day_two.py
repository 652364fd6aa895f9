"""Day two: a model's second trip — retrain, rollback, retire — against the slot history (in-memory fakes).

Each test walks what a new user walked in issue 20 and asserts what they would notice: what the spokes
serve, the run's state, what the refusal tells them to do."""
from __future__ import annotations

from typing import Any

import pytest
import test_deployment
from fakes import MemoryDeps
from test_deployment import MODEL, OLD, PROD, FakeSpokes, add_run, caller, to_prod_gate

from shared.app.settlement import PermanentError
from shared.run import states
from shared.run.messages import DeployRequest, RollbackCommand, RunCommand
from shared.stages import approvals, deployment, rollback

RETRAINED = "gpt-4.1-mini-2025-04-14.ft-retrained"
world = test_deployment.world   # the same fixture: the demo spokes, fake spokes, in-memory registry


def to_prod(deps: MemoryDeps, run_id: str, model: str) -> None:
    """dev → test → approved → prod for the run's current model."""
    to_prod_gate(deps, run_id)
    approvals.approve(deps, caller(), run_id, "prod", ticket=f"CHG-{run_id}", model=model)
    deployment.handle_deploy(DeployRequest(run_id=run_id, environment="prod"), deps)
    assert deps.registry.runs[run_id].state == "deployed:prod"


def two_runs_in_prod(deps: MemoryDeps) -> None:
    """run-a (model OLD) reached prod first, then run-b (MODEL) under the same deployment name."""
    add_run(deps, "run-a", model=OLD)
    to_prod(deps, "run-a", OLD)
    add_run(deps, "run-b", model=MODEL)
    to_prod(deps, "run-b", MODEL)


def retrained(deps: MemoryDeps, run_id: str, model: str) -> None:
    """What retrain → train → evaluate leave on the run (shared.stages.training.retrain_run empties approvals)."""
    run = deps.registry.runs[run_id]
    run.state, run.chosen_model, run.approvals = states.EVALUATED, model, {}


def serving(fake: FakeSpokes, accounts: tuple[str, ...] = PROD) -> set[str]:
    return {fake.served[(a, "support-bot")]["model"] for a in accounts if (a, "support-bot") in fake.served}


def test_rollback_after_a_retrain_goes_back_to_the_runs_own_earlier_model(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-1", model=OLD)
    to_prod(deps, "run-1", OLD)
    retrained(deps, "run-1", RETRAINED)
    to_prod(deps, "run-1", RETRAINED)
    assert serving(fake) == {RETRAINED}
    command = RollbackCommand(environment="prod", run_id="run-1", requested_by="ops@x", reason="worse answers")
    rollback.rollback(command, deps)   # before: 409 "had no model before run run-1; retire the run instead"
    assert serving(fake) == {OLD}
    assert deps.registry.runs["run-1"].state == "rolled_back:prod"
    history = deps.registry.slot_history("prod", account=PROD[0])
    assert [(e.model, e.came, e.serving) for e in history] == [
        (OLD, "deployed", False), (RETRAINED, "deployed", False), (OLD, "rolled back to", True)]
    assert history[0].ticket == "CHG-run-1" and history[2].ticket == "CHG-run-1"   # approved, and by whom
    assert "worse answers" in (history[1].left or "") and not history[1].healthy
    puts = len(fake.puts)
    rollback.rollback(command, deps)   # a repeat: the run's current model is out already
    assert len(fake.puts) == puts and serving(fake) == {OLD}
    with pytest.raises(PermanentError, match="nothing to go back to") as refused:   # never back to the bad one
        rollback.rollback(RollbackCommand(environment="prod", deployment="support-bot"), deps)
    assert "retire run run-1" in str(refused.value)


def test_a_rollback_never_brings_back_a_retired_model_and_says_what_to_do(world: Any) -> None:
    deps, fake = world
    two_runs_in_prod(deps)
    rollback.retire(RunCommand(run_id="run-a", requested_by="ops@x", reason="leaks PII"), deps)
    assert deps.registry.runs["run-a"].state == states.RETIRED and serving(fake) == {MODEL}
    with pytest.raises(PermanentError) as refused:   # before: prod served run-a's model again
        rollback.rollback(RollbackCommand(environment="prod", run_id="run-b"), deps)
    message = str(refused.value)
    assert "nothing to go back to" in message and "retired" in message and "retire run run-b" in message
    assert serving(fake) == {MODEL} and deps.registry.runs["run-b"].state == "deployed:prod"


def test_retire_removes_a_retired_runs_model_that_serves_again(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-a", model=OLD)
    to_prod(deps, "run-a", OLD)
    deps.registry.runs["run-a"].state = states.RETIRED   # retired while a restore put its model back (before #20)
    assert serving(fake) == {OLD}
    rollback.retire(RunCommand(run_id="run-a", requested_by="ops@x", reason="leaks PII"), deps)   # before: a no-op
    assert serving(fake) == set() and not deps.registry.list_deployments(run_id="run-a", state="active")
    assert all(e.retired and not e.serving for e in deps.registry.slot_history(run_id="run-a"))
    assert "deployment.retired" in deps.registry.actions("run-a")


def test_a_rollback_never_restores_a_denied_model(world: Any) -> None:
    deps, fake = world
    add_run(deps, "run-x", model=OLD)
    to_prod_gate(deps, "run-x")
    approvals.reject(deps, caller(), "run-x", "prod", reason="too risky")
    add_run(deps, "run-y", model=MODEL)
    to_prod_gate(deps, "run-y")   # test now serves run-y, replacing denied run-x
    with pytest.raises(PermanentError, match="denied"):
        rollback.rollback(RollbackCommand(environment="test", run_id="run-y"), deps)
    assert {fake.served[(a, "support-bot")]["model"] for a, n in fake.served if a.startswith("ftops-test")} == {MODEL}


def test_rollback_of_another_runs_model_restores_it_and_the_rolled_back_run_says_so(world: Any) -> None:
    deps, fake = world
    two_runs_in_prod(deps)
    rollback.rollback(RollbackCommand(environment="prod", run_id="run-b", requested_by="ops@x"), deps)
    assert serving(fake) == {OLD}
    assert deps.registry.runs["run-b"].state == "rolled_back:prod"   # before: still "deployed:prod"
    assert "deployment.restored" in deps.registry.actions("run-a")
    rollback.retire(RunCommand(run_id="run-b"), deps)   # what is left of run-b (dev, test: its slots) goes
    assert deps.registry.runs["run-b"].state == states.RETIRED and serving(fake) == {OLD}


# --- approvals are records: one wins -----------------------------------------------------------------------
SECOND = "6f1c2d3e-0000-4000-8000-0000000000c3"   # the other approver listed for prod


def test_two_approvals_in_the_same_second_one_wins_and_the_audit_and_event_name_it(world: Any) -> None:
    import json
    import threading

    from test_deployment import FixedVerifier

    from shared.operator.api import handle
    deps, _ = world
    add_run(deps, "run-1")
    to_prod_gate(deps, "run-1")
    answers: dict[str, Any] = {}
    start = threading.Barrier(2)

    def approve_as(oid: str, ticket: str) -> None:
        who = FixedVerifier(caller(oid))
        start.wait()
        answers[oid] = handle("approve", authorization="Bearer t", params={"run_id": "run-1"}, deps=deps,
                              verifier=who, body=json.dumps({"environment": "prod", "ticket": ticket,
                                                             "model": MODEL}).encode())
    threads = [threading.Thread(target=approve_as, args=(oid, t)) for oid, t in ((caller().oid, "CHG-1"),
                                                                               (SECOND, "CHG-2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(a.status for a in answers.values())
    assert statuses == [202, 409], {k: (a.status, a.body) for k, a in answers.items()}
    winner = next(oid for oid, a in answers.items() if a.status == 202)
    loser = next(oid for oid, a in answers.items() if a.status == 409)
    kept = deps.registry.runs["run-1"].approvals["prod"]
    assert kept["approver_oid"] == winner and winner in answers[loser].body["error"]["message"]
    granted = [a for a in deps.registry.audits if a["action"] == "approval.granted"]
    assert len(granted) == 1 and winner in granted[0]["actor"] and granted[0]["detail"]["approval_id"] == kept["approval_id"]
    events = [e for _, e in deps.publisher.sent if e.type == "ftops.run.approved"]
    assert len(events) == 1 and events[0].data["approver_oid"] == winner
    attempts = deps.registry.approval_attempts("run-1")
    assert sorted(a.outcome for a in attempts) == ["granted", "lost"] and all("." in a.at for a in attempts)
    assert {a.approver_oid for a in attempts} == {winner, loser} and len({a.attempt_id for a in attempts}) == 2


def test_a_second_approver_after_the_first_is_told_who_approved(world: Any) -> None:
    deps, _ = world
    add_run(deps, "run-1")
    to_prod_gate(deps, "run-1")
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)
    with pytest.raises(approvals.ApprovalConflict, match="already approved") as lost:
        approvals.approve(deps, caller(SECOND), "run-1", "prod", ticket="CHG-2", model=MODEL)
    assert "CHG-1" in str(lost.value)
    assert deps.registry.runs["run-1"].approvals["prod"]["ticket"] == "CHG-1"
    again = approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)   # a repeat: same
    assert again["ticket"] == "CHG-1" and [a["actor"] for a in deps.registry.audits
                                           if a["action"] == "approval.granted"] == [f"Someone <{caller().oid}>"]


# --- runs that can never progress ----------------------------------------------------------------------
def test_a_bare_drop_that_stops_before_prod_says_why_and_is_retired_after_the_wait(world: Any) -> None:
    from datetime import datetime, timedelta

    from ftops_cli.status import collect, render_table
    from shared.stages.retirement import plan
    deps, _ = world
    add_run(deps, "bare", owner="")
    bare = deps.registry.runs["bare"]
    bare.owner, bare.settings, bare.environments = None, {"deployment_name": "bare"}, ["dev", "test"]
    to_prod_gate(deps, "bare")
    bare = deps.registry.runs["bare"]
    assert bare.state == "deployed:test" and bare.terminal and bare.state_since
    view = collect(deps)   # before: WHY "-" (it reached its own last environment)
    assert "cannot progress: stops at test: prod needs an approval" in render_table(view)
    assert "names the owner" in view["runs"][0]["reason"]
    entered = datetime.fromisoformat(bare.state_since)   # type: ignore[arg-type]
    bare.updated_at = (entered + timedelta(days=7)).isoformat()   # saved since (an outbox flush): no new clock
    slots = deps.registry.list_deployments(run_id="bare")
    topology = deps.require_topology()
    assert not plan(topology, {"bare": bare}, slots, entered + timedelta(days=6))
    going = plan(topology, {"bare": bare}, slots, entered + timedelta(days=8))
    assert {r.reason for r in going} == {"cannot_progress"} and len(going) == 4
    assert "no owner" not in going[0].detail and "never have one" in going[0].detail


def test_the_approval_wait_is_counted_from_entering_the_waiting_state(world: Any) -> None:
    from datetime import datetime, timedelta

    from shared.stages.retirement import plan
    deps, _ = world
    add_run(deps, "waiting")
    to_prod_gate(deps, "waiting")
    run = deps.registry.runs["waiting"]
    entered = datetime.fromisoformat(run.state_since)   # type: ignore[arg-type]
    run.updated_at = (entered + timedelta(days=6)).isoformat()   # a refused approval attempt wrote the run later
    going = plan(deps.require_topology(), {"waiting": run}, deps.registry.list_deployments(run_id="waiting"),
                 entered + timedelta(days=8))
    assert {r.reason for r in going} == {"awaiting_approval_expired"}   # before: 2 days "waited", kept billing


# --- a repeat drop's job -----------------------------------------------------------------------------------
def test_a_job_whose_results_file_is_gone_is_trained_without_metrics_not_stuck() -> None:
    from fakes import MemoryRegistry
    from test_polling_tick import FakeHub, make_deps, training_run

    from shared.azure.hub import HubJob, HubNotFound
    from shared.stages.polling import poll_tick

    class Tidied(FakeHub):
        def results_metrics(self, file_id: str) -> dict[str, Any]:
            raise HubNotFound(f"file {file_id} not found", status=404)

    registry = MemoryRegistry()
    training_run(registry, "again", "j1", job_status="running")
    hub = Tidied({"j1": HubJob(id="j1", status="succeeded", model="m", fine_tuned_model="m.ft-x",
                                result_files=["file-results"])})
    deps = make_deps(registry, hub)
    assert poll_tick(deps).outcomes == {"succeeded": 1}   # before: an error on every tick, `training` for good
    run = registry.require_run("again")
    assert run.state == states.TRAINED and run.fine_tuned_model == "m.ft-x" and run.metrics["steps"] == 0
    trained = next(a for a in registry.audits if a["to_state"] == states.TRAINED)
    assert "file-results" in trained["detail"]["results_file"]


# --- the console offers what the API would allow, and says what will change ------------------------------
def console_page(deps: MemoryDeps, run_id: str, *, method: str = "GET", action: str | None = None,
                 env: str | None = None) -> str:
    from test_console import FakeApi, request, serve

    from shared.operator.api import get_run
    from shared.operator.console.app import csrf_for
    operator = caller(roles=("Operator", "Reader"))
    view = get_run(operator, {"run_id": run_id}, b"", deps).body
    if action is None:
        return serve("run", request(f"/runs/{run_id}", params={"run_id": run_id}), deps=deps, who=operator,
                     get_run=(200, view)).body.decode()
    params = {"action": action, **({"environment": env} if env else {"run_id": run_id})}
    answer = serve("act", request("/x", method="POST", params=params,
                                  body=f"form_token={csrf_for('header.payload.signature')}&run_id={run_id}".encode()),
                   deps=deps, who=operator, get_run=(200, view))
    assert [c[0] for c in FakeApi.calls] == ["get_run"]   # a confirmation page: nothing done yet
    return answer.body.decode()


def test_the_console_offers_rollback_only_where_it_would_be_done_and_shows_what_comes_back(world: Any) -> None:
    deps, _ = world
    two_runs_in_prod(deps)
    assert "Roll back prod…" in console_page(deps, "run-b")
    confirm = console_page(deps, "run-b", action="rollback", env="prod")
    assert "Roll back prod?" in confirm and f"{OLD} (run run-a)" in confirm and "westeurope" in confirm
    rollback.retire(RunCommand(run_id="run-a"), deps)
    page = console_page(deps, "run-b")
    assert "Roll back prod…" not in page and "No rollback of prod: " in page and "retired" in page


def test_get_run_says_what_each_environment_serves_now_including_the_runs_earlier_model(world: Any) -> None:
    from shared.operator.api import get_run
    deps, _ = world
    add_run(deps, "run-1", model=OLD)
    to_prod(deps, "run-1", OLD)
    retrained(deps, "run-1", RETRAINED)
    to_prod_gate(deps, "run-1")   # the retrained model waits for prod's approval
    view = get_run(caller(roles=("Reader",)), {"run_id": "run-1"}, b"", deps).body
    prod = view["serving_now"]["prod"]
    assert {(d["model"], d["whose"]) for d in prod} == {(OLD, "this run's earlier model")} and len(prod) == 2
    assert prod[0]["ticket"] == "CHG-run-1" and prod[0]["since"]   # approved, and since when
    assert {d["whose"] for d in view["serving_now"]["test"]} == {"this run's current model"}


# --- CLI parity ---------------------------------------------------------------------------------------------
def test_an_explicit_api_url_wins_over_a_running_local_stack_and_the_target_is_printed(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ftops_cli.operate import run_api
    from ftops_cli.target import described, resolve, write_state
    state = tmp_path / "local-stack.json"
    write_state(state, env={"DatasetStorage": "conn", "FTOPS_API_URL": "http://127.0.0.1:5/api"},
                api_url="http://127.0.0.1:5/api", reports_dir=None)
    target = resolve(None, {"FTOPS_API_URL": "https://func-x.azurewebsites.net/api"}, state=state)
    assert "FTOPS_API_URL" not in target.env   # before: the local stack's API replaced the one the user set
    assert "https://func-x.azurewebsites.net/api" in target.where
    env_file = tmp_path / "ftops.env"
    env_file.write_text("DatasetStorage=x\nFTOPS_API_URL=https://func-y.azurewebsites.net/api\n")
    named = resolve(str(env_file), {})
    assert described(named, named.env) == f"the environment in {env_file}; operator API https://func-y.azurewebsites.net/api"

    class Answering:
        api_url = "https://func-y.azurewebsites.net/api"

        def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
            from ftops_cli.operator_client import ApiError
            raise ApiError(409, "nothing to go back to")
    refused = run_api(argparse.Namespace(command_name="rollback", env="prod", run_id=None, deployment=None,
                                         reason=None, json=False), Answering())
    assert refused == 1 and "refused (409) by the operator API at https://func-y" in capsys.readouterr().err


def test_ftops_history_prints_each_model_a_slot_served_and_why_it_left(world: Any,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ftops_cli import history
    deps, _ = world
    two_runs_in_prod(deps)
    rollback.rollback(RollbackCommand(environment="prod", run_id="run-b", requested_by="ops@x", reason="worse"), deps)
    assert history.run(argparse.Namespace(environment="prod", deployment=None, json=False), deps=deps) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["REGION", "DEPLOYMENT", "MODEL", "RUN"] and len(lines) == 1 + 6
    newest = lines[1]
    assert OLD in newest and "run-a" in newest and "serving" in newest and "rolled back to" in newest
    assert any(MODEL in line and "rolled back by ops@x: worse [unhealthy]" in line for line in lines)
    assert any("CHG-run-a" in line and "replaced by run run-b" in line for line in lines)


def test_ftops_drop_uploads_a_run_folder_with_run_json_last(tmp_path: Any, world: Any) -> None:
    import argparse

    from ftops_cli import drop
    deps, _ = world
    folder = tmp_path / "support"
    folder.mkdir()
    for name in ("run.json", "train.jsonl", "eval.jsonl"):
        (folder / name).write_text("{}\n")
    assert drop.run(argparse.Namespace(path=str(folder), name=None), deps=deps) == 0
    assert [n for (c, n) in deps.blobs.data if c == "datasets"] == [
        "support/eval.jsonl", "support/train.jsonl", "support/run.json"]
    with pytest.raises(Exception, match="no run.json"):
        drop.plan(tmp_path)


def test_ftops_train_of_a_blob_that_already_is_a_run_says_so(world: Any) -> None:
    """`ftops train` is POST runs (the verified starter, issue 21): the operator API refuses it, naming the run."""
    from shared.azure.access import Caller
    from shared.operator.api import handle
    from shared.stages.intake import drop_started_by, run_id_for
    deps, _ = world
    deps.blobs.data[("datasets", "support.jsonl")] = b'{"messages": []}\n'
    etag = deps.blobs.get_blob_client("datasets", "support.jsonl").get_blob_properties().etag
    run_id = run_id_for(drop_started_by("support.jsonl"), etag)   # type: ignore[arg-type]
    add_run(deps, run_id, state="deployed:test")   # the blob trigger started it when it was uploaded

    class Operator:
        def verify(self, authorization: str | None) -> Caller:
            return Caller(oid=test_deployment.APPROVER, tenant="tenant-contoso", name="Ops", roles=frozenset({"Operator"}))

    answer = handle("train", authorization="Bearer t", params={}, body=b'{"blob": "datasets/support.jsonl"}',
                    deps=deps, verifier=Operator())
    assert answer.status == 409   # before: sent, and intake silently did nothing
    assert f"already is run {run_id}, deployed:test; `ftops retrain {run_id}" in answer.body["error"]["message"]


# --- a console operators recognise --------------------------------------------------------------------------
def test_the_run_page_has_a_stage_strip_and_a_timeline_in_words_newest_first(world: Any) -> None:
    import re
    deps, _ = world
    two_runs_in_prod(deps)
    rollback.rollback(RollbackCommand(environment="prod", run_id="run-b", requested_by="Ops <oid-ops>",
                                      reason="worse answers"), deps)
    page = console_page(deps, "run-b")
    strip = dict(re.findall(r'<li class="([a-z-]+)" title="[^"]*"><b>([a-z]+)</b>', page)[i][::-1]
                 for i in range(7))
    assert strip == {"received": "done", "validated": "done", "trained": "done", "evaluated": "done",
                     "dev": "done", "test": "done", "prod": "rolled-back"}
    timeline = page[page.index("id=timeline"):]
    said = re.findall(r'<span title="[^"]+">([^<]+)</span>', timeline)
    assert said[0] == ("this run&#x27;s model was rolled back out of prod by Ops &lt;oid-ops&gt;")
    assert f"Ops &lt;oid-ops&gt; rolled prod back from {MODEL} to {OLD} of run run-a: worse answers" in said
    assert f"Someone &lt;{caller().oid}&gt; approved {MODEL} into prod (ticket CHG-run-b)" in said
    assert said.index(f"Someone &lt;{caller().oid}&gt; approved {MODEL} into prod (ticket CHG-run-b)") > 0
    assert "{" not in "".join(said)   # no raw JSON
    assert 'class=copy readonly value="run-b"' in page


def test_the_runs_list_shows_why_score_and_cost_with_relative_times() -> None:
    from test_console import OPERATOR, request, run_summary, serve
    row = {**run_summary("support-bot-0123456789abcdef", "deployed:test", terminal=True),
           "why": "cannot progress: stops at test", "score": 0.7661, "per_day": 163.2,
           "updated_at": "2020-01-01T00:00:00Z"}
    page = serve("runs", request("/"), who=OPERATOR, list_runs=(200, {"runs": [row]})).body.decode()
    body = page[page.index("<tbody>"):]
    assert "cannot progress: stops at test" in body and "0.766" in body and "163.20" in body
    assert ' ago</time>' in body and 'title="support-bot-0123456789abcdef">support-bot-01…abcdef</a>' in body


def test_the_deployments_page_hides_retired_ones_and_shows_each_environments_history(world: Any) -> None:
    from test_console import request, serve

    from shared.operator import api
    deps, _ = world
    two_runs_in_prod(deps)
    rollback.rollback(RollbackCommand(environment="prod", run_id="run-b", requested_by="ops@x", reason="worse"), deps)
    rollback.retire(RunCommand(run_id="run-b"), deps)   # its dev and test slots go
    reader = caller(roles=("Reader",))
    listed = api.list_deployments(reader, {}, b"", deps).body
    histories = {env: api.history(reader, {"environment": env}, b"", deps).body for env in ("dev", "test", "prod")}

    page = serve("deployments", request("/deployments"), who=reader, deps=deps, list_deployments=(200, listed),
                 history=(200, histories["prod"])).body.decode()
    assert "4 retired hidden" in page   # run-b's dev and test slots: before, listed with the live ones
    prod = page[page.index('id="history-prod"'):]
    assert prod.count("<td>serving</td><td>rolled back to</td>") == 2
    assert prod.count("rolled back by ops@x: worse [retired] [unhealthy]") == 2


def test_a_new_evaluation_report_is_a_new_decision_that_can_be_approved(world: Any) -> None:
    deps, _ = world
    add_run(deps, "run-1")
    deps.blobs.data[("reports", "run-1/evaluation.json")] = b'{"passed": true}'
    to_prod_gate(deps, "run-1")
    approvals.approve(deps, caller(), "run-1", "prod", ticket="CHG-1", model=MODEL)
    deps.blobs.data[("reports", "run-1/evaluation.json")] = b'{"passed": true, "again": 1}'   # voids that approval
    again = approvals.approve(deps, caller(SECOND), "run-1", "prod", ticket="CHG-2", model=MODEL)
    assert again["approver_oid"] == SECOND and deps.registry.runs["run-1"].approvals["prod"]["ticket"] == "CHG-2"


def test_the_stage_strip_stops_where_the_run_stopped() -> None:
    import re

    from shared.operator.console.story import stage_strip

    def strip(state: str, reached: list[str]) -> dict[str, str]:
        audit = [{"at": f"2026-01-01T00:0{i}:00Z", "to_state": s} for i, s in enumerate(reached)]
        run = {"state": state, "created_at": "2026-01-01T00:00:00Z", "environments": ["dev", "test", "prod"],
               "audit": audit}
        return {label: cls for cls, label in re.findall(r'<li class="([a-z-]+)" title="[^"]*"><b>([a-z]+)</b>',
                                                        stage_strip(run))}
    denied = strip("approval_denied", ["accepted", "trained", "evaluated", "deployed:dev", "deployed:test"])
    assert (denied["test"], denied["prod"]) == ("done", "failed")
    rejected = strip("rejected", [])
    assert (rejected["validated"], rejected["trained"], rejected["prod"]) == ("failed", "next", "next")
    deploying = strip("deploying:test", ["accepted", "trained", "evaluated", "deployed:dev"])
    assert (deploying["dev"], deploying["test"], deploying["prod"]) == ("done", "now", "next")
    assert '<b>trained</b><span>60 s</span>' in stage_strip({"state": "trained", "created_at": "2026-01-01T00:00:00Z",
                                                              "environments": [], "audit": [
        {"at": "2026-01-01T00:01:00Z", "to_state": "accepted"}, {"at": "2026-01-01T00:02:00Z", "to_state": "trained"}]})


def test_a_rollback_that_changes_nothing_says_so_instead_of_a_plain_200(world: Any) -> None:
    from shared.operator.api import rollback_environment
    deps, fake = world
    two_runs_in_prod(deps)
    rollback.retire(RunCommand(run_id="run-a"), deps)   # retired: it serves nothing
    operator = caller(roles=("Operator",))
    answer = rollback_environment(operator, {"environment": "prod"}, b'{"run_id": "run-a"}', deps)
    assert answer.status == 200 and answer.body["changed"] is False
    assert "run run-a's current model serves nowhere in prod" in answer.body["note"]
    assert serving(fake) == {MODEL}   # nothing moved (before: the same 200 as a rollback that did something)
