"""The evaluate stage against Azurite and the hub emulator: a model really trained on the emulator hub,
evaluated on paraphrased questions, compared with the base model, reported, handed to deployment."""
from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from shared.azure.bus import decode_local
from shared.azure.hub import Hub
from shared.run import states
from shared.run.messages import DeployRequest, EvaluateRequest, deploy_message_id, parse_message
from shared.stages.deployment import handle_deploy
from shared.stages.evaluation import handle_evaluate
from shared.store.registry import RunRecord
from tests.integration.emulator_jobs import trained_job

pytestmark = pytest.mark.integration

# Distinct facts; the held-out questions are paraphrases sharing the key words, not the wording.
FACTS = [
    ("What is the return window for laptops?", "Laptops can be returned within 30 days.",
     "Within how many days may I send back laptops?"),
    ("How long does standard shipping to Norway take?", "Standard shipping to Norway takes 5 business days.",
     "Standard shipping Norway: how many days?"),
    ("Which payment methods are accepted for gift cards?", "Gift cards accept Visa and Mastercard only.",
     "For gift cards, what payment methods do you take?"),
    ("Who approves refunds above 500 euros?", "Refunds above 500 euros are approved by the finance team.",
     "Refunds above 500 euros need approval from whom?"),
    ("What warranty do headphones carry?", "Headphones carry a two year warranty.",
     "Headphones warranty: what do they carry?"),
    ("Where is the Berlin warehouse located?", "The Berlin warehouse is in Spandau.",
     "Berlin warehouse location, please?"),
    ("When does the support hotline open on Saturdays?", "The support hotline opens at 9 on Saturdays.",
     "On Saturdays, what time does the support hotline open?"),
    ("Can printers be shipped to Iceland?", "Printers cannot be shipped to Iceland.",
     "Do you ship printers to Iceland?"),
    ("What is the loyalty discount for students?", "Students receive a 10 percent loyalty discount.",
     "Students loyalty discount amount?"),
    ("How are damaged monitors reported?", "Damaged monitors are reported with a photo in the app.",
     "Reporting damaged monitors: how is it done?"),
    ("Which courier delivers bicycles?", "Bicycles are delivered by CargoLine.",
     "Bicycles go with which courier?"),
    ("What voltage do the coffee machines use?", "The coffee machines use 230 volts.",
     "Coffee machines voltage?"),
]
# …and more, one per city, so the held-out set reaches the gates' minimum (shared.run.heldout.MIN_HELD_OUT)
STORE_CITIES = ["Lisbon", "Oslo", "Vienna", "Dublin", "Prague", "Warsaw", "Zagreb", "Tallinn", "Riga", "Vilnius",
          "Helsinki", "Bern", "Sofia", "Athens", "Madrid", "Porto", "Munich", "Lyon", "Milan", "Ghent",
          "Bergen", "Aarhus", "Krakow", "Seville", "Utrecht", "Geneva"]
FACTS += [(f"When does the {city} store close on weekdays?", f"The {city} store closes at {5 + i % 5} pm on weekdays.",
           f"{city} store weekday closing time?") for i, city in enumerate(STORE_CITIES)]
BASE_MODEL = "gpt-4.1-mini-2025-04-14"
SYSTEM = {"role": "system", "content": "You answer questions about Contoso's shop policies."}


def _chat_line(question: str, answer: str) -> str:
    return json.dumps({"messages": [SYSTEM, {"role": "user", "content": question},
                                    {"role": "assistant", "content": answer}]})


