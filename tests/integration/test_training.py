"""Training against the emulator: exactly one job per key, whatever the deliveries, races, crashes, quota
refusals and storms; and the operator commands. What is asserted is what a user would see: the jobs on the
hub (the emulator's /_emulator/state), the run's state and error, the messages on the queues."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.app.settlement import PermanentError
from shared.azure.bus import decode_local
from shared.azure.hub import Hub, HubError
from shared.run import states
from shared.run.hub_api import SURFACES
from shared.run.messages import CloudEvent, RetrainCommand, RunCommand, TrainRequest
from shared.run.settings import RunSettings
from shared.stages import training
from shared.stages.intake import handle_blob_created
from shared.stages.polling import poll_tick
from shared.store.registry import RunRecord
from tests.integration.faults import Crash, Effects, Watched

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"


# --- helpers (test_polling imports them) -------------------------------------------------------------
def chat_lines(n: int, tag: str = "q") -> bytes:
    rows = [{"messages": [{"role": "user", "content": f"What is {tag} number {i}?"},
                          {"role": "assistant", "content": f"It is answer {i} for {tag}."}]} for i in range(n)]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def make_run(deps: Any, *, train: int = 12, validation: int = 4, settings: dict[str, Any] | None = None,
             run_id: str | None = None) -> str:
    """An accepted run, as intake leaves it: prepared files in the reports container, settings recorded."""
    run_id = run_id or f"run-{uuid.uuid4().hex[:10]}"
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    data_files = {}
    for role, n in (("train", train), ("validation", validation), ("eval", 4)):
        if n:
            path = f"{run_id}/data/{role}.jsonl"
            reports.upload_blob(path, chat_lines(n, f"{run_id}-{role}"), overwrite=True)
            data_files[role] = path
    effective = RunSettings.model_validate({"hyperparameters": {"n_epochs": 2}, **(settings or {})})
    record = RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=states.ACCEPTED,
                       settings=effective.model_dump(mode="json"), environments=["dev"], data_files=data_files)
    assert deps.registry.create_run(record, actor="test") is not None
    return run_id


class Recorder:
    """The real publisher, plus a list of what was sent (delayed messages are invisible on the queue)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.sent = inner, []

    def send(self, queue: str, event: CloudEvent, *, delay_seconds: float = 0) -> None:
        self.sent.append((queue, event, delay_seconds))
        self.inner.send(queue, event, delay_seconds=delay_seconds)

    def on(self, queue: str) -> list[CloudEvent]:
        return [e for q, e, _ in self.sent if q == queue]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def hub_env(emulator: Any, make_deps: Any) -> Any:
    """Fresh emulator state (jobs, files, faults), instant file processing, and deps recording sends."""
    emulator.control.reset()
    emulator.control.config(file_processing=0)

    def build(**overrides: str) -> Any:
        deps = make_deps(**overrides)
        deps.publisher = Recorder(deps.publisher)
        return deps
    return build


@pytest.fixture
def long_training(emulator: Any) -> Any:
    """Jobs train 60 emulator seconds: a job seen midway stays midway however slow the machine (real time
    runs on in the emulator's clock too)."""
    emulator.control.config(training=60)
    yield
    emulator.control.config(training=3.0)


def hub_jobs(emulator: Any) -> list[dict[str, Any]]:
    return emulator.control.state()["jobs"]


def peek(deps: Any, queue: str) -> list[dict[str, Any]]:
    client = deps.publisher.queue_client(queue)
    return [json.loads(decode_local(m.content)["body"]) for m in client.peek_messages(max_messages=32)]


def finish_jobs(emulator: Any, deps: Any, *, seconds: float = 60) -> None:
    emulator.control.advance(seconds)
    poll_tick(deps)


# --- exactly once ----------------------------------------------------------------------------------
def test_a_run_gets_one_job_even_when_its_message_arrives_twice(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)

    jobs = hub_jobs(emulator)
    run = deps.registry.require_run(run_id)
    assert len(jobs) == 1 and run.state == states.TRAINING and run.job_id == jobs[0]["id"]
    assert set(run.hub_files) == {"train", "validation"}               # eval stays held out
    assert deps.registry.tracked_jobs() == [(run_id, run.job_id)]
    assert [a["to_state"] for a in deps.registry.audit_trail(run_id)] == ["accepted", "uploading", "training"]


