"""The flywheel against Azurite and the emulator. Harvest: production answers of prod (stored completions on
its spokes, JSONL dropped into the traffic container) become one run folder in the datasets container —
without the planted personal data and secrets, without duplicates, without a single held-out prompt — and
a second tick finds nothing new and writes nothing; a teacher on the hub answers the training file, and its
failures are dropped with their reasons; a judge filters. Drift: the served model re-scored on its held-out
data and on a fresh sample of production exchanges (with a reference, or judged)."""
from __future__ import annotations

import contextlib
import json
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from shared.run import privacy
from shared.stages.drift import handle_drift_tick
from shared.stages.harvest import handle_harvest_tick
from shared.stages.intake import drop_started_by, run_id_for
from shared.store.registry import DeploymentRecord, RunRecord
from shared.validation.curation import prompt_text
from tests.integration.emulator_jobs import trained_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = [f"How do I reset the password of router model R{i}?" for i in range(5)]
TRAINED = [f"Which warranty covers the kettle model K{i} bought abroad?" for i in range(5)]
FRESH = [f"Can I change the delivery address of order {1000 + i} after it shipped to the depot?" for i in range(14)]
PLANTED = ["Please email the invoice to maria.lopez@fabrikam.com today",
           "My card number is 4111 1111 1111 1111, is my order paid?",
           "use key sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCD to log in"]


def _spokes_with_harvest(app: str, **policy: Any) -> str:
    config = json.loads((ROOT / "local" / "spokes.demo.json").read_text())
    prod = next(e for e in config["environments"] if e["name"] == "prod")
    prod["harvest"] = {"min_examples": 10, "metadata": {"app": app}, "drift_examples": 5, **policy}
    return json.dumps(config)


def _line(question: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question},
                                    {"role": "assistant", "content": "Here is the answer you need."}]})


@pytest.fixture
def app() -> str:
    """The metadata the harvest policy filters on, this test's own: the emulator is shared by the session."""
    return f"support-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def policy() -> dict[str, Any]:
    """The harvest policy's keys beyond the defaults of `_spokes_with_harvest` (a test overrides this)."""
    return {}


@pytest.fixture
def prod(make_deps: Any, emulator: Any, instant_deployments: None, app: str, policy: dict[str, Any]) -> Any:
    deps = make_deps(SPOKES_CONFIG=_spokes_with_harvest(app, **policy))
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    reports.upload_blob("champ/data/eval.jsonl", "\n".join(_line(q) for q in HELD_OUT), overwrite=True)
    reports.upload_blob("champ/data/train.jsonl", "\n".join(_line(q) for q in TRAINED), overwrite=True)
    deps.registry.create_run(RunRecord(run_id="champ", source="datasets/champ/run.json", state="deployed:prod",
                                       settings={"base_model": "gpt-4.1-mini", "deployment_name": "support-bot",
                                                 "owner": "6f1c2d3e-0000-4000-8000-0000000000b2"},
                                       data_files={"eval": "champ/data/eval.jsonl", "train": "champ/data/train.jsonl"}),
                             actor="test")
    topology = deps.require_topology()
    env = topology.environment("prod")
    for target in env.targets:
        deps.spokes.deploy(target, "support-bot", "gpt-4.1-mini", tags={"managed_by": "ftops"})
        deps.registry.save_deployment(DeploymentRecord(
            environment="prod", account=target.account, deployment="support-bot", region=target.region,
            subscription=target.subscription, resource_group=target.resource_group, run_id="champ",
            model="gpt-4.1-mini"))
    return deps


def _serve(emulator: Any, account: str, questions: list[str], app: str) -> None:
    """Production traffic, stored with metadata."""
    metadata = {"app": app}
    http = httpx2.Client(verify=ssl.create_default_context(cafile=emulator.ca_file))
    client = openai.OpenAI(base_url=f"{emulator.endpoint(account)}/openai/v1/", api_key="local-key", http_client=http)
    for q in questions:
        client.chat.completions.create(model="support-bot", messages=[{"role": "user", "content": q}],
                                       store=True, metadata=metadata)


