"""The poll tick with an in-memory registry and a fake hub (no I/O)."""
from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import fakes
from fakes import MemoryDeps, MemoryRegistry, settings_for_tests

from shared.azure.hub import Hub, HubJob, HubTransientError
from shared.run import states
from shared.run.messages import evaluate_message_id
from shared.stages.polling import poll_tick
from shared.store.registry import RunRecord


class FakeHub:
    """Jobs by id; counts concurrent calls."""

    def __init__(self, jobs: dict[str, HubJob], delay: float = 0.0) -> None:
        self.jobs, self.delay = jobs, delay
        self.in_flight = self.most = 0
        self.lock = threading.Lock()
        self.deleted: list[str] = []
        self.events_since: list[Any] = []

    def _enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.delay)
        with self.lock:
            self.in_flight -= 1

    def retrieve(self, job_id: str) -> HubJob:
        self._enter()
        return self.jobs[job_id]

    def new_events(self, job_id: str, *, since: str | None) -> list[dict[str, Any]]:
        self._enter()
        self.events_since.append(since)
        return [] if since else [{"id": f"{job_id}-ev1", "type": "message", "message": "hi", "data": None}]

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        self._enter()
        return []

    def results_metrics(self, file_id: str) -> dict[str, Any]:
        return {"steps": [{"step": 1, "train_loss": 1.0}], "final": {"train_loss": 1.0}}

    def delete_files(self, ids: list[str]) -> list[str]:
        self.deleted += ids
        return ids


def make_deps(registry: MemoryRegistry, hub: FakeHub, concurrency: int = 8,
              results_wait_seconds: float = 900.0) -> MemoryDeps:
    settings = settings_for_tests(poll_concurrency=concurrency, evaluate_queue="evaluate", events_topic="events",
                                  hub_file_retention="delete", results_wait_seconds=results_wait_seconds)
    return fakes.make_deps(settings, registry=registry, hub=hub)


def training_run(registry: MemoryRegistry, run_id: str, job_id: str, **fields: Any) -> None:
    registry.runs[run_id] = RunRecord(run_id=run_id, source="t", state=states.TRAINING, job_id=job_id,
                                      hub_files={"train": f"file-{run_id}"}, etag="1", **fields)
    registry.track_job(run_id, job_id)


def test_an_unknown_status_is_treated_as_running_and_logged_once(caplog) -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1")
    hub = FakeHub({"j1": HubJob(id="j1", status="warming_up", model="m")})
    deps = make_deps(registry, hub)
    with caplog.at_level(logging.WARNING, logger="shared.stages.polling"):
        poll_tick(deps)
        poll_tick(deps)
    run = registry.require_run("r1")
    assert run.state == states.TRAINING and run.job_status == "warming_up" and registry.tracked
    assert [r.getMessage() for r in caplog.records].count(
        "run r1: job j1 has status 'warming_up', which ftops does not know; treating it as running") == 1


def test_each_tick_asks_only_for_events_after_the_cursor() -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1")
    hub = FakeHub({"j1": HubJob(id="j1", status="running", model="m")})
    deps = make_deps(registry, hub)
    poll_tick(deps)
    poll_tick(deps)
    assert hub.events_since == [None, "j1-ev1"] and registry.require_run("r1").events_cursor == "j1-ev1"


def test_a_tick_keeps_to_its_bound_and_polls_every_job() -> None:
    registry = MemoryRegistry()
    jobs = {}
    for i in range(10):
        training_run(registry, f"r{i}", f"j{i}", job_status="running")
        jobs[f"j{i}"] = HubJob(id=f"j{i}", status="running", model="m")
    hub = FakeHub(jobs, delay=0.02)
    summary = poll_tick(make_deps(registry, hub), concurrency=2)
    assert summary.max_jobs_in_flight == 2 and summary.max_in_flight <= 6 and hub.most <= 6
    assert sum(summary.outcomes.values()) == 10 and summary.hub_calls == 30


