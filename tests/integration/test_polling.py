"""The poll tick against the emulator: every outcome recorded once, nothing stuck, within its bound."""
from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

import pytest

from shared.run import states
from shared.run.messages import RunCommand, TrainRequest, evaluate_message_id
from shared.stages import polling, training
from shared.stages.polling import poll_tick
from shared.store.registry import RunRecord
from tests.integration import test_training as helpers
from tests.integration.emulator_jobs import file_expiry
from tests.integration.faults import Crash
from tests.integration.test_training import finish_jobs, make_run, peek

pytestmark = pytest.mark.integration
hub_env, long_training = helpers.hub_env, helpers.long_training   # fixtures shared with the training tests


def started_run(deps: Any, **kwargs: Any) -> str:
    run_id = make_run(deps, **kwargs)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    return run_id


def blob_text(deps: Any, path: str) -> str:
    return deps.blobs.get_blob_client(deps.settings.reports_container, path).download_blob().readall().decode()


def test_a_succeeded_job_is_recorded_once_and_asks_for_one_evaluation(hub_env, emulator, long_training):
    deps = hub_env()
    run_id = started_run(deps)
    emulator.control.advance(3)                           # mid-training: progress, no outcome yet
    poll_tick(deps)
    midway = deps.registry.require_run(run_id)
    assert midway.state == states.TRAINING and midway.events_cursor and midway.job_status == "running"

    finish_jobs(emulator, deps, seconds=120)
    poll_tick(deps)                                        # a later tick finds nothing left to follow
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINED and run.fine_tuned_model and run.trained_tokens
    assert run.metrics["steps"] > 0 and {"train_loss", "train_mean_token_accuracy"} <= set(run.metrics["final"])
    assert json.loads(blob_text(deps, run.metrics["blob"]))["steps"][0]["step"] == 1
    assert len(run.checkpoints) == 2 and run.checkpoints[-1]["model"].endswith(f"ckpt-step-{run.metrics['steps']}")
    assert [m["id"] for m in peek(deps, deps.settings.evaluate_queue)] == [evaluate_message_id(run_id, run.job_id)]
    assert deps.registry.tracked_jobs() == [] and emulator.control.state()["files"] == 0
    events = [json.loads(line) for line in blob_text(deps, f"{run_id}/training/events.jsonl").splitlines()]
    assert len({e["id"] for e in events}) == len(events)   # each event once …
    metric_steps = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert metric_steps == list(range(10, run.metrics["steps"] + 1, 10))   # … nothing skipped, oldest first
    assert [e["message"] for e in events][-2].startswith("Completed results file: ")


def test_two_overlapping_ticks_send_one_evaluation_request(hub_env, emulator):
    deps = hub_env()
    run_ids = [started_run(deps) for _ in range(3)]
    emulator.control.advance(120)
    barrier = threading.Barrier(2)

    def tick() -> None:
        barrier.wait()
        poll_tick(deps)
    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = [m["id"] for m in peek(deps, deps.settings.evaluate_queue)]
    assert sorted(sent) == sorted(evaluate_message_id(r, deps.registry.require_run(r).job_id) for r in run_ids)
    assert all(deps.registry.require_run(r).state == states.TRAINED for r in run_ids)


class DiesSendingTo:
    """The publisher, but the process dies when it sends to `queue`."""

    def __init__(self, publisher: Any, queue: str) -> None:
        self._publisher, self._queue = publisher, queue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._publisher, name)

    def send(self, queue: str, event: Any, **kwargs: Any) -> None:
        if queue == self._queue:
            raise Crash()
        self._publisher.send(queue, event, **kwargs)


def test_a_tick_that_dies_after_trained_is_finished_by_the_next_tick(hub_env, emulator):
    deps = hub_env()
    run_id = started_run(deps)
    emulator.control.advance(60)
    dying = dataclasses.replace(deps, publisher=DiesSendingTo(deps.publisher, deps.settings.evaluate_queue))
    with pytest.raises(Crash):
        polling.poll_job(dying, dying.hub(), run_id, deps.registry.require_run(run_id).job_id)

    poll_tick(deps)   # the request is still in the run's outbox: the next tick sends it
    poll_tick(deps)
    run = deps.registry.require_run(run_id)
    assert [m["id"] for m in peek(deps, deps.settings.evaluate_queue)] == [evaluate_message_id(run_id, run.job_id)]
    assert deps.registry.tracked_jobs() == []