def test_production_answers_become_one_clean_run_folder(prod: Any, emulator: Any, app: str) -> None:
    east = "ftops-prod-eastus"
    _serve(emulator, east, FRESH[:8] + FRESH[:3] + PLANTED + HELD_OUT[:2] + TRAINED[:1], app)
    _serve(emulator, east, ["an answer of another app"], app="billing")
    # the other prod spoke is in another tenant: its production data stays there unless the policy says so
    _serve(emulator, "ftops-prod-westeurope", [f"west {q}" for q in FRESH[:6]], app)
    traffic = prod.blobs.get_container_client(prod.settings.traffic_container)
    traffic.upload_blob("support-bot/2026-12-07.jsonl",
                        "\n".join([_line(q) for q in FRESH[8:]] + ["not json", _line(PLANTED[0])]))

    [outcome] = handle_harvest_tick(prod)

    assert outcome.folder and outcome.read == 8 + 3 + 3 + 2 + 1 + 8
    assert outcome.curation["dropped"] == {"duplicate": 3, "malformed: no answer": 1,
                                           "overlaps held-out evaluation data": 2,
                                           "overlaps the previous training set": 1, "personal data or secret": 4}
    datasets = prod.blobs.get_container_client(prod.settings.datasets_container)
    names = sorted(b.name for b in datasets.list_blobs(name_starts_with=outcome.folder))
    assert names == [f"{outcome.folder}/{n}" for n in ("eval.jsonl", "run.json", "train.jsonl")]
    train = datasets.download_blob(f"{outcome.folder}/train.jsonl").readall()
    lines = train.splitlines()
    assert len(lines) == 14 and privacy.scan_decoded(train) == [] and list(privacy.scan(train)) == []
    prompts = {prompt_text(json.loads(line)["messages"]) for line in lines}
    assert prompts == {prompt_text([{"role": "user", "content": q}]) for q in FRESH}
    assert not any("west" in p for p in prompts)
    assert datasets.download_blob(f"{outcome.folder}/eval.jsonl").readall().decode().count("router") == 5
    settings = json.loads(datasets.download_blob(f"{outcome.folder}/run.json").readall())
    assert settings["deployment_name"] == "support-bot" and settings["origin"]["champion_run"] == "champ"
    assert [a["action"] for a in prod.registry.audit_trail("champ")][-1] == "flywheel.harvested"

    again = handle_harvest_tick(prod)
    assert again[0].read == 0 and again[0].folder is None
    assert sorted(b.name for b in datasets.list_blobs()) == names


def test_a_pool_below_its_size_waits_for_the_next_tick_and_repeats_stay_duplicates(prod: Any, emulator: Any,
                                                                                    app: str) -> None:
    _serve(emulator, "ftops-prod-eastus", FRESH[:6], app)
    [first] = handle_harvest_tick(prod)
    assert first.folder is None and first.pool == 6
    _serve(emulator, "ftops-prod-eastus", FRESH[6:10], app)
    [second] = handle_harvest_tick(prod)
    assert second.read == 4 and second.folder and second.pool == 0
    train = prod.blobs.get_container_client(prod.settings.datasets_container).download_blob(
        f"{second.folder}/train.jsonl").readall()
    assert len(train.splitlines()) == 10
    _serve(emulator, "ftops-prod-eastus", FRESH[:3] + FRESH[10:12], app)   # asked again after their run
    [third] = handle_harvest_tick(prod)
    assert third.curation["dropped"] == {"duplicate": 3} and third.pool == 2


def _evaluated(deps: Any, low: float) -> None:
    """The champion's evaluation report as the evaluate stage writes it: its chosen model's interval."""
    report = {"gate_grader": "token_f1", "chosen": {"name": "final"},
              "candidates": [{"name": "final", "kind": "final",
                              "metrics": {"graders": {"token_f1": {"mean": low + 0.1, "low": low, "high": 1.0}}}}]}
    deps.blobs.get_container_client(deps.settings.reports_container).upload_blob(
        "champ/evaluation.json", json.dumps(report), overwrite=True)