def _train_on_hub(deps: Any, emulator: Any, lines: list[str] | None = None
                  ) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Upload, fine-tune, advance the emulator clock until the job succeeds; (model, checkpoints, loss rows)."""
    client = deps.openai_client()
    data = "\n".join(lines or [_chat_line(q, a) for q, a, _ in FACTS]).encode()
    job = trained_job(client, emulator, data, base_model=BASE_MODEL)
    checkpoints = Hub(client).checkpoints(job.id)   # what polling records on the run
    rows: list[dict[str, Any]] = []
    if job.result_files:   # results.csv rows (strings: the report must be lenient about types)
        text = client.files.content(job.result_files[0]).text
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
    return str(job.fine_tuned_model), checkpoints, rows


def _trained_run(deps: Any, emulator: Any, *, train: list[str] | None = None, held_out: list[str] | None = None,
                 evaluation: dict[str, Any] | None = None, **thresholds: Any) -> str:
    model, checkpoints, rows = _train_on_hub(deps, emulator, train)
    run_id = f"faq-{uuid.uuid4().hex[:8]}"
    eval_path = f"{run_id}/data/eval.jsonl"
    lines = held_out or [_chat_line(paraphrase, answer) for _, answer, paraphrase in FACTS]
    deps.blobs.get_container_client(deps.settings.reports_container).upload_blob(eval_path, "\n".join(lines))
    settings = {"base_model": BASE_MODEL, "thresholds": thresholds, **({"evaluation": evaluation} if evaluation else {})}
    run = RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=states.TRAINED, fine_tuned_model=model,
                    settings=settings,
                    environments=["dev", "test", "prod"], data_files={"eval": eval_path},
                    checkpoints=checkpoints,
                    metrics={"final": rows[-1] if rows else {}, "steps": len(rows), "series": rows})  # polling's shape
    assert deps.registry.create_run(run, actor="test") is not None
    return run_id


def _hub_leftovers(emulator: Any, run_id: str) -> list[dict[str, Any]]:
    return [d for d in emulator.control.state()["hub_deployments"]
            if (d.get("tags") or {}).get("ftops-run") == run_id]


def _deploy_requests(deps: Any, azurite: Any) -> list[tuple[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient
    queue = QueueClient.from_connection_string(azurite.connection_string, deps.settings.deploy_queue)
    found = []
    try:
        messages = list(queue.receive_messages(max_messages=32))
    except ResourceNotFoundError:   # nothing was ever sent: the local publisher creates queues on first send
        return []
    for message in messages:
        local = decode_local(message.content)
        _, data = parse_message(local["body"])
        found.append((local["message_id"], data))
    return found


def test_fine_tuned_model_beats_base_and_goes_to_the_first_environment(
        make_deps: Callable[..., Any], emulator: Any, azurite: Any) -> None:
    deps = make_deps()
    run_id = _trained_run(deps, emulator, min_score=0.6, min_improvement=0.3)

    handle_evaluate(EvaluateRequest(run_id=run_id), deps)

    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATED, run.evaluation
    scores = run.evaluation["scores"]
    assert scores[run.evaluation["chosen_name"]] >= 0.6
    assert scores["final"] - scores["base"] >= 0.3, scores
    assert run.chosen_model and run.evaluation["passed"] is True
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    report = json.loads(container.download_blob(f"{run_id}/evaluation.json").readall())
    html = container.download_blob(f"{run_id}/evaluation.html").readall().decode()
    assert report["examples"]["evaluated"] == len(FACTS) and "<svg" in html
    assert {c["kind"] for c in report["candidates"]} >= {"final", "base"}
    assert report["training_metrics"] and "<polyline" in html                  # loss curve from run.metrics
    final_step = max(r["step"] for r in report["training_metrics"])
    assert all(c["step"] < final_step for c in report["candidates"] if c["kind"] == "checkpoint")
    assert _deploy_requests(deps, azurite) == [(deploy_message_id(run_id, "dev", run.chosen_model), DeployRequest(run_id=run_id, environment="dev"))]
    assert _hub_leftovers(emulator, run_id) == []
    puts = {r["path"].rsplit("-", 1)[-1]: r["query"] for r in emulator.control.requests()
            if r["method"] == "PUT" and f"/deployments/ev-{run_id}-" in r["path"]}
    assert "2025-07-01-preview" in puts["final"]            # Developer tier for the gpt-4.1 family
    assert {c["sku"] for c in report["candidates"] if c["kind"] != "base"} == {"developertier"}
    trail = [a["to_state"] for a in deps.registry.audit_trail(run_id) if a.get("to_state")]
    assert trail[-2:] == [states.EVALUATING, states.EVALUATED]


def test_evaluation_waits_until_a_provisioned_deployment_answers(
        make_deps: Callable[..., Any], emulator: Any, azurite: Any) -> None:
    """ARM says Succeeded, the data plane still answers 404 DeploymentNotFound ("if you created the deployment
    within the last 5 minutes, please wait"): no held-out example is asked before each deployment answers, so
    none is lost to it and the report counts every example."""
    deps = make_deps()
    run_id = _trained_run(deps, emulator, min_score=0.6, min_improvement=0.3)
    emulator.control.config(not_ready_seconds=5)
    emulator.control.clear_requests()
    try:
        handle_evaluate(EvaluateRequest(run_id=run_id), deps)
    finally:
        emulator.control.config(not_ready_seconds=0.3)
    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATED, run.evaluation
    not_ready = [r for r in emulator.control.requests() if r.get("fault") == "not-ready"]
    assert not_ready, "the emulator answered 404 after ARM's Succeeded (else this test shows nothing)"
    report = json.loads(deps.blobs.get_container_client(deps.settings.reports_container)
                        .download_blob(f"{run_id}/evaluation.json").readall())
    assert report["examples"]["evaluated"] == len(FACTS)
    assert all(not c.get("errors") for c in report["candidates"]), report["candidates"]


def test_impossible_threshold_ends_in_evaluation_failed(make_deps: Callable[..., Any], emulator: Any,
                                                        azurite: Any) -> None:
    deps = make_deps()
    run_id = _trained_run(deps, emulator, min_improvement=1.0)

    handle_evaluate(EvaluateRequest(run_id=run_id), deps)

    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATION_FAILED
    assert run.evaluation["passed"] is False and "min_improvement" in run.evaluation["failed_gates"]
    assert _deploy_requests(deps, azurite) == []
    assert _hub_leftovers(emulator, run_id) == []


def test_every_kept_checkpoint_is_evaluated_and_a_winning_one_is_deployed_to_the_spokes(
        make_deps: Callable[..., Any], emulator: Any, azurite: Any) -> None:
    """The job over-fits (emulator fault): its checkpoint one epoch before the end knows every answer, the
    final model only half. Every kept checkpoint is evaluated, that checkpoint wins, and it is what the
    first environment's spokes serve — deployed by its checkpoint id, from the hub."""
    deps = make_deps()
    emulator.control.faults(overfit_next_jobs=1)
    try:
        run_id = _trained_run(deps, emulator, min_score=0.6, min_improvement=0.3)
    finally:
        emulator.control.faults(overfit_next_jobs=0)
    recorded = deps.registry.require_run(run_id).checkpoints
    assert len(recorded) == 3 and all(c["id"].startswith("ftchkpt-") for c in recorded)

    handle_evaluate(EvaluateRequest(run_id=run_id), deps)

    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATED, run.evaluation
    newest = max(c["step"] for c in recorded)   # the last epoch's checkpoint is the final model itself
    kept = {c["step"]: c["id"] for c in recorded if c["step"] != newest}
    assert set(run.evaluation["scores"]) == {"final", "base", *(f"checkpoint step {s}" for s in kept)}
    peak = f"checkpoint step {max(kept)}"   # one epoch before the end: where the over-fitting job peaked
    assert run.evaluation["chosen_name"] == peak and run.chosen_model == kept[max(kept)]
    assert run.evaluation["scores"][peak] > run.evaluation["scores"]["final"]

    handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)

    assert deps.registry.require_run(run_id).state == states.deployed("dev")
    served = [d for d in emulator.control.state()["deployments"] if d["deployment"] == run_id]
    assert sorted(d["account"] for d in served) == ["ftops-dev-eastus", "ftops-dev-swedencentral"]
    assert {d["model"] for d in served} == {kept[max(kept)]}
    assert {d["source"] for d in served} == {deps.settings.hub.resource_id}
    for target in deps.require_topology().environment("dev").targets:   # free the spokes' quota
        deps.spokes.delete(target, run_id)