@pytest.mark.parametrize(("failure", "check", "harm_types"), [
    ("safety", "model evaluation", ["Violence", "Self Harm"]),
    ("safety_data", "training data", ["hate_fairness", "self_harm", "violence"]),
])
def test_a_job_failed_by_safety_checks_names_them_in_the_run_event_and_audit(hub_env, emulator, failure, check,
                                                                             harm_types):
    deps = hub_env()
    emulator.control.faults(fail_next_jobs=1, job_failure=failure)
    run_id = started_run(deps)
    finish_jobs(emulator, deps)

    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING_FAILED and run.error["safety"] is True
    assert run.error["safety_check"] == check and run.error["harm_types"] == harm_types
    assert f"safety {'check' if check == 'training data' else 'evaluation'}" in run.error["reason"]
    events = [e for e in peek(deps, deps.settings.events_topic) if e["type"] == "ftops.run.training_failed"]
    assert len(events) == 1 and all(h in events[0]["data"]["reason"] for h in harm_types)
    last = deps.registry.audit_trail(run_id)[-1]
    assert last["to_state"] == states.TRAINING_FAILED and last["actor"] == "ftops.polling"
    assert deps.registry.tracked_jobs() == [] and emulator.control.state()["files"] == 0


def test_a_succeeded_job_is_followed_until_the_hub_posts_its_results_file(hub_env, emulator):
    deps = hub_env()
    emulator.control.config(results=120)   # a long postprocessing
    run_id = started_run(deps)
    emulator.control.advance(30)           # trained, results not yet there
    assert poll_tick(deps).outcomes == {"awaiting_results": 1}
    waiting = deps.registry.require_run(run_id)
    assert waiting.state == states.TRAINING and waiting.job_status == "succeeded"
    assert not peek(deps, deps.settings.evaluate_queue)
    emulator.control.advance(120)
    assert poll_tick(deps).outcomes == {"succeeded": 1}
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINED and run.metrics["steps"] > 0 and "awaiting_results_since" not in run.metrics
    assert [m["id"] for m in peek(deps, deps.settings.evaluate_queue)] == [evaluate_message_id(run_id, run.job_id)]


def test_a_job_cancelled_on_the_hub_is_recorded_as_cancelled(hub_env, emulator):
    deps = hub_env()
    run_id = started_run(deps)
    deps.openai_client().fine_tuning.jobs.cancel(deps.registry.require_run(run_id).job_id)   # from the portal
    poll_tick(deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.CANCELLED and run.job_status == "cancelled"
    assert deps.registry.audit_trail(run_id)[-1]["detail"]["reason"] == "cancelled on the hub"
    assert deps.registry.tracked_jobs() == []


def test_stale_index_entries_do_not_stick(hub_env, emulator):
    deps = hub_env()
    run_id = started_run(deps)
    training.cancel_run(RunCommand(run_id=run_id), deps)
    deps.registry.track_job(run_id, "ftjob-gone")          # e.g. left by a crash
    deps.registry.track_job("no-such-run", "ftjob-none")
    summary = poll_tick(deps)
    assert summary.outcomes == {"stale": 2} and deps.registry.tracked_jobs() == []


def test_a_tick_stays_within_its_concurrency_bound(hub_env, emulator):
    deps = hub_env()
    client = deps.openai_client()
    file_id = client.files.create(file=("t.jsonl", b"".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                 {"role": "assistant", "content": f"a{i}"}]}).encode() + b"\n"
        for i in range(12))), purpose="fine-tune", expires_after=file_expiry(client)).id
    for i in range(12):
        job = client.fine_tuning.jobs.create(model="gpt-4.1-mini-2025-04-14", training_file=file_id)
        run = RunRecord(run_id=f"bound-{i}", source="test", state=states.ACCEPTED)
        deps.registry.create_run(run, actor="test")
        deps.registry.transition(run.run_id, states.UPLOADING, actor="test")
        deps.registry.transition(run.run_id, states.TRAINING, actor="test", job_id=job.id)
        deps.registry.track_job(run.run_id, job.id)
    emulator.control.faults(latency_ms=80)
    emulator.control.clear_requests()
    summary = poll_tick(deps, concurrency=3)
    emulator.control.faults(latency_ms=0)
    seen = emulator.control.request_stats()                # the bound as the hub saw it

    assert summary.jobs == 12 and summary.errors == 0 and sum(summary.outcomes.values()) == 12
    assert summary.max_jobs_in_flight == 3                 # used fully, never exceeded
    assert 3 < summary.max_in_flight <= 9                  # a job's three reads go out together
    hub_calls = [r for r in emulator.control.requests() if "/fine_tuning/jobs" in r["path"]]
    assert len(hub_calls) == summary.hub_calls
    assert 3 < seen["max_in_flight"] <= 9 and seen["in_flight"] == 0


