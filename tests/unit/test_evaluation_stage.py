"""handle_evaluate with in-memory fakes for the registry, blobs, ARM and the model (no I/O)."""
from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from fakes import MemoryDeps, make_deps, with_chat

from shared.azure.arm_deployments import DeploymentTransient
from shared.azure.chat import ChatReply
from shared.evaluation.examples import Example
from shared.run import states
from shared.run.messages import EvaluateRequest, deploy_message_id, envelope, evaluate_message_id
from shared.stages.evaluation import handle_evaluate
from shared.store.registry import RunRecord

QA = {f"What is fact {i}?": f"Fact {i} is number {i * 7}" for i in range(60)}


class FakeArm:
    def __init__(self, refuse: dict[str, int] | None = None, codes: dict[str, str] | None = None) -> None:
        self.live: dict[str, str] = {}
        self.refuse = refuse or {}
        self.codes = codes or {}   # name fragment → ARM error code of the refusal
        self.created: list[tuple[str, str, str]] = []
        self.deployments = self

    def begin_create_or_update(self, rg: str, account: str, name: str, body: Any, **kw: Any) -> Any:
        for fragment, status in self.refuse.items():
            if fragment in name:
                error = HttpResponseError(message=f"refused {name}", response=SimpleNamespace(
                    status_code=status, reason="x", headers={}, text=lambda: "", request=None))
                if fragment in self.codes:
                    error.error = SimpleNamespace(code=self.codes[fragment], message=f"refused {name}")
                raise error
        self.live[name] = body.properties.model.name
        self.created.append((name, body.sku.name, kw.get("api_version", "")))
        return SimpleNamespace(result=lambda: body)

    def begin_delete(self, rg: str, account: str, name: str) -> Any:
        self.live.pop(name, None)
        return SimpleNamespace(result=lambda: None)


def _deps(run: RunRecord, arm: FakeArm | None = None, eval_lines: list[str] | None = None) -> MemoryDeps:
    deps = make_deps(arm=arm or FakeArm())
    deps.registry.add_run(run)
    lines = eval_lines if eval_lines is not None else [
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
        for q, a in QA.items()]
    deps.blobs.data[("reports", "r1/data/eval.jsonl")] = "\n".join(lines).encode()
    return deps


def _run(**thresholds: float) -> RunRecord:
    return RunRecord(run_id="r1", source="datasets/x.jsonl", state=states.TRAINED, fine_tuned_model="gpt-4.1-mini.ft-1",
                     settings={"base_model": "gpt-4.1-mini", "thresholds": thresholds},
                     environments=["dev", "prod"], data_files={"eval": "r1/data/eval.jsonl"},
                     checkpoints=[{"id": f"ftchkpt-{s}", "step": s, "model": f"gpt-4.1-mini.ft-1:ckpt-step-{s}"}
                                  for s in (5, 10, 15)],   # as polling records them (Hub.checkpoints)
                     metrics={"rows": [{"step": 1, "train_loss": 2.0}, {"step": 2, "train_loss": 1.0}]})


def _chat(deps: Any) -> Any:
    """Fine-tuned deployments know the answers (the later checkpoint best), the base model does not."""
    def chat(deployment: str, example: Example) -> ChatReply:
        model = deps.arm.live[deployment]
        question = example.messages[-1]["content"]
        if model == "gpt-4.1-mini":
            return ChatReply("I am not sure about that fact.", 10, 5)
        answer = QA.get(question, "OK")   # anything else (the readiness probe) gets a short answer
        if model == "ftchkpt-10":
            return ChatReply(answer.split(" is ")[0], 10, 3)
        return ChatReply(answer, 10, 6)
    return chat