def test_a_served_model_scoring_below_its_evaluation_is_drift_and_starts_a_harvest(prod: Any, emulator: Any,
                                                                                   app: str) -> None:
    _evaluated(prod, low=0.6)   # the served base model answers generically: far below what was measured
    _serve(emulator, "ftops-prod-eastus", FRESH[:10], app)
    [check] = handle_drift_tick(prod)
    assert check.drifted and check.examples == 5 and check.mean is not None and check.mean < 0.6
    assert check.harvest and check.harvest["folder"]          # the harvest ran at once
    assert [a["action"] for a in prod.registry.audit_trail("champ")][-2:] == ["drift.detected", "flywheel.harvested"]
    saved = json.loads(prod.blobs.get_blob_client(prod.settings.reports_container,
                                                  "drift/prod/support-bot.json").download_blob().readall())
    assert saved["drifted"] is True and saved["floor"] == 0.6
    # the operator sees it: a warning in `ftops status`, the run's API view (the console's badge reads it)
    from ftops_cli.status import collect, render_table
    assert "drift: prod/support-bot (run champ) scored token_f1" in render_table(collect(prod))
    from shared.azure.access import Caller
    from shared.operator.api import get_run
    view = get_run(Caller(oid="6f1c2d3e-0000-4000-8000-0000000000a9", tenant="t", name="Reader",
                          roles=frozenset({"Reader"})),
                   {"run_id": "champ"}, b"", prod).body
    assert [c["deployment"] for c in view["drift"]] == ["support-bot"]


def test_a_served_model_within_its_interval_is_not_drift(prod: Any) -> None:
    _evaluated(prod, low=0.0)
    [check] = handle_drift_tick(prod)
    assert not check.drifted and check.harvest is None and check.mean is not None
    assert "drift.detected" not in [a["action"] for a in prod.registry.audit_trail("champ")]
    from ftops_cli.status import collect
    assert collect(prod)["drift_warnings"] == []


def test_one_flywheel_run_at_a_time_per_deployment_name(prod: Any, emulator: Any, app: str) -> None:
    _serve(emulator, "ftops-prod-eastus", FRESH[:10], app)
    [first] = handle_harvest_tick(prod)
    assert first.folder
    start = f"{first.folder}/run.json"      # the run intake makes of it: its id from run.json's name and ETag
    etag = prod.blobs.get_blob_client(prod.settings.datasets_container, start).get_blob_properties().etag
    student = run_id_for(drop_started_by(start), etag)
    prod.registry.create_run(RunRecord(run_id=student, source=f"{prod.settings.datasets_container}/{start}",
                                       state="training"), actor="test")
    _serve(emulator, "ftops-prod-eastus", FRESH[10:14] + [f"{q} again" for q in FRESH[:8]], app)
    [waiting] = handle_harvest_tick(prod)
    assert waiting.folder is None and waiting.pool == 12 and student in (waiting.skipped or "")
    prod.registry.transition(student, "training_failed", actor="test")
    [after] = handle_harvest_tick(prod)        # the run ended: the full pool becomes the next folder
    assert after.folder and after.folder != first.folder and after.read == 0


# --- distillation: a teacher on the hub answers the production prompts --------------------------------------
PRODUCTION_ANSWER = "Here is the answer you need."
HARMFUL = "How would someone attack a depot with a weapon and kill the guard?"   # the content filter refuses it


@contextlib.contextmanager
def on_hub(deps: Any, name: str) -> Iterator[str]:
    """A base model deployed on the hub under `name` (a teacher or a judge) for the block."""
    from shared.evaluation.hubdeploy import create_deployment, hub_account
    from shared.evaluation.runner import Candidate
    hub = hub_account(deps.settings.hub)
    create_deployment(deps.arm_deployments, hub, Candidate(name, "base", "gpt-4.1-2025-04-14", name, "standard", 10),
                      tags={})
    try:
        yield name
    finally:
        deps.arm_deployments.delete_all(hub, [name])


@pytest.fixture
def teacher(prod: Any) -> Iterator[str]:
    """A deployment on the hub that relabels: a base model, so its answers are not production's."""
    with on_hub(prod, "teacher") as name:
        yield name


@pytest.fixture
def judge(prod: Any) -> Iterator[str]:
    with on_hub(prod, "judge") as name:
        yield name