def unknown_status_warnings(caplog: pytest.LogCaptureFixture, job_id: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "shared.azure.hub" and "does not know" in r.getMessage() and job_id in r.getMessage()]


def test_an_unknown_job_status_is_followed_as_running_logged_once_and_the_job_still_finishes(
        hub_env, emulator, caplog):
    deps = hub_env()
    run_id = started_run(deps)
    job_id = deps.registry.require_run(run_id).job_id
    emulator.control.advance(3)
    emulator.control.faults(status_override={job_id: "warming_up"})   # a status newer than ftops
    caplog.set_level(logging.WARNING, logger="shared.azure.hub")
    for _ in range(3):
        emulator.control.advance(60)                       # the job really succeeds meanwhile
        assert poll_tick(deps).errors == 0
        run = deps.registry.require_run(run_id)
        assert run.state == states.TRAINING and run.job_status == "warming_up"
    assert deps.registry.tracked_jobs() == [(run_id, job_id)] and not peek(deps, deps.settings.evaluate_queue)
    assert len(unknown_status_warnings(caplog, job_id)) == 1

    emulator.control.faults(status_override={})
    poll_tick(deps)
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINED and run.fine_tuned_model and run.job_status == "succeeded"
    assert [m["id"] for m in peek(deps, deps.settings.evaluate_queue)] == [evaluate_message_id(run_id, run.job_id)]
    assert deps.registry.tracked_jobs() == [] and len(unknown_status_warnings(caplog, job_id)) == 1


def test_an_unknown_status_already_in_the_create_answer_is_logged_too(hub_env, emulator, caplog):
    deps = hub_env()
    emulator.control.faults(status_override={"next": "warming_up"})
    caplog.set_level(logging.WARNING, logger="shared.azure.hub")
    run_id = started_run(deps)
    job_id = deps.registry.require_run(run_id).job_id
    poll_tick(deps)
    assert deps.registry.require_run(run_id).state == states.TRAINING
    assert len(unknown_status_warnings(caplog, job_id)) == 1


def test_pausing_and_resuming_are_seen_by_the_poller_and_the_job_finishes(hub_env, emulator, caplog,
                                                                       long_training):
    deps = hub_env()
    emulator.control.config(pausing=30, resuming=30)
    try:
        run_id = started_run(deps, train=30)
        emulator.control.advance(10)                       # validated, queued, started, past step 1, far from done
        caplog.set_level(logging.WARNING, logger="shared.azure.hub")
        seen = []
        training.pause_run(RunCommand(run_id=run_id, requested_by="ops@contoso"), deps)
        seen.append(deps.registry.require_run(run_id).job_status)   # what the pause answer said
        poll_tick(deps)
        seen.append(deps.registry.require_run(run_id).job_status)
        emulator.control.advance(30)
        poll_tick(deps)
        seen.append(deps.registry.require_run(run_id).job_status)
        emulator.control.advance(300)                      # paused: training does not go on
        poll_tick(deps)
        seen.append(deps.registry.require_run(run_id).job_status)
        training.resume_run(RunCommand(run_id=run_id, requested_by="ops@contoso"), deps)
        poll_tick(deps)
        seen.append(deps.registry.require_run(run_id).job_status)
        assert seen == ["pausing", "pausing", "paused", "paused", "resuming"]
        assert deps.registry.require_run(run_id).state == states.TRAINING

        emulator.control.advance(30)
        poll_tick(deps)
        assert deps.registry.require_run(run_id).job_status == "running"
        finish_jobs(emulator, deps, seconds=120)
        run = deps.registry.require_run(run_id)
        assert run.state == states.TRAINED
        assert [m["id"] for m in peek(deps, deps.settings.evaluate_queue)] == [evaluate_message_id(run_id, run.job_id)]
        assert not [r for r in caplog.records if "does not know" in r.getMessage()]   # known statuses
        events = blob_text(deps, f"{run_id}/training/events.jsonl")
        assert all(m in events for m in ("Pausing job.", "Job paused.", "Resuming job.", "Job resumed."))
    finally:
        emulator.control.config(pausing=0, resuming=0)
