"""Crash points, against Azurite and the emulator: each handler runs once cleanly (counting its external
effects), then once per effect with that effect failing — before it takes effect and after — and is then
redelivered (a queue's retry, the blob trigger's retry, the next timer tick, with the outbox sweep a later
tick runs). Every case must end where the clean run ended: the same state, one hub job, the same
deployments, every event the clean run published, and nothing non-terminal without a retry on its way.

One stack and one set of tables per handler; each case is its own run, so cases do not see each other.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.run import states
from shared.run.messages import DeployRequest, TrainRequest, parse_message
from shared.stages import training
from shared.stages.deployment import handle_deploy
from shared.stages.intake import handle_blob_created
from shared.stages.polling import poll_job, poll_tick
from shared.store import outbox
from tests.integration.faults import Crash, Effects, Sent, faulty
from tests.integration.test_training import make_run

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "support-bot.jsonl"
REDELIVERIES = 4


def cases(handler: Callable[[Any], Any], deps: Any, *, every_before: bool = True
          ) -> tuple[list[tuple[int, str]], list[str]]:
    """Every (effect, before|after) of one clean run of `handler` (which gets deps, returns nothing).

    `every_before=False` keeps only the first "before": dying before effect i leaves the world as dying
    after effect i-1 does (only reads and uncounted calls lie between), so those cases repeat others."""
    effects = Effects()
    handler(faulty(deps, effects))
    assert effects.seen, "the clean run had no external effect to fail"
    return [(i, when) for i in range(len(effects.seen)) for when in ("before", "after")
            if every_before or when == "after" or i == 0], effects.seen


def crash_then_redeliver(deps: Any, handler: Callable[[Any], Any], at: int, when: str,
                         redeliver: Callable[[Any], Any] | None = None) -> str:
    """Run `handler` with effect `at` failing, then redeliver until it completes; returns what failed."""
    effects = Effects(fail_at=at, when=when)
    result = None
    try:
        result = handler(faulty(deps, effects))
    except Crash:
        pass
    assert effects.fired, f"effect {at} was not reached this time: {result}, {effects.seen}"
    for attempt in range(REDELIVERIES):
        try:
            (redeliver or handler)(deps)
            break
        except Exception:   # transient: the runtime retries it
            if attempt == REDELIVERIES - 1:
                raise
    outbox.sweep(deps, grace_seconds=0)   # the outbox sweep a later poll tick runs
    return effects.fired


def event_types(sent: Sent, run_id: str, topic: str) -> set[str]:
    return {e.type for e in sent.about(run_id, topic)}


def transitions(deps: Any, run_id: str) -> list[tuple[str, str | None, str | None]]:
    """The run's audit trail of its states: what a crash must not lose nor repeat."""
    return [(a["action"], a["from_state"], a["to_state"]) for a in deps.registry.audit_trail(run_id)
            if a["action"].startswith("run.")]


def queued_ids(deps: Any, queue: str) -> list[str]:
    client = deps.publisher.queue_client(queue)
    return [json.loads(m.content)["message_id"] for m in client.peek_messages(max_messages=32)]


@pytest.fixture
def stack(make_deps: Any) -> Iterator[Any]:
    deps = make_deps()
    deps.publisher = Sent(deps.publisher)
    yield deps