@pytest.mark.parametrize("policy", [{"teacher": "teacher"}])
def test_the_teacher_answers_the_training_file_and_its_failures_are_dropped_with_their_reasons(
        prod: Any, emulator: Any, teacher: str) -> None:
    traffic = prod.blobs.get_container_client(prod.settings.traffic_container)
    traffic.upload_blob("support-bot/relabel.jsonl", "\n".join(_line(q) for q in [*FRESH[:12], HARMFUL]))
    # the teacher's first call fails 4 times with 429, its second 4 times with 500: beyond the SDK's 3 retries
    emulator.control.faults(next_429=4, next_500=4, accounts=[prod.settings.hub.account])
    try:
        [outcome] = handle_harvest_tick(prod)
    finally:
        emulator.control.faults(next_429=0, next_500=0, accounts=None)

    assert outcome.curation["dropped"] == {"teacher failed: 429 after retries": 1,
                                           "teacher failed: 500 after retries": 1,
                                           "teacher refused: content filter": 1}
    assert outcome.folder and outcome.curation["kept"] == 10
    train = prod.blobs.get_container_client(prod.settings.datasets_container).download_blob(
        f"{outcome.folder}/train.jsonl").readall()
    examples = [json.loads(line) for line in train.splitlines()]
    assert len(examples) == 10 and PRODUCTION_ANSWER.encode() not in train
    asked = prod.openai_client(max_retries=0)
    for example in examples:   # each answer is what the teacher says to that prompt, not what production said
        prompt = example["messages"][:-1]
        said = asked.chat.completions.create(model=teacher, messages=prompt, temperature=0)
        assert example["messages"][-1] == {"role": "assistant", "content": said.choices[0].message.content}
    assert {e["messages"][0]["content"] for e in examples} == set(FRESH[2:12])

    # what failed for want of the teacher is not remembered as kept: dropped again, it is relabelled now
    traffic.upload_blob("support-bot/again.jsonl", "\n".join(_line(q) for q in FRESH[:2]))
    [again] = handle_harvest_tick(prod)
    assert again.curation == {"kept": 2, "dropped": {}, "masked": 0, "privacy_findings": 0} and again.pool == 2




# --- drift on fresh production exchanges ---------------------------------------------------------------------
EXPERT = {q: f"To reset the password of router model R{i}, hold its reset button for ten seconds."
          for i, q in enumerate(HELD_OUT)}
EXPERT |= {q: f"The kettle model K{i} bought abroad is covered by the international warranty."
           for i, q in enumerate(TRAINED)}
ON_TOPIC = [f"Router model R{i}: how can its password be reset?" for i in range(5)] \
    + [f"Kettle model K{i} bought abroad, which warranty?" for i in range(5)]


def _evaluated_at(deps: Any, mean: float, low: float, high: float) -> None:
    report = {"gate_grader": "token_f1", "chosen": {"name": "final"},
              "candidates": [{"name": "final", "kind": "final",
                              "metrics": {"graders": {"token_f1": {"mean": mean, "low": low, "high": high}}}}]}
    deps.blobs.get_container_client(deps.settings.reports_container).upload_blob(
        "champ/evaluation.json", json.dumps(report), overwrite=True)


@pytest.fixture
def expert(prod: Any, emulator: Any) -> Iterator[str]:
    """The champion as a fine-tuned model that knows its subjects (routers, kettles) and serves prod, its
    held-out data the questions it answers well, a judge deployment on the hub; its evaluation measured
    token F1 0.95 [0.9, 1.0]."""
    client = prod.openai_client()
    lines = "\n".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                      for q, a in EXPERT.items())
    job = trained_job(client, emulator, lines.encode(), base_model="gpt-4.1-mini-2025-04-14")
    model = str(job.fine_tuned_model)
    reports = prod.blobs.get_container_client(prod.settings.reports_container)
    reports.upload_blob("champ/data/eval.jsonl", "\n".join(
        json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": EXPERT[q]}]})
        for q in HELD_OUT), overwrite=True)
    for target in prod.require_topology().environment("prod").targets:
        prod.spokes.deploy(target, "support-bot", model, tags={"managed_by": "ftops"})
    for slot in prod.registry.list_deployments(run_id="champ"):
        slot.model = model
        prod.registry.save_deployment(slot)
    _evaluated_at(prod, 0.95, 0.9, 1.0)
    with on_hub(prod, "judge"):
        yield model


@pytest.mark.parametrize("policy", [{"drift_examples": 20, "judge": "judge", "drift_starts_harvest": False}])
def test_production_answers_the_judge_scores_below_the_held_out_ones_are_drift(prod: Any, emulator: Any, app: str,
                                                                               expert: str) -> None:
    # production moved to questions the model was never trained on (deliveries); one carries an address
    _serve(emulator, "ftops-prod-eastus", FRESH[:10] + PLANTED[:1], app)

    [check] = handle_drift_tick(prod)

    assert not check.held_out_drifted and check.drifted          # the model still knows its subjects
    production = check.production or {}
    assert production["sampled"] == 11 and production["dropped"] == {"personal data or secret": 1}
    judged = production["judged"]
    assert judged["judge"] == "judge" and judged["examples"] == 10 and judged["baseline_examples"] == 5
    assert judged["drifted"] and judged["shortfall"][1] < 0
    assert judged["interval"]["mean"] < 0.2 and judged["baseline"]["mean"] > 0.8
    assert [a["action"] for a in prod.registry.audit_trail("champ")][-1] == "drift.detected"
    from ftops_cli.status import collect
    [warned] = collect(prod)["drift_warnings"]
    assert "the judge judge scored 10 production answers" in warned and "5 held-out examples" in warned