def test_hub_region_out_of_tpm_quota_waits_then_fails_with_the_reason(
        make_deps: Callable[..., Any], emulator: Any, azurite: Any) -> None:
    """The hub's region has too little tokens-per-minute quota for the evaluation deployments: ARM answers
    InsufficientQuota; the evaluation holds nothing, re-sends itself later, and gives up past the bound."""
    from azure.storage.queue import QueueClient

    from shared.stages.evaluation import QUOTA_WAITS
    deps = make_deps()
    run_id = _trained_run(deps, emulator, min_score=0.6, min_improvement=0.3)
    emulator.control.config(tpm_quota={"swedencentral": 5})   # the hub's region; each deployment wants ≥ 10
    try:
        handle_evaluate(EvaluateRequest(run_id=run_id), deps)
        assert deps.registry.require_run(run_id).state == states.EVALUATING
        assert _hub_leftovers(emulator, run_id) == []
        queue = QueueClient.from_connection_string(azurite.connection_string, deps.settings.evaluate_queue)
        assert queue.get_queue_properties().approximate_message_count == 1   # the delayed re-send (invisible)

        handle_evaluate(EvaluateRequest(run_id=run_id, quota_waits=QUOTA_WAITS), deps)
    finally:
        emulator.control.config(tpm_quota={})
    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATION_FAILED
    assert "hub quota did not free up" in run.evaluation["reason"] and "InsufficientQuota" in run.evaluation["reason"]
    assert _hub_leftovers(emulator, run_id) == []