# --- intake ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("good", [True, False], ids=["accepted", "rejected"])
def test_intake_survives_a_crash_at_every_effect(stack: Any, good: bool) -> None:
    deps = stack
    body = SAMPLE.read_bytes()
    if not good:
        lines = body.splitlines()[:12]
        lines[4] = b'{"messages": [{"role": "user"'
        body = b"\n".join(lines) + b"\n"
    datasets = deps.blobs.get_container_client(deps.settings.datasets_container)
    topic = deps.settings.events_topic

    def drop(name: str) -> Callable[[Any], Any]:
        datasets.upload_blob(f"{name}.jsonl", body, overwrite=True)
        return lambda d: handle_blob_created(f"{name}.jsonl", d)

    clean = drop("clean")
    points, seen = cases(clean, deps)
    baseline = deps.registry.list_runs()[0]
    expected = event_types(deps.publisher, baseline.run_id, topic)
    trail = transitions(deps, baseline.run_id)
    assert baseline.state == (states.ACCEPTED if good else states.REJECTED)
    for at, when in points:
        name = f"case-{at}-{when}"
        fired = crash_then_redeliver(deps, drop(name), at, when)
        run = next(r for r in deps.registry.list_runs() if r.source.endswith(f"/{name}.jsonl"))
        where = f"{fired} (effect {at} of {seen})"
        assert run.state == baseline.state, where
        assert event_types(deps.publisher, run.run_id, topic) >= expected, where
        assert not run.outbox, where
        assert transitions(deps, run.run_id) == trail, where   # the full audit trail, each record once
        if good:   # handed to training: exactly one request (the bus drops a repeated MessageId)
            assert {e.id for e in deps.publisher.about(run.run_id, deps.settings.train_queue)} == {f"train-{run.run_id}"}, where
        else:      # nothing left in datasets, all of it in quarantine
            assert f"{name}.jsonl" not in {b.name for b in datasets.list_blobs()}, where
            moved = deps.blobs.get_blob_client(deps.settings.quarantine_container, f"{run.run_id}/{name}.jsonl")
            assert moved.download_blob().readall() == body, where


def expire_claims(deps: Any) -> None:
    """What time does to a crashed worker's claim (its TTL runs out), so the redelivery may take it over."""
    from azure.data.tables import TableServiceClient, UpdateMode
    table = TableServiceClient.from_connection_string(deps.settings.storage_connection).get_table_client(
        f"{deps.settings.table_prefix}keys")
    for entity in table.query_entities("status eq 'IN_PROGRESS'"):
        entity["expires_at"] = "2000-01-01T00:00:00+00:00"
        table.update_entity(entity, mode=UpdateMode.REPLACE)