def test_pass_advances_writes_reports_sends_deploy_and_cleans_up() -> None:
    deps = _deps(_run(min_score=0.8, min_improvement=0.2))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATED
    assert run.chosen_model == "gpt-4.1-mini.ft-1" and run.evaluation["passed"] is True
    assert run.evaluation["scores"]["final"] == 1.0 and run.evaluation["scores"]["base"] < 0.3
    assert set(run.evaluation["scores"]) == {"final", "base", "checkpoint step 10", "checkpoint step 15"}
    assert deps.arm.live == {}                                       # nothing left on the hub
    skus = {name.rsplit("-", 1)[-1]: (sku, api) for name, sku, api in deps.arm.created}
    assert skus["final"] == ("developertier", "2025-07-01-preview") and skus["base"][0] == "standard"
    report = json.loads(deps.blobs.data[("reports", "r1/evaluation.json")])
    assert report["chosen"]["name"] == "final" and len(report["training_metrics"]) == 2
    assert b"<svg" in deps.blobs.data[("reports", "r1/evaluation.html")]
    deploys = [e for q, e in deps.publisher.sent if q == deps.settings.deploy_queue]
    assert [(e.id, e.data) for e in deploys] == [(deploy_message_id("r1", "dev", run.chosen_model), {"run_id": "r1", "environment": "dev", "attempt": 0})]
    events = [e.type for q, e in deps.publisher.sent if q == deps.settings.events_topic]
    assert events == ["ftops.run.evaluating", "ftops.run.evaluated"]

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))   # duplicate delivery
    assert deps.registry.runs["r1"].state == states.EVALUATED
    assert [e.id for q, e in deps.publisher.sent if q == deps.settings.deploy_queue] == [deploy_message_id("r1", "dev", run.chosen_model)] * 2


def test_impossible_threshold_fails_with_the_gate_named() -> None:
    deps = _deps(_run(min_improvement=1.0))   # base scores > 0: impossible
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATION_FAILED
    assert run.evaluation["passed"] is False and run.evaluation["failed_gates"] == ["min_improvement"]
    assert not [q for q, _ in deps.publisher.sent if q == deps.settings.deploy_queue]
    assert deps.arm.live == {}


def test_missing_eval_data_fails_with_a_clear_reason() -> None:
    run = replace(_run(), data_files={"eval": "r1/data/missing.jsonl"})
    deps = _deps(run)
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    failed = deps.registry.runs["r1"]
    assert failed.state == states.EVALUATION_FAILED
    assert "reports/r1/data/missing.jsonl does not exist" in failed.evaluation["reason"]
    assert deps.arm.created == []
    assert b"does not exist" in deps.blobs.data[("reports", "r1/evaluation.html")]


def test_permanent_hub_error_fails_transient_raises_and_both_clean_up() -> None:
    deps = _deps(_run(), arm=FakeArm(refuse={"-base": 400}))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].state == states.EVALUATION_FAILED
    assert "400" in deps.registry.runs["r1"].evaluation["reason"] and deps.arm.live == {}

    deps = _deps(_run(), arm=FakeArm(refuse={"-final": 429}))
    with pytest.raises(DeploymentTransient):
        handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].state == states.EVALUATING and deps.arm.live == {}
    assert deps.registry.keys == {}                                  # claim released: the retry may proceed


def test_a_refused_checkpoint_is_skipped_not_fatal() -> None:
    deps = _deps(_run(min_score=0.5), arm=FakeArm(refuse={"ckpt15": 400}))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].state == states.EVALUATED
    report = json.loads(deps.blobs.data[("reports", "r1/evaluation.json")])
    assert [s["name"] for s in report["skipped_candidates"]] == ["checkpoint step 15"]


def test_failed_calls_count_against_the_error_gate() -> None:
    deps = _deps(_run(max_error_rate=0.1))
    inner = _chat(deps)

    def flaky(deployment: str, example: Example) -> ChatReply:
        if deployment.endswith("final") and example.line % 3 == 0:
            raise TimeoutError("gave up")
        return inner(deployment, example)

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, flaky))
    run = deps.registry.runs["r1"]
    # the final model errs on 4 of 12 — but the checkpoint at step 15 answers everything and wins
    assert run.state == states.EVALUATED and run.chosen_model == "ftchkpt-15"


def test_stale_message_for_a_run_not_yet_trained_does_nothing() -> None:
    deps = _deps(replace(_run(), state=states.TRAINING))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].state == states.TRAINING and deps.publisher.sent == []


def test_a_copy_delivered_while_another_worker_evaluates_comes_back_later() -> None:
    deps = _deps(_run(min_score=0.8, min_improvement=0.2))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    deps.registry.runs["r1"] = replace(deps.registry.runs["r1"], state=states.EVALUATING)
    deps.registry.keys = {k: "IN_PROGRESS" for k in deps.registry.keys}       # another worker holds the claim
    deps.publisher.sent.clear()
    created = len(deps.arm.created)
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert [(q, e.id) for q, e in deps.publisher.sent] == [(deps.settings.evaluate_queue,
                                                  evaluate_message_id("r1", deps.registry.runs["r1"].job_id) + "-a1")]
    assert len(deps.arm.created) == created                           # the copy deployed nothing