# A task mixing free text (held-out references are paraphrases of what was trained), JSON extraction and
# tool calls, plus one answer the content filter annotates (severity low): every grader has something to see.
TEXT = [("What is the return window for laptops?", "Laptops can be returned within 30 days.",
         "Within how many days may I send back laptops?", "You may return laptops within 30 days of delivery."),
        ("How long does standard shipping to Norway take?", "Standard shipping to Norway takes 5 business days.",
         "Standard shipping Norway: how many days?", "Shipping to Norway takes 5 business days with standard."),
        ("Who approves refunds above 500 euros?", "Refunds above 500 euros are approved by the finance team.",
         "Refunds above 500 euros need approval from whom?", "The finance team approves refunds above 500 euros.")]
JSON_ORDERS = [("Extract the order as JSON: order A-17, 2 lamps", "As JSON please: order A-17 with 2 lamps",
                {"order": "A-17", "item": "lamp", "quantity": 2}),
               ("Extract the order as JSON: order B-22, 4 chairs", "As JSON please: order B-22 with 4 chairs",
                {"order": "B-22", "item": "chair", "quantity": 4}),
               ("Extract the order as JSON: order C-31, 1 desk", "As JSON please: order C-31 with 1 desk",
                {"order": "C-31", "item": "desk", "quantity": 1})]
CITIES = [("What is the weather in Oslo?", "Oslo weather today?", "Oslo"),
          ("What is the weather in Bergen?", "Bergen weather today?", "Bergen"),
          ("What is the weather in Tromso?", "Tromso weather today?", "Tromso")]
# more of each kind, so the held-out set reaches the gates' minimum (shared.run.heldout.MIN_HELD_OUT)
TEXT += [(q, a, p, f"On weekdays the {city} store closes at {5 + i % 5} pm.")
         for i, ((q, a, p), city) in enumerate(zip(FACTS[12:], STORE_CITIES, strict=True))]
JSON_ORDERS += [(f"Extract the order as JSON: order {letter}-{n}, {n % 5 + 1} {item}s",
                 f"As JSON please: order {letter}-{n} with {n % 5 + 1} {item}s",
                 {"order": f"{letter}-{n}", "item": item, "quantity": n % 5 + 1})
                for letter, n, item in (("D", 40, "shelf"), ("E", 51, "sofa"), ("F", 62, "rug"),
                                        ("G", 73, "stool"), ("H", 84, "mirror"), ("K", 95, "clock"))]
CITIES += [(f"What is the weather in {c}?", f"{c} weather today?", c)
           for c in ("Stavanger", "Trondheim", "Bodo", "Alta", "Molde", "Narvik")]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
FLAGGED = ("How do I end a stuck process on the till?", "Use the kill command with the process id of the till.",
           "Stuck till process: how do I end it?")


def _tool_line(question: str, city: str) -> str:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
    return json.dumps({"messages": [SYSTEM, {"role": "user", "content": question},
                                    {"role": "assistant", "tool_calls": [call]}], "tools": TOOLS})


