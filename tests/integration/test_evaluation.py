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

from shared import states
from shared.bus import decode_local
from shared.evaluation import handle_evaluate
from shared.messages import DeployRequest, EvaluateRequest, deploy_message_id, parse_message
from shared.registry import RunRecord

pytestmark = pytest.mark.integration

# Twelve distinct facts; the held-out questions are paraphrases sharing the key words, not the wording.
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
SYSTEM = {"role": "system", "content": "You answer questions about Contoso's shop policies."}


def _chat_line(question: str, answer: str) -> str:
    return json.dumps({"messages": [SYSTEM, {"role": "user", "content": question},
                                    {"role": "assistant", "content": answer}]})


def _train_on_hub(deps: Any, emulator: Any) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Upload, fine-tune, advance the emulator clock until the job succeeds; (model, checkpoints, loss rows)."""
    client = deps.openai_client()
    data = "\n".join(_chat_line(q, a) for q, a, _ in FACTS).encode()
    upload = client.files.create(file=("train.jsonl", data), purpose="fine-tune")
    for _ in range(60):
        if client.files.retrieve(upload.id).status == "processed":
            break
        emulator.control.advance(5)
    job = client.fine_tuning.jobs.create(model="gpt-4.1-mini", training_file=upload.id)
    for _ in range(200):
        job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status in ("succeeded", "failed", "cancelled"):
            break
        emulator.control.advance(30)
    assert job.status == "succeeded", job
    checkpoints = [c.model_dump() for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    rows: list[dict[str, Any]] = []
    if job.result_files:   # results.csv rows (strings: the report must be lenient about types)
        text = client.files.content(job.result_files[0]).text
        rows = [dict(r) for r in csv.DictReader(io.StringIO(text))]
    return str(job.fine_tuned_model), checkpoints, rows


def _trained_run(deps: Any, emulator: Any, **thresholds: float) -> str:
    model, checkpoints, rows = _train_on_hub(deps, emulator)
    run_id = f"faq-{uuid.uuid4().hex[:8]}"
    eval_path = f"{run_id}/data/eval.jsonl"
    held_out = "\n".join(_chat_line(paraphrase, answer) for _, answer, paraphrase in FACTS)
    deps.blobs.get_container_client(deps.settings.reports_container).upload_blob(eval_path, held_out)
    run = RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=states.TRAINED, fine_tuned_model=model,
                    settings={"base_model": "gpt-4.1-mini", "thresholds": thresholds},
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