QUOTA = "This operation require 10 new capacity in quota Tokens Per Minute (thousands) - gpt-4.1-mini, which is " \
        "bigger than the current available capacity 0."


def test_hub_quota_short_waits_with_delayed_resends_then_gives_up_with_a_reason() -> None:
    from shared.run.messages import parse_message
    from shared.stages.evaluation import QUOTA_WAITS
    deps = _deps(_run(min_score=0.5), arm=FakeArm(refuse={"-base": 400}, codes={"-base": "InsufficientQuota"}))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATING and deps.arm.live == {}      # waits, holding no hub deployment
    assert deps.registry.keys == {}                                    # the re-send will find the step free
    resends = [(e, d) for (q, e), d in zip(deps.publisher.sent, deps.publisher.delays) if q == "ftops-evaluate"]
    assert len(resends) == 1 and resends[0][0].id == evaluate_message_id("r1", run.job_id) + "-a1" and resends[0][1] >= 30
    _, again = parse_message(resends[0][0].to_json())
    assert again == EvaluateRequest(run_id="r1", attempt=1, quota_waits=1)
    waiting = [e for q, e in deps.publisher.sent if q == "ftops-events"]
    assert "ftops.run.evaluation_waiting_for_quota" in [e.type for e in waiting]

    handle_evaluate(EvaluateRequest(run_id="r1", quota_waits=QUOTA_WAITS), with_chat(deps, _chat(deps)))
    failed = deps.registry.runs["r1"]
    assert failed.state == states.EVALUATION_FAILED and deps.arm.live == {}
    reason = failed.evaluation["reason"]
    assert f"hub quota did not free up after {QUOTA_WAITS} waits" in reason and "InsufficientQuota" in reason


def test_quota_on_a_checkpoint_waits_too_rather_than_dropping_it() -> None:
    deps = _deps(_run(min_score=0.5), arm=FakeArm(refuse={"ckpt15": 400}, codes={"ckpt15": "InsufficientQuota"}))
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].state == states.EVALUATING and deps.arm.live == {}


def _serving(deps: Any, model: str, environment: str = "prod") -> None:
    """The registry says the run's deployment name already serves `model` in `environment` (the champion)."""
    from shared.store.registry import DeploymentRecord
    slot = DeploymentRecord(environment=environment, account="spoke", deployment="r1", region="eastus",
                            subscription="s", resource_group="rg", run_id="r0", model=model)
    deps.registry.list_deployments = lambda state=None: [slot]


def _with_champion(deps: Any) -> Any:
    inner = _chat(deps)

    def chat(deployment: str, example: Example) -> ChatReply:
        if deps.arm.live[deployment].endswith("ft-0"):     # last run's model knows every answer word for word
            return ChatReply(QA.get(example.messages[-1]["content"], "OK"), 10, 6)
        return inner(deployment, example)
    return chat


def test_the_champion_served_today_is_evaluated_on_the_same_examples_and_gated_on() -> None:
    deps = _deps(_run(min_score=0.5, min_improvement=0.1))
    _serving(deps, "gpt-4.1-mini.ft-0")
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _with_champion(deps)))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATED                      # as good as the champion: non-inferior
    assert run.evaluation["champion"] == {"model": "gpt-4.1-mini.ft-0", "environment": "prod"}
    assert run.evaluation["comparison"]["champion"]["mean"] == 0.0
    assert run.evaluation["comparison"]["base"]["low"] > 0.5
    assert "champion" in run.evaluation["scores"] and deps.arm.live == {}
    assert any(name.endswith("-champ") for name, _, _ in deps.arm.created)
    from shared.operator.api import evaluation_comparison  # what GET runs/{id} shows the approver
    view = evaluation_comparison(run.evaluation)
    assert view is not None and view["champion"]["model"] == "gpt-4.1-mini.ft-0"
    assert view["challenger"]["model"] == "gpt-4.1-mini.ft-1" and len(view["challenger"]["interval"]) == 2
    assert view["improvement"]["champion"]["mean"] == 0.0
    assert view["gates"] == {"min_improvement": True, "min_improvement_over_champion": True}

    deps = _deps(_run(min_score=0.5, min_improvement=0.1, champion_rule="superior"))
    _serving(deps, "gpt-4.1-mini.ft-0")
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _with_champion(deps)))
    failed = deps.registry.runs["r1"]
    assert failed.state == states.EVALUATION_FAILED and failed.evaluation["failed_gates"] == [
        "min_improvement_over_champion"]