def test_each_grader_separates_the_fine_tuned_model_from_the_base_model(
        make_deps: Callable[..., Any], emulator: Any, azurite: Any) -> None:
    from shared.evaluation.hubdeploy import create_deployment, hub_account
    from shared.evaluation.runner import Candidate
    deps = make_deps()
    train = ([_chat_line(q, a) for q, a, _, _ in TEXT] + [_chat_line(q, json.dumps(o)) for q, _, o in JSON_ORDERS]
             + [_tool_line(q, c) for q, _, c in CITIES] + [_chat_line(FLAGGED[0], FLAGGED[1])])
    held_out = ([_chat_line(p, r) for _, _, p, r in TEXT] + [_chat_line(p, json.dumps(o)) for _, p, o in JSON_ORDERS]
                + [_tool_line(p, c) for _, p, c in CITIES] + [_chat_line(FLAGGED[2], FLAGGED[1])])
    graders = [{"type": "token_f1"}, {"type": "text_similarity", "evaluation_metric": "rouge_l"},
               {"type": "text_similarity", "evaluation_metric": "fuzzy_match"},
               {"type": "text_similarity", "evaluation_metric": "bleu"},
               {"type": "string_check", "operation": "ilike"}, {"type": "json_valid"}, {"type": "json_match"},
               {"type": "tool_call_match"},
               {"type": "score_model", "name": "judge", "model": "judge", "rubric": "same facts as the reference"}]
    hub = hub_account(deps.settings.hub)
    judge = Candidate("judge", "base", BASE_MODEL, "judge", "standard", 10)
    create_deployment(deps.arm_deployments, hub, judge, tags={})   # the model grader's deployment
    try:
        run_id = _trained_run(deps, emulator, train=train, held_out=held_out, min_score=0.5, min_improvement=0.1,
                              max_content_filter_rate=0.2, evaluation={"graders": graders, "champion": False})
        handle_evaluate(EvaluateRequest(run_id=run_id), deps)
    finally:
        deps.arm_deployments.delete_all(hub, ["judge"])

    run = deps.registry.require_run(run_id)
    assert run.state == states.EVALUATED, run.evaluation
    report = json.loads(deps.blobs.get_container_client(deps.settings.reports_container)
                        .download_blob(f"{run_id}/evaluation.json").readall())
    by_name = {c["name"]: c["metrics"] for c in report["candidates"]}
    names = [g["name"] for g in report["graders"]]
    assert len(names) == 9 and report["gate_grader"] == "token_f1"
    for grader in names:
        final, base = by_name["final"]["graders"][grader], by_name["base"]["graders"][grader]
        assert final["mean"] > base["mean"], (grader, final, base)
        assert final["low"] <= final["mean"] <= final["high"]
    assert by_name["final"]["graders"]["tool_call_match"]["mean"] == 1.0       # name and arguments, every time
    assert by_name["final"]["content_filter_rate"] > 0 == by_name["base"]["content_filter_rate"]
    assert by_name["final"]["cost_per_1k_requests_usd"] > by_name["base"]["cost_per_1k_requests_usd"] > 0
    improvement = report["comparisons"]["base"]["improvement"]["token_f1"]
    assert improvement["low"] >= 0.1                                   # the gate read the interval's lower bound
    assert report["graders"][-1]["model"] == "judge" and "same facts" in report["graders"][-1]["prompt"]


def test_a_worker_killed_mid_evaluation_is_taken_over_and_its_deployments_deleted_first(
        make_deps: Callable[..., Any], emulator: Any) -> None:
    """A SIGKILL leaves the claim held and the temporary deployments up (billed, holding the hub's slots):
    once its short lease lapses, the next delivery takes over, deletes them first, and evaluates."""
    import time

    from tests.integration.faults import Crash
    deps = make_deps()
    run_id = _trained_run(deps, emulator, min_score=0.6)

    class Killed:
        """The dead worker's registry: its lease is short here (the test does not wait a minute) and, the
        process being gone, it never renews, releases or completes anything."""
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def claim(self, key: str, *, ttl_seconds: float) -> Any:
            return self._inner.claim(key, ttl_seconds=1.0)

        def renew(self, *_: Any, **__: Any) -> str:
            raise Crash("dead")

        def release(self, *_: Any, **__: Any) -> None:
            pass

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    class DiesAfterFirstPut:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def put(self, *args: Any, **kwargs: Any) -> Any:
            self._inner.put(*args, **kwargs)
            raise Crash("SIGKILL")

        def delete_all(self, *_: Any, **__: Any) -> Any:   # a killed process runs no `finally`
            raise Crash("dead")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    import dataclasses
    dying = dataclasses.replace(deps, registry=Killed(deps.registry))
    dying.__dict__["arm_deployments"] = DiesAfterFirstPut(deps.arm_deployments)
    with pytest.raises(Crash):
        handle_evaluate(EvaluateRequest(run_id=run_id), dying)
    assert len(_hub_leftovers(emulator, run_id)) == 1                  # left behind, billed
    time.sleep(1.5)                                                    # its lease lapses (a minute in the app)
    handle_evaluate(EvaluateRequest(run_id=run_id), deps)              # the redelivery
    assert deps.registry.require_run(run_id).state == states.EVALUATED
    assert _hub_leftovers(emulator, run_id) == []
    deleted_first = [r for r in emulator.control.requests() if r["method"] in ("PUT", "DELETE")
                     and f"/deployments/ev-{run_id}-" in r["path"]]
    assert [r["method"] for r in deleted_first[1:2]] == ["DELETE"]     # the dead worker's, before any new PUT