def test_two_ticks_racing_on_success_send_one_evaluation_request() -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1", job_key="k")
    done = HubJob(id="j1", status="succeeded", model="m", fine_tuned_model="m.ft-j1", trained_tokens=9,
                  result_files=["file-results"])
    hub = FakeHub({"j1": done}, delay=0.01)
    deps = make_deps(registry, hub)
    threads = [threading.Thread(target=poll_tick, args=(deps,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    run = registry.require_run("r1")
    assert run.state == states.TRAINED and run.fine_tuned_model == "m.ft-j1" and run.trained_tokens == 9
    # one request: a tick that finds it still in the outbox resends the same MessageId, which the bus drops
    assert {e.id for q, e in deps.publisher.sent if q == "evaluate"} == {evaluate_message_id("r1", "j1")}
    assert set(hub.deleted) >= {"file-r1", "file-results"} and not registry.tracked


def test_a_transient_hub_error_never_ends_the_run() -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1")

    class Down(FakeHub):
        def retrieve(self, job_id: str) -> HubJob:
            raise HubTransientError("job j1: the hub did not answer (APITimeoutError)")
    summary = poll_tick(make_deps(registry, Down({})))
    assert summary.errors == 1 and registry.require_run("r1").state == states.TRAINING and registry.tracked


def test_new_events_reads_newest_first_down_to_the_cursor() -> None:
    newest_first = [SimpleNamespace(id=f"e{i}", created_at=i, level="info", type="message", message=f"m{i}",
                                    data=None) for i in range(250, 0, -1)]
    asked: list[dict[str, Any]] = []

    def list_events(job_id: str, limit: int, after: str | None = None) -> Any:
        asked.append({"limit": limit, "after": after})
        start = 0 if after is None else [e.id for e in newest_first].index(after) + 1
        page = newest_first[start:start + limit]
        return SimpleNamespace(data=page, has_more=start + limit < len(newest_first))
    hub = Hub(SimpleNamespace(fine_tuning=SimpleNamespace(jobs=SimpleNamespace(list_events=list_events))))
    assert [e["id"] for e in hub.new_events("j", since="e245")] == ["e246", "e247", "e248", "e249", "e250"]
    assert asked == [{"limit": 20, "after": None}]
    asked.clear()
    assert len(hub.new_events("j", since=None)) == 250 and [a["limit"] for a in asked] == [100, 100, 100]


def test_a_succeeded_job_waits_for_its_results_file_then_trains_with_its_metrics() -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1", job_status="running")
    done: dict[str, Any] = {"id": "j1", "status": "succeeded", "model": "m", "fine_tuned_model": "m.ft-x",
                            "trained_tokens": 9}
    hub = FakeHub({"j1": HubJob(**done)})
    deps = make_deps(registry, hub)
    assert poll_tick(deps).outcomes == {"awaiting_results": 1}
    assert poll_tick(deps).outcomes == {"awaiting_results": 1}
    run = registry.require_run("r1")
    assert run.state == states.TRAINING and run.job_status == "succeeded" and registry.tracked
    assert not deps.publisher.sent   # no evaluation before the results are in
    hub.jobs["j1"] = HubJob(**done, result_files=["file-results"])   # postprocessing posted the file
    assert poll_tick(deps).outcomes == {"succeeded": 1}
    run = registry.require_run("r1")
    assert run.state == states.TRAINED and run.metrics["final"] == {"train_loss": 1.0}
    assert [e.id for q, e in deps.publisher.sent if q == "evaluate"] == [evaluate_message_id("r1", "j1")]


def test_a_results_file_that_never_comes_stops_the_wait_at_its_bound() -> None:
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1", job_status="running")
    hub = FakeHub({"j1": HubJob(id="j1", status="succeeded", model="m", fine_tuned_model="m.ft-x")})
    deps = make_deps(registry, hub, results_wait_seconds=600)
    poll_tick(deps)
    record = registry.runs["r1"]
    record.metrics = {**record.metrics, "awaiting_results_since": record.metrics["awaiting_results_since"] - 601}
    assert poll_tick(deps).outcomes == {"succeeded": 1}
    run = registry.require_run("r1")
    assert run.state == states.TRAINED and run.metrics["steps"] == 0
    assert [e.id for q, e in deps.publisher.sent if q == "evaluate"] == [evaluate_message_id("r1", "j1")]


def test_the_dated_specs_waiting_statuses_are_known_and_ask_for_no_checkpoints(caplog) -> None:
    asked: list[str] = []

    class Counting(FakeHub):
        def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
            asked.append(job_id)
            return []
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1", job_status="created")
    training_run(registry, "r2", "j2", job_status="pending")
    hub = Counting({"j1": HubJob(id="j1", status="created", model="m"),
                    "j2": HubJob(id="j2", status="pending", model="m")})
    with caplog.at_level(logging.WARNING, logger="shared.azure.hub"):
        poll_tick(make_deps(registry, hub))
    assert asked == [] and not [r for r in caplog.records if "does not know" in r.getMessage()]
    assert registry.require_run("r1").job_status == "created" and registry.require_run("r2").state == states.TRAINING


def test_a_job_the_hub_no_longer_knows_ends_its_run_after_a_grace_not_polled_for_ever() -> None:
    from shared.azure.hub import HubNotFound
    from shared.stages.polling import JOB_MISSING_GRACE_SECONDS, MISSING_SINCE
    registry = MemoryRegistry()
    training_run(registry, "r1", "j1", job_status="running")

    class Forgot(FakeHub):
        def retrieve(self, job_id: str) -> HubJob:
            raise HubNotFound(f"job {job_id}: 404 Not Found", status=404)
    deps = make_deps(registry, Forgot({}))
    assert poll_tick(deps).outcomes == {"job_missing": 1}
    assert poll_tick(deps).outcomes == {"job_missing": 1}          # within the grace: still training
    assert registry.require_run("r1").state == states.TRAINING
    record = registry.runs["r1"]
    record.metrics = {MISSING_SINCE: record.metrics[MISSING_SINCE] - JOB_MISSING_GRACE_SECONDS - 1}
    assert poll_tick(deps).outcomes == {"job_not_found": 1}
    run = registry.require_run("r1")
    assert run.state == states.TRAINING_FAILED and run.error["code"] == "job_not_found"
    assert "no longer knows job j1" in run.error["message"] and "ftops retrain r1" in run.error["message"]
    assert not registry.tracked and poll_tick(deps).jobs == 0       # no longer polled