def test_a_file_a_killed_worker_uploaded_but_never_recorded_is_deleted_before_the_upload_again(hub_env, emulator):
    """A worker SIGKILLed between the hub's answer to an upload and the run's record of it left that file on the
    hub for good, counted against the resource's 100 files. The next worker deletes the run's unrecorded
    uploads (named after the run and role) before it uploads again: one file per role stays, the recorded one."""
    deps = hub_env()
    run_id = make_run(deps)
    client = deps.openai_client()
    from tests.integration.emulator_jobs import file_expiry
    orphan = client.files.create(file=(f"{run_id}-train.jsonl", b"{}\n"), purpose="fine-tune",
                                 expires_after=file_expiry(client)).id
    training.handle_train(TrainRequest(run_id=run_id), deps)

    run = deps.registry.require_run(run_id)
    names = sorted((f.filename, f.id) for f in client.files.list(purpose="fine-tune") if f.filename.startswith(run_id))
    assert run.state == states.TRAINING and orphan not in run.hub_files.values()
    assert names == sorted((f"{run_id}-{role}.jsonl", fid) for role, fid in run.hub_files.items())


def test_two_handlers_racing_on_the_same_key_create_one_job(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    barrier, errors = threading.Barrier(2), []

    def deliver() -> None:
        barrier.wait()
        try:
            training.handle_train(TrainRequest(run_id=run_id), deps)
        except Exception as exc:  # noqa: BLE001 - a transient failure is a retry, not a second job
            errors.append(exc)
    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _, event, _ in list(deps.publisher.sent):   # the loser's "look again later" message, delivered
        if event.type == "ftops.stage.train":
            training.handle_train(TrainRequest.model_validate(event.data), deps)

    assert len(hub_jobs(emulator)) == 1, errors
    assert deps.registry.require_run(run_id).state == states.TRAINING


class DiesAfterCreate:
    """The hub, but the process dies the moment the hub has created the job (before anything records it)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hub, name)

    def create_job(self, spec: Any) -> Any:
        self._hub.create_job(spec)
        raise Crash()


def test_a_crash_after_create_before_record_adopts_the_job_on_retry(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    dying = dataclasses.replace(deps, hub_port=lambda *, max_retries=6: DiesAfterCreate(deps.hub(max_retries=max_retries)))
    with pytest.raises(Crash):
        training.handle_train(TrainRequest(run_id=run_id), dying)
    assert len(hub_jobs(emulator)) == 1
    assert deps.registry.require_run(run_id).job_status == "creating"   # the attempt was recorded first

    training.handle_train(TrainRequest(run_id=run_id), deps)   # redelivery; the crashed claim is still fresh

    jobs, run = hub_jobs(emulator), deps.registry.require_run(run_id)
    assert len(jobs) == 1 and run.state == states.TRAINING and run.job_id == jobs[0]["id"]


def test_a_redelivery_reads_no_file_it_already_hashed(hub_env, emulator):
    """Training hashed every file on every redelivery (~120 times during one stall): the digests are kept in
    the run by blob ETag, so a redelivery of an unchanged file reads nothing; a changed file is read again."""
    deps = hub_env()
    run_id = make_run(deps)
    dying = dataclasses.replace(deps, hub_port=lambda *, max_retries=6: DiesAfterCreate(deps.hub(max_retries=max_retries)))
    with pytest.raises(Crash):
        training.handle_train(TrainRequest(run_id=run_id), dying)
    reads = Effects()   # every download of a blob
    counted = dataclasses.replace(deps, blobs=Watched(deps.blobs, reads, frozenset({"download_blob"}), "blob"))
    training.handle_train(TrainRequest(run_id=run_id), counted)   # the redelivery

    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and len(hub_jobs(emulator)) == 1
    assert reads.seen == []
    assert set(run.file_digests) == {run.data_files["train"], run.data_files["validation"]}


def test_training_reads_the_files_intake_accepted_only_to_upload_them(hub_env, emulator):
    """Intake hashes the split's files from its spooled copy as it uploads them: training's first delivery names its
    hub uploads from those digests and reads each file once, to upload it, not twice (up to 512 MB each). The
    digests are the files' own."""
    deps = hub_env()
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    datasets.upload_blob("digests.jsonl", SAMPLE.read_bytes(), overwrite=True)
    run_id = handle_blob_created("digests.jsonl", deps)
    accepted = deps.registry.require_run(run_id)
    assert accepted.state == states.ACCEPTED and set(accepted.file_digests) == set(accepted.data_files.values())
    reads = Effects()   # every download of a blob
    counted = dataclasses.replace(deps, blobs=Watched(deps.blobs, reads, frozenset({"download_blob"}), "blob"))
    training.handle_train(TrainRequest(run_id=run_id), counted)

    assert deps.registry.require_run(run_id).state == states.TRAINING and len(hub_jobs(emulator)) == 1
    trainable = [role for role in accepted.data_files if role in training.TRAINABLE_ROLES]
    assert len(reads.seen) == len(trainable) == 2   # each read once, as it goes to the hub; never to be hashed
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for path, kept in accepted.file_digests.items():
        assert kept["sha256"] == hashlib.sha256(reports.get_blob_client(path).download_blob().readall()).hexdigest()


def test_a_job_creation_whose_answer_is_lost_is_never_sent_twice(hub_env, emulator):
    """The hub made the job but its answer never came (a timeout): the SDK sent the POST again and the hub made a
    second, billed job (seen killing the host inside uploading). Now the handler's retry finds the first one."""
    deps = hub_env()
    run_id = make_run(deps)

    def impatient(*, max_retries: int = 6) -> Hub:   # the real client and retries, a 2 s read timeout
        return Hub(deps.hub_client(max_retries=max_retries).with_options(timeout=2.0), surface=deps.hub().surface)
    emulator.control.faults(hold={"method": "POST", "path": "/fine_tuning/jobs", "count": 1})
    try:
        with pytest.raises(HubError, match="create job"):
            training.handle_train(TrainRequest(run_id=run_id), dataclasses.replace(deps, hub_port=impatient))
    finally:
        emulator.control.faults(hold=None)
    assert len(hub_jobs(emulator)) == 1
    training.handle_train(TrainRequest(run_id=run_id), deps)   # the redelivery
    jobs, run = hub_jobs(emulator), deps.registry.require_run(run_id)
    assert len(jobs) == 1 and run.state == states.TRAINING and run.job_id == jobs[0]["id"]


def test_the_same_data_and_settings_in_another_run_reuse_the_job(hub_env, emulator):
    deps = hub_env()
    first = make_run(deps, run_id=f"same-{uuid.uuid4().hex[:6]}")
    training.handle_train(TrainRequest(run_id=first), deps)
    # a second run whose prepared files have the same content (same key)
    second = make_run(deps, run_id=f"copy-{uuid.uuid4().hex[:6]}")
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for role in ("train", "validation"):
        body = reports.download_blob(f"{first}/data/{role}.jsonl").readall()
        reports.upload_blob(f"{second}/data/{role}.jsonl", body, overwrite=True)
    training.handle_train(TrainRequest(run_id=second), deps)
    assert len(hub_jobs(emulator)) == 1
    assert deps.registry.require_run(second).job_id == deps.registry.require_run(first).job_id


def test_a_repeat_of_a_finished_drop_trains_its_own_job_and_is_never_stuck(hub_env, emulator):
    """Issue 20: a repeat drop (same data and settings) after the first run finished adopted that job, whose
    results file was already deleted from the hub, and stayed `training` for good."""
    deps = hub_env(HUB_FILE_RETENTION="delete")
    first = make_run(deps, run_id=f"same-{uuid.uuid4().hex[:6]}")
    training.handle_train(TrainRequest(run_id=first), deps)
    for _ in range(10):
        finish_jobs(emulator, deps, seconds=600)
        if deps.registry.require_run(first).state == states.TRAINED:
            break
    assert deps.registry.require_run(first).state == states.TRAINED   # its files tidied from the hub
    second = make_run(deps, run_id=f"again-{uuid.uuid4().hex[:6]}")
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for role in ("train", "validation"):
        body = reports.download_blob(f"{first}/data/{role}.jsonl").readall()
        reports.upload_blob(f"{second}/data/{role}.jsonl", body, overwrite=True)
    training.handle_train(TrainRequest(run_id=second), deps)
    training.handle_train(TrainRequest(run_id=second), deps)   # a redelivery: still one job of its own
    jobs = hub_jobs(emulator)
    assert len(jobs) == 2 and deps.registry.require_run(second).job_id not in (None, jobs[0]["id"])
    for _ in range(10):
        finish_jobs(emulator, deps, seconds=600)
        if deps.registry.require_run(second).state == states.TRAINED:
            break
    assert deps.registry.require_run(second).state == states.TRAINED


# --- hub limits and storms ---------------------------------------------------------------------------
def test_a_base_model_whose_fine_tuning_azure_closed_fails_before_any_upload(hub_env, emulator):
    """The Models API's deprecation.fineTune has passed: the run fails with the date, nothing reaches the hub."""
    deps = hub_env()
    run_id = make_run(deps)
    emulator.control.config(model_deprecations={"gpt-4.1-mini": {"fineTune": "2026-01-01T00:00:00Z"}})
    try:
        training.handle_train(TrainRequest(run_id=run_id), deps)
    finally:
        emulator.control.config(model_deprecations={})
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING_FAILED and run.error["code"] == "model_retired"
    assert "stopped new fine-tuning of gpt-4.1-mini 2025-04-14 on 2026-01-01" in run.error["message"]
    assert hub_jobs(emulator) == [] and emulator.control.state()["files"] == 0


def test_beyond_the_hubs_concurrent_jobs_a_run_waits_in_ftops_queue_and_status_says_why(hub_env, emulator):
    """Azure trains 3 jobs at once per resource (Learn quotas-limits, 2026-02): ftops keeps at most
    HUB_CONCURRENT_JOBS of its jobs on the hub; the next run waits in waiting_for_quota with the reason on the
    run (what `ftops status` prints), and trains once a job is no longer followed."""
    from ftops_cli.views import reason
    deps = hub_env(HUB_CONCURRENT_JOBS="1")
    first, second = make_run(deps), make_run(deps)
    training.handle_train(TrainRequest(run_id=first), deps)
    training.handle_train(TrainRequest(run_id=second), deps)
    assert deps.registry.require_run(first).state == states.TRAINING
    waiting = deps.registry.require_run(second)
    assert waiting.state == states.WAITING_FOR_QUOTA and len(hub_jobs(emulator)) == 1
    assert "1 fine-tuning jobs are already queued or running on the hub" in reason(waiting)
    assert "HUB_CONCURRENT_JOBS" in reason(waiting)

    training.cancel_run(RunCommand(run_id=first), deps)   # its job ends: the slot is free
    training.handle_train(TrainRequest(run_id=second, attempt=1), deps)
    started = deps.registry.require_run(second)
    assert started.state == states.TRAINING and started.error is None and len(hub_jobs(emulator)) == 2


def test_a_quota_refusal_waits_without_burning_the_delivery_then_trains_once(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    emulator.control.config(max_queued_jobs=0)
    training.handle_train(TrainRequest(run_id=run_id), deps)     # returns: the message completes

    run = deps.registry.require_run(run_id)
    retries = deps.publisher.on(deps.settings.train_queue)
    assert run.state == states.WAITING_FOR_QUOTA and hub_jobs(emulator) == []
    assert [e.id for e in retries] == [f"train-{run_id}-{run.job_key[:12]}-a1"]
    assert next(d for _, _, d in deps.publisher.sent if d) >= 30      # delayed, with backoff
    audit = deps.registry.audit_trail(run_id)[-1]
    assert audit["to_state"] == states.WAITING_FOR_QUOTA and "quota" in audit["detail"]["reason"]

    training.handle_train(TrainRequest.model_validate(retries[0].data), deps)   # still full: waits again
    assert [e.id for e in deps.publisher.on(deps.settings.train_queue)][-1] == f"train-{run_id}-{run.job_key[:12]}-a2"
    emulator.control.config(max_queued_jobs=20)
    training.handle_train(TrainRequest(run_id=run_id, attempt=2), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and len(hub_jobs(emulator)) == 1
    assert emulator.control.state()["files"] == 2        # the uploads were reused, not repeated


def test_429_and_5xx_storms_are_ridden_out_and_never_end_the_run(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    emulator.control.faults(next_429=4, retry_after_ms=50)   # honoured: 50 ms waits, not backoff
    training.handle_train(TrainRequest(run_id=run_id), deps)
    assert deps.registry.require_run(run_id).state == states.TRAINING and len(hub_jobs(emulator)) == 1
    emulator.control.faults(next_500=2)                       # backed off, then answered
    assert poll_tick(deps).errors == 0
    statuses = [r["status"] for r in emulator.control.requests()]
    assert statuses.count(429) == 4 and statuses.count(500) == 2

    emulator.control.faults(rate_500=1.0)                # the hub is down for a whole tick
    summary = poll_tick(deps)
    assert summary.errors == 1 and deps.registry.require_run(run_id).state == states.TRAINING
    emulator.control.faults(rate_500=0.0)
    finish_jobs(emulator, deps)
    assert deps.registry.require_run(run_id).state == states.TRAINED


def test_a_bad_request_ends_the_run_with_the_hubs_message(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps, settings={"base_model": "gpt-4.1-mini", "suffix": "x" * 18})
    emulator.control.faults()    # none
    # the hub refuses a hyperparameter its spec does not list: make the job body carry one
    run = deps.registry.require_run(run_id)
    original = training.job_spec

    def bad_spec(settings: RunSettings, hub_files: dict[str, str]):
        spec = original(settings, hub_files)
        return type(spec)(**{**spec.__dict__, "method": {"type": "supervised",
                                                         "supervised": {"hyperparameters": {"gamma": 1}}}})
    try:
        training.job_spec = bad_spec
        training.handle_train(TrainRequest(run_id=run.run_id), deps)
    finally:
        training.job_spec = original
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING_FAILED and hub_jobs(emulator) == []
    assert "Unrecognized request argument supplied: method.supervised.hyperparameters.gamma" in run.error["message"]
    assert run.error["status"] == 400
    assert emulator.control.state()["files"] == 0        # its uploads were removed from the hub


@pytest.mark.parametrize(("api_version", "method"), [("2024-10-21", "dpo"), ("2025-04-01-preview", "reinforcement")])
def test_a_method_the_hub_api_lacks_fails_the_run_before_any_upload(hub_env, emulator, api_version, method):
    deps = hub_env(HUB_API_VERSION=api_version)
    grader = {"type": "string_check", "name": "g", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "operation": "eq"}
    settings: dict[str, Any] = {"method": method, **({"grader": grader} if method == "reinforcement" else {})}
    run_id = make_run(deps, settings=settings)
    emulator.control.clear_requests()
    training.handle_train(TrainRequest(run_id=run_id), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING_FAILED and run.error["code"] == "unsupported_on_hub_api"
    assert f"method {method!r} is not available on hub API {api_version!r} (HUB_API_VERSION)" in run.error["message"]
    assert [r for r in emulator.control.requests() if r["surface"] == "data"] == []   # not one call


def test_pause_on_the_ga_api_is_refused_before_calling_and_works_on_v1(hub_env, emulator, long_training):
    ga = hub_env(HUB_API_VERSION="2024-10-21")
    run_id = make_run(ga)
    training.handle_train(TrainRequest(run_id=run_id), ga)
    emulator.control.advance(10)                          # training, past its first step, far from done
    emulator.control.clear_requests()
    with pytest.raises(PermanentError, match="cannot pause job .*no /fine_tuning/jobs/\\{id\\}/pause"):
        training.pause_run(RunCommand(run_id=run_id), ga)
    assert [r for r in emulator.control.requests() if r["surface"] == "data"] == []
    # the same run and job through the default surface (v1): the pause goes through
    v1 = hub_env()
    training.pause_run(RunCommand(run_id=run_id), dataclasses.replace(ga, hub_port=v1.hub))
    assert ga.registry.require_run(run_id).job_status == "paused"


# --- commands ----------------------------------------------------------------------------------------
def test_cancel_stops_the_job_on_the_hub_and_frees_its_files(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    training.cancel_run(RunCommand(run_id=run_id, requested_by="ops@contoso", reason="wrong data"), deps)
    training.cancel_run(RunCommand(run_id=run_id, requested_by="ops@contoso"), deps)   # duplicate: no-op

    run = deps.registry.require_run(run_id)
    assert run.state == states.CANCELLED and [j["status"] for j in hub_jobs(emulator)] == ["cancelled"]
    assert deps.registry.tracked_jobs() == [] and emulator.control.state()["files"] == 0
    last = deps.registry.audit_trail(run_id)[-1]
    assert last["actor"] == "ops@contoso" and last["detail"]["reason"] == "wrong data"


def test_pause_and_resume_reach_the_job(hub_env, emulator, long_training):
    deps = hub_env()
    run_id = make_run(deps, train=30)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    emulator.control.advance(10)                          # validated, queued, started, past step 1, far from done
    training.pause_run(RunCommand(run_id=run_id, requested_by="ops@contoso"), deps)
    assert hub_jobs(emulator)[0]["status"] == "paused"
    emulator.control.advance(120)                         # a paused job does not finish
    poll_tick(deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and run.job_status == "paused"

    training.resume_run(RunCommand(run_id=run_id, requested_by="ops@contoso"), deps)
    finish_jobs(emulator, deps, seconds=120)
    assert deps.registry.require_run(run_id).state == states.TRAINED
    actions = [a["action"] for a in deps.registry.audit_trail(run_id)]
    assert "job.pause" in actions and "job.resume" in actions


def test_resume_of_a_job_that_is_not_paused_reports_the_hubs_reason(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    with pytest.raises(training.PermanentError, match="Only a paused job can be resumed"):
        training.resume_run(RunCommand(run_id=run_id), deps)


def test_retrain_uses_the_same_data_with_new_settings_as_a_new_job(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    finish_jobs(emulator, deps)
    first = deps.registry.require_run(run_id)
    assert first.state == states.TRAINED
    first.approvals = {"prod": {"model": first.fine_tuned_model, "approver_oid": "someone"}}   # given earlier
    deps.registry.save_run(first)

    with pytest.raises(training.PermanentError, match="cannot change the owner"):   # four eyes hang on it
        training.retrain_run(RetrainCommand(run_id=run_id, settings={"owner": "6f1c2d3e-0000-4000-8000-0000000000a1"}),
                             deps)
    training.retrain_run(RetrainCommand(run_id=run_id, settings={"hyperparameters": {"n_epochs": 3}},
                                        requested_by="ds@contoso"), deps)
    assert deps.registry.require_run(run_id).approvals == {}   # the next model is approved afresh
    request = deps.publisher.on(deps.settings.train_queue)[-1]
    training.handle_train(TrainRequest.model_validate(request.data), deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and run.job_id != first.job_id and len(hub_jobs(emulator)) == 2
    assert run.settings["hyperparameters"]["n_epochs"] == 3


def test_multipart_upload_streams_a_large_file_in_parts(hub_env, emulator):
    deps = hub_env(HUB_API_VERSION="2025-04-01-preview")   # the v1 API has no uploads API
    run_id = make_run(deps, train=60)
    blob = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/data/train.jsonl")
    body = blob.download_blob().readall()
    hub = Hub(deps.hub_client(), surface=SURFACES["2025-04-01-preview"], multipart_threshold=1024, part_size=1000)
    file_id = hub.upload_file(blob, "big.jsonl")
    hub.wait_processed(file_id)

    assert deps.openai_client().files.content(file_id).read() == body
    parts = [r for r in emulator.control.requests() if r["path"].endswith("/parts")]
    assert len(parts) == -(-len(body) // 1000)


def test_the_hub_is_called_on_the_v1_api_with_an_entra_token_by_default(hub_env, emulator):
    deps = hub_env()
    run_id = make_run(deps)
    emulator.control.clear_requests()
    training.handle_train(TrainRequest(run_id=run_id), deps)
    calls = [r for r in emulator.control.requests() if r["surface"] == "data"]
    assert calls and {r["path"].split("/openai/")[1].split("/")[0] for r in calls} == {"v1"}
    assert all("api-version" not in r["query"] for r in calls)
    assert {r["auth_tenant"] for r in calls} == {deps.settings.hub.tenant}   # a token, refreshed per request
    assert deps.registry.require_run(run_id).state == states.TRAINING