def test_no_champion_when_nothing_is_served_under_the_name_or_it_is_this_model() -> None:
    deps = _deps(_run(min_score=0.5))
    _serving(deps, "gpt-4.1-mini.ft-1")             # the run's own model (a re-sent evaluation)
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    assert deps.registry.runs["r1"].evaluation["champion"] is None
    assert not any(name.endswith("-champ") for name, _, _ in deps.arm.created)


def test_model_grader_from_run_json_gates_and_is_recorded_with_its_prompt() -> None:
    run = _run(min_score=0.6, min_improvement=0.2, grader="judge")
    run.settings["evaluation"] = {"graders": [{"type": "score_model", "name": "judge", "model": "judge-4o",
                                               "rubric": "the number must be right"},
                                              {"type": "string_check", "operation": "ilike"}]}
    deps = _deps(run)
    judged: list[str] = []

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        judged.append(deployment)
        answer = messages[-1]["content"].split("Answer to grade:\n")[1]
        return "1" if any(ch.isdigit() for ch in answer) else "0.1"

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps), judge))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATED and run.evaluation["grader"] == "judge"
    assert run.evaluation["scores"]["final"] == 1.0 and run.evaluation["scores"]["base"] == pytest.approx(0.1)
    assert set(judged) == {"judge-4o"}
    report = json.loads(deps.blobs.data[("reports", "r1/evaluation.json")])
    assert report["graders"][0]["model"] == "judge-4o" and "the number must be right" in report["graders"][0]["prompt"]
    assert {g["name"]: g.get("grader") for g in report["gates"]}["min_score"] == "judge"
    final = next(c for c in report["candidates"] if c["name"] == "final")
    assert set(final["metrics"]["graders"]) == {"judge", "string_check_ilike"}
    assert final["metrics"]["cost_per_1k_requests_usd"] > 0
    assert b"judge-4o" in deps.blobs.data[("reports", "r1/evaluation.html")]


def test_content_filter_results_in_answers_fail_their_gate() -> None:
    deps = _deps(_run(min_score=0.5, max_content_filter_rate=0.1))
    inner = _chat(deps)

    def chat(deployment: str, example: Example) -> ChatReply:
        reply = inner(deployment, example)
        return replace(reply, flagged=deps.arm.live[deployment] != "gpt-4.1-mini" and example.line <= 10)

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, chat))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATION_FAILED and run.evaluation["failed_gates"] == ["max_content_filter_rate"]
    assert run.evaluation["content_filter_rate"]["final"] == 0.1667 and run.evaluation["content_filter_rate"]["base"] == 0


def test_a_reinforcement_run_is_judged_by_its_own_grader() -> None:
    lines = [json.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) for q, a in QA.items()]
    run = _run(min_score=0.9, min_improvement=0.5)
    run.settings.update(method="reinforcement", grader={
        "type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
        "operation": "eq"})
    deps = _deps(run, eval_lines=lines)
    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps)))
    done = deps.registry.runs["r1"]
    assert done.state == states.EVALUATED and done.evaluation["grader"] == "exact"
    assert done.evaluation["scores"]["final"] == 1.0 and done.evaluation["scores"]["base"] == 0.0
    report = json.loads(deps.blobs.data[("reports", "r1/evaluation.json")])
    assert report["graders"] == [{"name": "exact", "type": "reinforcement", "grader": run.settings["grader"]}]