# --- train -----------------------------------------------------------------------------------------------
def test_training_survives_a_crash_at_every_effect(stack: Any, emulator: Any) -> None:
    deps = stack
    emulator.control.reset()
    emulator.control.config(file_processing=0)
    topic = deps.settings.events_topic

    def train(run_id: str) -> Callable[[Any], Any]:
        return lambda d: training.handle_train(TrainRequest(run_id=run_id), d)

    def redeliver(run_id: str) -> Callable[[Any], Any]:
        def again(d: Any) -> None:
            expire_claims(d)
            training.handle_train(TrainRequest(run_id=run_id), d)
        return again

    clean = make_run(deps, train=10, validation=0)
    points, seen = cases(train(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert deps.registry.require_run(clean).state == states.TRAINING
    for at, when in points:
        emulator.control.reset()   # a fresh hub: its job and file limits never come into it
        emulator.control.config(file_processing=0)
        run_id = make_run(deps, train=10, validation=0)
        fired = crash_then_redeliver(deps, train(run_id), at, when, redeliver(run_id))
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.TRAINING and run.job_id, where
        assert [j["id"] for j in emulator.control.state()["jobs"]] == [run.job_id], where   # one job
        assert (run_id, run.job_id) in deps.registry.tracked_jobs(), where                 # and followed
        assert event_types(deps.publisher, run_id, topic) >= expected and not run.outbox, where
        assert transitions(deps, run_id)[-2:] == transitions(deps, clean)[-2:], where   # uploading, training


@pytest.mark.parametrize("dies_after", ["jobs.create", "registry.track_job"], ids=["created", "followed"])
def test_a_job_whose_train_message_was_dead_lettered_is_adopted_by_the_poller(stack: Any, emulator: Any,
                                                                             dies_after: str) -> None:
    """The hub has the job, the run does not know it, and the train message is gone (dead-lettered): no
    redelivery. The next poll tick adopts the job: the run is training it and the poller follows it."""
    deps = stack
    emulator.control.reset()
    emulator.control.config(file_processing=0)
    run_id = make_run(deps, train=10, validation=0)
    _, seen = cases(lambda d: training.handle_train(TrainRequest(run_id=run_id), d), deps)
    at = max(i for i, name in enumerate(seen) if name.endswith(dies_after))
    run_id = make_run(deps, train=10, validation=0)
    with pytest.raises(Crash):
        training.handle_train(TrainRequest(run_id=run_id), faulty(deps, Effects(fail_at=at, when="after")))
    jobs = [j["id"] for j in emulator.control.state()["jobs"]]
    assert len(jobs) == 2 and deps.registry.require_run(run_id).job_id is None   # billed, unrecorded

    poll_tick(deps)

    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and run.job_id == jobs[-1]
    assert (run_id, run.job_id) in deps.registry.tracked_jobs()
    assert "ftops.run.training" in event_types(deps.publisher, run_id, deps.settings.events_topic)


# --- poll ------------------------------------------------------------------------------------------------
def test_polling_survives_a_crash_at_every_effect(stack: Any, emulator: Any) -> None:
    deps = stack
    topic = deps.settings.events_topic

    def succeeded_job() -> tuple[str, str]:
        emulator.control.reset()
        emulator.control.config(file_processing=0)
        run_id = make_run(deps, train=10, validation=0)
        training.handle_train(TrainRequest(run_id=run_id), deps)
        emulator.control.advance(120)
        return run_id, deps.registry.require_run(run_id).job_id

    def poll(run_id: str, job_id: str) -> Callable[[Any], Any]:
        return lambda d: poll_job(d, d.hub(), run_id, job_id)

    clean = succeeded_job()
    points, seen = cases(poll(*clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean[0], topic)
    assert deps.registry.require_run(clean[0]).state == states.TRAINED
    for at, when in points:
        run_id, job_id = succeeded_job()
        fired = crash_then_redeliver(deps, poll(run_id, job_id), at, when, lambda d: poll_tick(d))
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.TRAINED and run.fine_tuned_model, where
        requests = deps.publisher.about(run_id, deps.settings.evaluate_queue)
        assert len({e.id for e in requests}) == 1, where      # one evaluation request (repeats share its id)
        assert event_types(deps.publisher, run_id, topic) >= expected and not run.outbox, where
        assert run_id not in dict(deps.registry.tracked_jobs()), where


# --- deploy ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def crash_model(emulator: Any) -> str:
    from tests.integration.test_deployment_emulator import _train
    return _train(emulator, "crash")


def test_deploying_survives_a_crash_at_every_effect(stack: Any, emulator: Any, instant_deployments: None,
                                                    crash_model: str) -> None:
    from tests.integration.test_deployment_emulator import DEV, add_run, served
    deps, model = stack, crash_model
    topic = deps.settings.events_topic

    def deploy(run_id: str) -> Callable[[Any], Any]:
        return lambda d: handle_deploy(DeployRequest(run_id=run_id, environment="dev"), d)

    def redeliver(run_id: str) -> Callable[[Any], Any]:
        def again(d: Any) -> None:
            expire_claims(d)
            handle_deploy(DeployRequest(run_id=run_id, environment="dev"), d)
        return again

    def clear(name: str) -> None:   # a spoke holds five fine-tuned deployments: make room for the next case
        for account in DEV:
            emulator.control.vanish(account, name)

    clean = add_run(deps, model, name="cp-clean")
    points, seen = cases(deploy(clean), deps, every_before=False)
    assert seen.count("arm.put") == len(DEV), seen   # each spoke's PUT is a crash point (the ARM port, watched)
    expected = event_types(deps.publisher, clean, topic)
    assert deps.registry.require_run(clean).state == states.deployed("dev")
    clear("cp-clean")
    for at, when in points:
        name = f"cp-{at}-{when}"
        run_id = add_run(deps, model, name=name)
        fired = crash_then_redeliver(deps, deploy(run_id), at, when, redeliver(run_id))
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.deployed("dev"), where
        on_spokes = served(emulator, name)
        assert set(on_spokes) == set(DEV) and {d["model"] for d in on_spokes.values()} == {model}, where
        slots = deps.registry.list_deployments(run_id=run_id, state="active")
        assert sorted(s.account for s in slots) == sorted(DEV), where
        assert len({e.id for e in deps.publisher.about(run_id, deps.settings.deploy_queue)}) == 1, where   # → test
        assert event_types(deps.publisher, run_id, topic) >= expected and not run.outbox, where
        clear(name)


# --- what `ftops status --stuck` shows ------------------------------------------------------------------
def test_status_stuck_names_runs_without_progress_and_why(make_deps: Any) -> None:
    import dataclasses
    from datetime import UTC, datetime, timedelta
    from types import SimpleNamespace

    from shared.stages import doctor
    deps = make_deps()
    waiting = make_run(deps)                                   # accepted; its train request never ran
    lost = make_run(deps)                                      # training, but the poller lost its job
    deps.registry.transition(lost, states.UPLOADING, actor="test")
    deps.registry.transition(lost, states.TRAINING, actor="test", job_id="ftjob-lost", job_status="running")
    unsent = make_run(deps)                                    # a crash left its event in the outbox
    deps.registry.transition(unsent, states.UPLOADING, actor="test",
                             outbox=[{"id": "e1", "queue": deps.settings.events_topic, "event": "{}"}])
    assert {r["run_id"] for r in doctor.stuck_runs(deps)} == {lost, unsent}   # wrong at once, whatever the bound
    later = datetime.now(UTC) + timedelta(minutes=90)
    in_90_minutes = dataclasses.replace(deps, clock=SimpleNamespace(now=lambda: later))
    found = {r["run_id"]: r for r in doctor.stuck_runs(in_90_minutes, bound_minutes=60)}
    assert set(found) == {waiting, lost, unsent}
    assert "train request did not run" in found[waiting]["why"][0] and found[waiting]["minutes"] >= 89
    assert "does not follow job ftjob-lost" in found[lost]["why"][0]
    assert "written but not sent" in found[unsent]["why"][0]
    assert waiting in doctor.render(list(found.values()), 60)


# --- commands (retrain) ----------------------------------------------------------------------------------
def test_a_retrain_command_survives_a_crash_at_every_effect(stack: Any) -> None:
    from shared.run.messages import RetrainCommand, envelope
    from shared.stages.commands import handle_command
    deps = stack
    topic = deps.settings.events_topic

    def trained_run() -> str:
        run_id = make_run(deps)
        deps.registry.transition(run_id, states.UPLOADING, actor="test")
        deps.registry.transition(run_id, states.TRAINING, actor="test", job_id=f"ftjob-{run_id}")
        deps.registry.transition(run_id, states.TRAINED, actor="test", fine_tuned_model="m.ft")
        return run_id

    def retrain(run_id: str) -> Callable[[Any], Any]:
        event = envelope(RetrainCommand(run_id=run_id, settings={"seed": 7}), type_="ftops.command.retrain")
        return lambda d: handle_command(event, parse_message(event.to_json())[1], d)

    clean = trained_run()
    points, seen = cases(retrain(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    for at, when in points:
        run_id = trained_run()
        command = retrain(run_id)   # the same message, redelivered
        fired = crash_then_redeliver(deps, command, at, when)
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.UPLOADING and run.settings["seed"] == 7 and not run.outbox, where
        requests = {e.id for e in deps.publisher.about(run_id, deps.settings.train_queue)}
        assert len(requests) == 1, where    # the train request went out, once (repeats share its id)
        assert event_types(deps.publisher, run_id, topic) >= expected, where


# --- keep-alive (healing a vanished deployment) -----------------------------------------------------------
def test_keepalive_healing_survives_a_crash_at_every_effect(stack: Any, emulator: Any, instant_deployments: None,
                                                            crash_model: str) -> None:
    from shared.stages import keepalive
    from tests.integration.test_deployment_emulator import DEV, add_run, served
    deps, model = stack, crash_model
    topology = deps.require_topology()
    topic = deps.settings.events_topic

    def vanished(name: str) -> Any:
        run_id = add_run(deps, model, name=name)
        handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
        emulator.control.vanish(DEV[1], name)
        return deps.registry.get_deployment("dev", DEV[1], name)

    def tick(name: str) -> Callable[[Any], Any]:   # the tick's work for that slot, as it reads it now
        return lambda d: keepalive._keep(d, topology, d.registry.get_deployment("dev", DEV[1], name))

    def clear(name: str) -> None:
        for account in DEV:
            emulator.control.vanish(account, name)

    clean = vanished("ka-clean")
    points, seen = cases(tick("ka-clean"), deps, every_before=False)
    assert seen.count("arm.put") == 1, seen          # re-creating the vanished deployment is a crash point
    expected = event_types(deps.publisher, clean.run_id, topic)
    assert "ftops.run.deployment_healed" in expected
    clear("ka-clean")
    for at, when in points:
        name = f"ka-{at}-{when}"
        slot = vanished(name)
        fired = crash_then_redeliver(deps, tick(name), at, when)
        where = f"{fired} (effect {at} of {seen})"
        on_spokes = served(emulator, name)
        assert set(on_spokes) == set(DEV) and {d["model"] for d in on_spokes.values()} == {model}, where
        fresh = deps.registry.get_deployment("dev", DEV[1], name)
        assert fresh.state == "active" and fresh.model == model and fresh.healing_since is None, where
        assert event_types(deps.publisher, slot.run_id, topic) >= expected, where
        healed = [a for a in deps.registry.audit_trail(slot.run_id) if a["action"] == "deployment.healed"]
        assert len(healed) == 1, where           # the audit survives a crash after ARM re-created it, once
        clear(name)


# --- evaluate --------------------------------------------------------------------------------------------
def test_evaluation_survives_a_crash_at_every_effect(stack: Any, emulator: Any, instant_deployments: None,
                                                     crash_model: str) -> None:
    """Kept small (the fewest held-out lines a gate accepts, the final model against the base, no champion): the case count, not
    the evaluation, sets the time. Every case ends evaluated, with one deploy request, its report, and no
    evaluation deployment left on the hub."""
    import uuid

    from shared.run.heldout import MIN_HELD_OUT  # the fewest held-out lines a gate decides on
    from shared.run.messages import EvaluateRequest
    from shared.stages.evaluation import handle_evaluate
    from shared.store.registry import RunRecord
    from tests.integration.test_deployment_emulator import QA
    deps, model = stack, crash_model
    topic = deps.settings.events_topic
    lines = "\n".join(json.dumps({"messages": [{"role": "user", "content": f"{q} (case {i})"},
                                               {"role": "assistant", "content": a}]})
                      for i, (q, a) in enumerate(QA[i % len(QA)] for i in range(MIN_HELD_OUT)))

    def trained_run() -> str:
        run_id = f"ev-{uuid.uuid4().hex[:8]}"
        eval_path = f"{run_id}/data/eval.jsonl"
        deps.blobs.get_blob_client(deps.settings.reports_container, eval_path).upload_blob(lines)
        settings = {"base_model": "gpt-4.1-mini-2025-04-14", "evaluation": {"champion": False},
                    "thresholds": {"min_score": 0.0, "min_improvement": -1.0, "max_error_rate": 1.0,
                                   "max_content_filter_rate": 1.0}}
        deps.registry.create_run(RunRecord(run_id=run_id, source=f"datasets/{run_id}.jsonl", state=states.TRAINED,
                                           fine_tuned_model=model, job_id=f"ftjob-{run_id}", settings=settings,
                                           environments=["dev"], data_files={"eval": eval_path}), actor="test")
        return run_id

    def evaluate(run_id: str) -> Callable[[Any], Any]:
        return lambda d: handle_evaluate(EvaluateRequest(run_id=run_id), d)

    def redeliver(run_id: str) -> Callable[[Any], Any]:
        def again(d: Any) -> None:
            expire_claims(d)
            handle_evaluate(EvaluateRequest(run_id=run_id), d)
        return again

    def left_on_hub(run_id: str) -> list[str]:
        return [d["name"] for d in emulator.control.state()["hub_deployments"]
                if (d.get("tags") or {}).get("ftops-run") == run_id]

    clean = trained_run()
    points, seen = cases(evaluate(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert deps.registry.require_run(clean).state == states.EVALUATED
    for at, when in points:
        run_id = trained_run()
        fired = crash_then_redeliver(deps, evaluate(run_id), at, when, redeliver(run_id))
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.EVALUATED and run.chosen_model, where
        assert len({e.id for e in deps.publisher.about(run_id, deps.settings.deploy_queue)}) == 1, where
        assert event_types(deps.publisher, run_id, topic) >= expected and not run.outbox, where
        assert left_on_hub(run_id) == [], where                 # no evaluation deployment leaks hub quota
        report = deps.blobs.get_blob_client(deps.settings.reports_container, f"{run_id}/evaluation.json")
        assert json.loads(report.download_blob().readall())["run_id"] == run_id, where


# --- commands (cancel; retire and rollback, the operator path) -------------------------------------------
def training_job(deps: Any, emulator: Any, **timing: float) -> str:
    """A run whose hub job was just created (no reset of the hub: the module's trained models must stay)."""
    emulator.control.config(file_processing=0, **timing)
    run_id = make_run(deps, train=10, validation=0)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    return run_id


def bus_command(kind: str, run_id: str, reason: str) -> Callable[[Any], Any]:
    """A handler delivering one command from the commands queue, as the runtime would (parsed at the edge)."""
    from shared.run.messages import RunCommand, envelope
    from shared.stages.commands import handle_command
    event = envelope(RunCommand(run_id=run_id, reason=reason), type_=f"ftops.command.{kind}")
    return lambda d: handle_command(event, parse_message(event.to_json())[1], d)


def test_a_cancel_command_survives_a_crash_at_every_effect(stack: Any, emulator: Any) -> None:
    deps = stack
    topic = deps.settings.events_topic

    def cancel(run_id: str) -> Callable[[Any], Any]:
        return bus_command("cancel", run_id, "wrong data")

    clean = training_job(deps, emulator)
    points, seen = cases(cancel(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert deps.registry.require_run(clean).state == states.CANCELLED
    for at, when in points:
        created = emulator.control.state()["jobs_created"]
        run_id = training_job(deps, emulator)
        fired = crash_then_redeliver(deps, cancel(run_id), at, when)
        poll_tick(deps)   # what the next tick does with a cancelled run's job
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.CANCELLED and not run.outbox, where
        hub = emulator.control.state()
        assert hub["jobs_created"] == created + 1, where                                  # one job
        assert [j["status"] for j in hub["jobs"] if j["id"] == run.job_id] == ["cancelled"], where   # not billing
        assert run_id not in dict(deps.registry.tracked_jobs()), where
        assert event_types(deps.publisher, run_id, topic) >= expected, where


def test_retiring_survives_a_crash_at_every_effect(stack: Any, emulator: Any, instant_deployments: None,
                                                  crash_model: str) -> None:
    from shared.run.messages import RunCommand
    from shared.stages.rollback import retire
    from tests.integration.test_deployment_emulator import add_run, served
    deps, model = stack, crash_model
    topic = deps.settings.events_topic

    def deployed(name: str) -> str:
        run_id = add_run(deps, model, name=name)
        handle_deploy(DeployRequest(run_id=run_id, environment="dev"), deps)
        return run_id

    def command(run_id: str) -> Callable[[Any], Any]:   # the operator API's call, retried by the CLI
        return lambda d: retire(RunCommand(run_id=run_id, requested_by="operator", reason="done"), d)

    clean = deployed("rt-clean")
    points, seen = cases(command(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert deps.registry.require_run(clean).state == states.RETIRED
    for at, when in points:
        name = f"rt-{at}-{when}"
        run_id = deployed(name)
        fired = crash_then_redeliver(deps, command(run_id), at, when)
        where = f"{fired} (effect {at} of {seen})"
        assert deps.registry.require_run(run_id).state == states.RETIRED, where
        assert served(emulator, name) == {}, where                       # nothing left billing on a spoke
        assert {s.state for s in deps.registry.list_deployments(run_id=run_id)} == {"retired"}, where
        assert event_types(deps.publisher, run_id, topic) >= expected, where


@pytest.fixture(scope="module")
def crash_model_2(emulator: Any) -> str:
    from tests.integration.test_deployment_emulator import _train
    return _train(emulator, "crash2")


def test_a_rollback_survives_a_crash_at_every_effect(stack: Any, emulator: Any, instant_deployments: None,
                                                     crash_model: str, crash_model_2: str) -> None:
    from shared.run.messages import RollbackCommand
    from shared.run.topology import load_topology
    from shared.stages.deployment import deployment_tags
    from shared.stages.rollback import rollback
    from shared.store.registry import DeploymentRecord
    from tests.integration.test_deployment_emulator import DEV, add_run, served
    deps = stack
    topic = deps.settings.events_topic

    targets = load_topology(deps.settings).environment("dev").targets

    def replaced(name: str) -> tuple[str, str]:
        """What deploying the newer run over the older one leaves (written directly: the deploy stage has
        its own case): the spokes serve the newer model, each slot remembers the older one."""
        older, newer = add_run(deps, crash_model, name=name), add_run(deps, crash_model_2, name=name)
        tags = deployment_tags(deps.registry.require_run(newer), crash_model_2, "dev")
        for t in targets:
            deps.spokes.deploy(t, name, crash_model_2, tags=tags, sku=t.sku, capacity=t.capacity)
            deps.registry.save_deployment(DeploymentRecord(
                environment="dev", account=t.account, deployment=name, region=t.region, subscription=t.subscription,
                resource_group=t.resource_group, run_id=newer, model=crash_model_2, previous_model=crash_model,
                previous_run_id=older, sku=t.sku, capacity=t.capacity, tags=tags))
        return older, newer

    def command(run_id: str) -> Callable[[Any], Any]:
        return lambda d: rollback(RollbackCommand(environment="dev", run_id=run_id, requested_by="operator",
                                                  reason="worse answers"), d)

    _, clean = replaced("rb-clean")
    points, seen = cases(command(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert "ftops.run.rolled_back" in expected
    for at, when in points:
        name = f"rb-{at}-{when}"
        older, newer = replaced(name)
        fired = crash_then_redeliver(deps, command(newer), at, when)
        where = f"{fired} (effect {at} of {seen})"
        on_spokes = served(emulator, name)
        assert set(on_spokes) == set(DEV) and {d["model"] for d in on_spokes.values()} == {crash_model}, where
        slots = deps.registry.list_deployments(run_id=older, state="active")
        assert sorted(s.account for s in slots) == sorted(DEV), where
        assert event_types(deps.publisher, newer, topic) >= expected, where
        assert "deployment.rolled_back" in {a["action"] for a in deps.registry.audit_trail(newer)}, where
        for account in DEV:
            emulator.control.vanish(account, name)


# --- a real process killed at an effect ------------------------------------------------------------------
KILLED_WORKER = """
import os, pickle, signal, sys
from shared.stages import training
from shared.app.bootstrap import build_deps
from shared.run.messages import TrainRequest
from tests.integration.faults import Effects, faulty

class KillAfter(Effects):
    def call(self, name, fn, *args, **kwargs):
        result = fn(*args, **kwargs)
        if name.endswith(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)   # no except, no finally, no atexit: the worker is gone
        return result

deps = build_deps(pickle.loads(sys.stdin.buffer.read()))
training.handle_train(TrainRequest(run_id=sys.argv[1]), faulty(deps, KillAfter()))
"""


def test_a_train_worker_killed_after_creating_the_job_leaves_one_job_that_its_redelivery_adopts(
        stack: Any, emulator: Any) -> None:
    """Not an exception: the process dies (SIGKILL) right after the hub created the job, so no cleanup of
    any kind runs — the claim stays taken, nothing is released. The redelivery (once the claim expired)
    must adopt that job, not create a second one."""
    import os
    import pickle
    import signal
    import subprocess
    import sys
    deps = stack
    emulator.control.reset()
    emulator.control.config(file_processing=0)
    run_id = make_run(deps, train=10, validation=0)
    root = Path(__file__).resolve().parents[2]
    worker = subprocess.run([sys.executable, "-c", KILLED_WORKER, run_id, "jobs.create"], cwd=root,
                            input=pickle.dumps(deps.settings), capture_output=True, timeout=120, check=False,
                            env={**os.environ, "PYTHONPATH": str(root)})
    assert worker.returncode == -signal.SIGKILL, worker.stderr.decode()[-2000:]
    created = [j["id"] for j in emulator.control.state()["jobs"]]
    assert len(created) == 1 and deps.registry.require_run(run_id).job_id is None

    expire_claims(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)   # the message's redelivery

    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINING and run.job_id == created[0]
    assert [j["id"] for j in emulator.control.state()["jobs"]] == created             # still one job
    assert (run_id, run.job_id) in deps.registry.tracked_jobs()


@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_an_approval_decision_survives_a_crash_at_every_effect(stack: Any, decision: str) -> None:
    """The operator API's approve and reject (the CLI repeats the request after a failure)."""
    from shared.stages import approvals
    from tests.integration.test_deployment_emulator import APPROVER, add_run
    deps, model = stack, "gpt-4.1-mini-2025-04-14.ft-approval"
    topic = deps.settings.events_topic

    def decide(run_id: str) -> Callable[[Any], Any]:
        if decision == "approve":
            return lambda d: approvals.approve(d, APPROVER, run_id, "prod", ticket="CHG-9", model=model)
        return lambda d: approvals.reject(d, APPROVER, run_id, "prod", reason="answers too long", ticket="CHG-9")

    def awaiting() -> str:
        return add_run(deps, model, name="approval", state=states.awaiting_approval("prod"))

    clean = awaiting()
    points, seen = cases(decide(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    audited = [a["action"] for a in deps.registry.audit_trail(clean) if not a["action"].startswith("run.created")]
    for at, when in points:
        run_id = awaiting()
        fired = crash_then_redeliver(deps, decide(run_id), at, when)
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert event_types(deps.publisher, run_id, topic) >= expected and not run.outbox, where
        assert [a["action"] for a in deps.registry.audit_trail(run_id)
                if not a["action"].startswith("run.created")] == audited, where      # each recorded once
        if decision == "approve":
            assert run.approvals["prod"]["model"] == model, where
            assert len({e.id for e in deps.publisher.about(run_id, deps.settings.deploy_queue)}) == 1, where
        else:
            assert run.state == states.APPROVAL_DENIED, where


def test_a_pause_command_survives_a_crash_at_every_effect(stack: Any, emulator: Any) -> None:
    deps = stack
    topic = deps.settings.events_topic

    def pause(run_id: str) -> Callable[[Any], Any]:
        return bus_command("pause", run_id, "look at the loss")

    def running_job() -> str:
        run_id = training_job(deps, emulator, training=600)
        emulator.control.advance(60)   # past its first step (pausable), far from its end
        return run_id

    clean = running_job()
    points, seen = cases(pause(clean), deps, every_before=False)
    expected = event_types(deps.publisher, clean, topic)
    assert "ftops.run.paused" in expected
    hub = deps.hub()
    hub.cancel(deps.registry.require_run(clean).job_id)   # the hub runs one job at a time: make way
    for at, when in points:
        run_id = running_job()
        fired = crash_then_redeliver(deps, pause(run_id), at, when)
        where = f"{fired} (effect {at} of {seen})"
        run = deps.registry.require_run(run_id)
        assert run.state == states.TRAINING and run.job_status == "paused", where
        assert [j["status"] for j in emulator.control.state()["jobs"] if j["id"] == run.job_id] == ["paused"], where
        assert event_types(deps.publisher, run_id, topic) >= expected, where
        assert [a["action"] for a in deps.registry.audit_trail(run_id)].count("job.pause") == 1, where
        deps.registry.untrack_job(run_id)
        hub.cancel(run.job_id)
    emulator.control.config(training=3.0)