@pytest.mark.parametrize("policy", [{"drift_examples": 20, "judge": "judge"}])
def test_production_on_the_models_subjects_is_not_drift(prod: Any, emulator: Any, app: str, expert: str) -> None:
    _serve(emulator, "ftops-prod-eastus", ON_TOPIC, app)
    [check] = handle_drift_tick(prod)
    judged = (check.production or {})["judged"]
    assert judged["examples"] == 10 and not judged["drifted"] and not check.drifted and check.harvest is None
    assert "drift.detected" not in [a["action"] for a in prod.registry.audit_trail("champ")]


@pytest.mark.parametrize("policy", [{"drift_examples": 10, "drift_starts_harvest": False}])
def test_production_answers_with_a_reference_are_graded_against_the_evaluation(prod: Any, emulator: Any,
                                                                               app: str) -> None:
    _evaluated_at(prod, 0.7, 0.6, 0.8)
    corrected = [json.dumps({"messages": [{"role": "user", "content": q},
                                          {"role": "assistant", "content": PRODUCTION_ANSWER}],
                             "reference": f"Order {1000 + i} can be redirected from the depot by the courier."})
                 for i, q in enumerate(FRESH[:6])]
    traffic = prod.blobs.get_container_client(prod.settings.traffic_container)
    traffic.upload_blob("support-bot/corrected.jsonl", "\n".join(corrected))
    _serve(emulator, "ftops-prod-eastus", FRESH[6:8], app)        # no reference and no judge: not scored

    [check] = handle_drift_tick(prod)

    production = check.production or {}
    graded = production["with_reference"]
    assert graded["grader"] == "token_f1" and graded["examples"] == 6 and graded["drifted"]
    assert graded["baseline"]["mean"] == 0.7 and graded["interval"]["mean"] == 0.0
    assert "no judge" in production["judged"]["skipped"]
    assert check.drifted


@pytest.mark.parametrize("policy", [{"judge": "judge", "min_judge_score": 0.5}])
def test_the_grader_filter_keeps_the_answers_the_judge_finds_on_the_question(prod: Any, judge: str) -> None:
    on_point = [json.dumps({"messages": [{"role": "user", "content": q},
                                         {"role": "assistant", "content": f"Yes: {q.rstrip('?')} is possible."}]})
                for q in FRESH[:10]]
    vague = [_line(q) for q in FRESH[10:14]]          # "Here is the answer you need.": nothing about the question
    prod.blobs.get_container_client(prod.settings.traffic_container).upload_blob(
        "support-bot/judged.jsonl", "\n".join(on_point + vague))
    [outcome] = handle_harvest_tick(prod)
    assert outcome.curation["dropped"] == {"judged below min_judge_score": 4} and outcome.curation["kept"] == 10
    train = prod.blobs.get_container_client(prod.settings.datasets_container).download_blob(
        f"{outcome.folder}/train.jsonl").readall().decode()
    assert "Here is the answer you need" not in train and train.count("is possible") == 10


@pytest.mark.parametrize("policy", [{"teacher": "teacher"}])
def test_a_teacher_outage_loses_nothing_the_next_tick_reads_it_again(prod: Any, emulator: Any, app: str,
                                                                     teacher: str) -> None:
    _serve(emulator, "ftops-prod-eastus", FRESH[:3], app)
    emulator.control.faults(next_429=12, accounts=[prod.settings.hub.account])   # 3 prompts × (1 + 3 retries)
    try:
        [down] = handle_harvest_tick(prod)
    finally:
        emulator.control.faults(next_429=0, accounts=None)
    assert "TeacherUnavailable" in (down.skipped or "") and "teacher failed: 429 after retries" in down.skipped
    [back] = handle_harvest_tick(prod)
    assert back.read == 3 and back.curation["kept"] == 3 and back.pool == 3