def test_a_judge_that_fails_is_counted_not_hidden_and_not_a_zero() -> None:
    run = _run(min_score=0.0, min_improvement=-1.0)
    run.settings["evaluation"] = {"graders": [{"type": "score_model", "name": "judge", "model": "judge-4o"}]}
    deps = _deps(run)

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        if "What is fact 3?" in messages[-1]["content"]:
            raise TimeoutError("judge did not answer")
        return "1"

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps), judge))
    report = json.loads(deps.blobs.data[("reports", "r1/evaluation.json")])
    final = next(c for c in report["candidates"] if c["name"] == "final")
    assert final["metrics"]["grader_errors"] == {"judge": 1} and final["metrics"]["graders"]["judge"]["mean"] == 1
    assert report["grader_errors"]["final"] == {"judge": 1}
    html = deps.blobs.data[("reports", "r1/evaluation.html")].decode()
    headline = html[: html.index("<h2>")]
    assert "Grader errors" in headline and "judge on final: 1" in headline
    run = deps.registry.runs["r1"]
    assert run.evaluation["grader_errors"]["final"] == {"judge": 1}
    from shared.operator.api import evaluation_comparison  # GET runs/{id}
    assert evaluation_comparison(run.evaluation)["grader_errors"]["base"] == {"judge": 1}
    gate = next(g for g in run.evaluation["gates"] if g["name"] == "max_grader_error_rate")
    assert gate["passed"] and "1 of 60" in gate["detail"]


def test_a_judge_failing_on_too_many_answers_fails_the_run_with_its_reason() -> None:
    run = _run(min_score=0.0, min_improvement=-1.0)
    run.settings["evaluation"] = {"graders": [{"type": "score_model", "name": "judge", "model": "judge-4o"}]}
    deps = _deps(run)

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        if any(f"What is fact {i}?" in messages[-1]["content"] for i in range(6)):
            raise TimeoutError("judge did not answer")
        return "1"

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps), judge))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATION_FAILED and run.evaluation["failed_gates"] == ["max_grader_error_rate"]
    gate = next(g for g in run.evaluation["gates"] if g["name"] == "max_grader_error_rate")
    assert "6 of 60" in gate["detail"]


def test_a_reinforcement_runs_model_grader_is_asked_with_its_own_messages() -> None:
    """The run's own score_model grader (inside a multi) gets a judge: before, none was made for it."""
    lines = [json.dumps({"messages": [{"role": "user", "content": q}], "answer": a}) for q, a in QA.items()]
    run = _run(min_score=0.5, min_improvement=0.1)
    judge_spec = {"type": "score_model", "name": "judge", "model": "judge-4o", "range": [0, 10],
                  "input": [{"role": "user", "content": "Reference {{item.answer}}; answer {{sample.output_text}}"}]}
    run.settings.update(method="reinforcement", grader={
        "type": "multi", "graders": {"judge": judge_spec}, "calculate_output": "judge"})
    deps = _deps(run, eval_lines=lines)
    asked: list[str] = []

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        asked.append(messages[-1]["content"])
        reference, answer = messages[-1]["content"][len("Reference "):].split("; answer ")
        return "10" if reference == answer else "2"

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, _chat(deps), judge))
    done = deps.registry.runs["r1"]
    assert done.state == states.EVALUATED, done.evaluation
    assert done.evaluation["scores"]["final"] == 1.0 and done.evaluation["scores"]["base"] == pytest.approx(0.2)
    assert asked and not any("{{" in a for a in asked)


def test_two_retry_chains_interleaved_never_mint_the_same_id_and_the_run_finishes() -> None:
    """A busy copy (another worker held the run) and a quota copy (the hub was short) each go on; handled in
    the order that once made each chain re-send an id the other had used (Service Bus dropped both as
    duplicates, and the run sat `evaluating` with nothing on its queue for good), the run still finishes."""
    from shared.run.messages import parse_message
    arm = FakeArm(refuse={"-base": 400}, codes={"-base": "InsufficientQuota"})
    deps = _deps(_run(min_score=0.5), arm=arm)
    queue: list[Any] = []          # live messages on ftops-evaluate, as Service Bus holds them
    seen: set[str] = set()         # its duplicate detection: a MessageId sent before is dropped

    def send(q: str, event: Any, *, delay_seconds: float = 0) -> None:
        deps.publisher.sent.append((q, event))
        if q == deps.settings.evaluate_queue and event.id not in seen:
            seen.add(event.id)
            queue.append(event)

    deps.publisher.send = send  # type: ignore[method-assign]
    evaluate = with_chat(deps, _chat(deps))

    def deliver(event: Any, *, held_elsewhere: bool = False) -> None:
        if event in queue:
            queue.remove(event)
        if held_elsewhere:   # a second worker is inside the same step: the claim is taken
            deps.registry.keys = {k: "IN_PROGRESS" for k in [*deps.registry.keys, *_claim_keys(deps)]}
        _, request = parse_message(event.to_json())
        handle_evaluate(request, evaluate)
        if held_elsewhere:
            deps.registry.keys = {}

    first = envelope(EvaluateRequest(run_id="r1"), message_id=evaluate_message_id("r1", None))
    deliver(first, held_elsewhere=True)          # a lock lost: the same message twice; this copy finds it held
    busy_copy = queue[-1]
    deliver(first)                               # the holder: quota short → a quota copy
    quota_copy = queue[-1]
    deliver(quota_copy, held_elsewhere=True)     # the quota copy arrives while the busy copy is being worked
    deliver(busy_copy)                           # the busy copy: quota short again
    assert queue, "both chains' re-sends were dropped as duplicates: nothing is left to finish the run"
    arm.refuse = {}                              # quota frees up
    while queue:
        deliver(queue[0])
    assert deps.registry.runs["r1"].state == states.EVALUATED


def _claim_keys(deps: Any) -> list[str]:
    import hashlib
    run = deps.registry.runs["r1"]
    return ["evaluate-" + hashlib.sha256(f"r1|{run.job_id}|{run.fine_tuned_model}".encode()).hexdigest()[:32]]


def test_the_final_models_deployment_gone_mid_pass_scores_nothing_and_evaluates_again_later() -> None:
    """Once, the final model's deployment vanishing after one question counted every later question as a
    wrong answer: the run passed and deployed a checkpoint instead of the final model."""
    from shared.azure.chat import InfrastructureError
    from shared.run.messages import parse_message
    from shared.stages.evaluation import INFRA_WAITS
    deps = _deps(_run(min_score=0.5))
    inner = _chat(deps)
    gone = {"now": False}

    def chat(deployment: str, example: Example) -> ChatReply:
        if deployment.endswith("final") and gone["now"]:
            raise InfrastructureError(f"deployment {deployment}: 404 DeploymentNotFound")
        if deployment.endswith("final"):
            gone["now"] = True
        return inner(deployment, example)

    handle_evaluate(EvaluateRequest(run_id="r1"), with_chat(deps, chat))
    run = deps.registry.runs["r1"]
    assert run.state == states.EVALUATING and run.chosen_model is None   # nothing chosen from a broken pass
    assert deps.arm.live == {} and deps.registry.keys == {}              # deployments gone, the step free
    [(_, again)] = [(q, e) for q, e in deps.publisher.sent if q == deps.settings.evaluate_queue]
    _, request = parse_message(again.to_json())
    assert request.infra_waits == 1 and again.id.endswith("-a1")
    assert "ftops.run.evaluation_retrying" in deps.publisher.types()

    handle_evaluate(request, with_chat(deps, inner))                     # the hub is whole again
    assert deps.registry.runs["r1"].state == states.EVALUATED
    assert deps.registry.runs["r1"].chosen_model == "gpt-4.1-mini.ft-1"  # the final model, not a checkpoint

    deps = _deps(_run(min_score=0.5))
    handle_evaluate(EvaluateRequest(run_id="r1", infra_waits=INFRA_WAITS),
                    with_chat(deps, lambda d, e: (_ for _ in ()).throw(InfrastructureError("deployment x: 503"))))
    failed = deps.registry.runs["r1"]
    assert failed.state == states.EVALUATION_FAILED and "could not be asked" in failed.evaluation["reason"]


def test_a_deployment_that_never_answers_is_given_up_after_the_timeout_not_asked_forever() -> None:
    import httpx2 as httpx  # the openai SDK's own HTTP library
    import openai

    from shared.evaluation.hubdeploy import wait_until_serving
    now = [0.0]
    not_found = openai.NotFoundError("DeploymentNotFound", response=httpx.Response(
        404, request=httpx.Request("POST", "https://hub/openai/v1/chat/completions")), body=None)

    def never(deployment: str, example: Example) -> ChatReply:
        raise not_found

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert wait_until_serving(never, "ev-x", timeout_s=30, sleep=sleep, clock=lambda: now[0]) is None
    assert 15 <= now[0] <= 30   # it waited, backing off, and stopped inside the timeout
    answers = iter([not_found, not_found, None])

    def soon(deployment: str, example: Example) -> ChatReply:
        error = next(answers)
        if error:
            raise error
        return ChatReply("OK")

    assert wait_until_serving(soon, "ev-x", timeout_s=30, sleep=sleep, clock=lambda: now[0]) == 3
