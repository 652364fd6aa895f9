"""Push first, poll as fallback, on the real wire: the emulator registers the receiver's URL (Learn's
`/openai/v1/dashboard/webhook_endpoints`), signs a delivery when the job ends and POSTs it to the dev host's
HTTP front, where the receiver (shared.stages.webhooks, as functions/webhooks.py calls it) checks it with the
openai SDK and hands the job to the poll queue. No poll tick runs unless a test says so."""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import azure.functions as func
import pytest

from local.devhost.http import HttpFront
from local.devhost.triggers import Trigger, route_pattern
from shared.azure.bus import decode_local
from shared.azure.webhook_endpoints import list_endpoints, register
from shared.run import states
from shared.run.messages import TrainRequest, parse_message
from shared.stages import training
from shared.stages.evaluation import handle_evaluate
from shared.stages.polling import handle_poll, poll_tick
from shared.stages.webhooks import receive
from tests.integration import test_training as helpers
from tests.integration.test_training import make_run

pytestmark = pytest.mark.integration
hub_env = helpers.hub_env   # fresh emulator state, deps recording sends


@dataclass
class Pushed:
    deps: Any
    url: str
    secret: str


@pytest.fixture
def pushed(hub_env: Callable[..., Any], emulator: Any) -> Iterator[Pushed]:
    holder: dict[str, Any] = {}

    def hub_webhook(req: func.HttpRequest) -> func.HttpResponse:   # functions/webhooks.py, with this test's deps
        answer = receive(req.get_body() or b"", req.headers, holder["deps"])
        return func.HttpResponse(answer.json(), status_code=answer.status, mimetype="application/json")

    front = HttpFront([Trigger("hub_webhook", "http", "req", hub_webhook, {"route": "hub/webhooks"},
                               route=route_pattern("hub/webhooks"), methods=("POST",))], port=0).start()
    emulator.control.config(training=3.0, webhook_retry_seconds=[0.2])
    url = f"{front.url}/hub/webhooks"
    registration = register(hub_env(), url)
    assert registration.outcome == "created" and registration.secret
    holder["deps"] = hub_env(HUB_WEBHOOK_SECRET=registration.secret)
    yield Pushed(holder["deps"], url, registration.secret)
    front.stop()
    emulator.control.reset()   # no endpoint left behind for the next test's jobs
    emulator.control.config(webhook_retry_seconds=[1.0, 2.0, 4.0])


def started_run(deps: Any) -> str:
    run_id = make_run(deps)
    training.handle_train(TrainRequest(run_id=run_id), deps)
    return run_id


def until(check: Callable[[], Any], *, timeout: float = 20.0, what: str) -> Any:
    """Wait for something another thread does (the emulator's dispatcher, a delayed message)."""
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def pump_polls(deps: Any) -> int:
    """Deliver the visible poll messages to handle_poll, as the poll_job trigger does."""
    client = deps.publisher.queue_client(deps.settings.poll_queue)
    handled = 0
    for message in client.receive_messages(max_messages=32, visibility_timeout=30):
        event, request = parse_message(decode_local(message.content)["body"])
        assert event.type == "ftops.stage.poll"
        handle_poll(request, deps)   # type: ignore[arg-type]
        client.delete_message(message)
        handled += 1
    return handled


def webhooks_for(emulator: Any, job_id: str) -> list[dict[str, Any]]:
    return [w for w in emulator.control.state()["webhooks"] if w["job_id"] == job_id]


def test_a_signed_webhook_moves_the_run_to_evaluating_without_the_poll_timer(pushed: Pushed, emulator: Any) -> None:
    deps = pushed.deps
    run_id = started_run(deps)
    job_id = deps.registry.require_run(run_id).job_id
    emulator.control.advance(60)   # the job's time is up: the emulator sees it end and delivers the event

    def trained() -> bool:
        pump_polls(deps)
        return deps.registry.require_run(run_id).state == states.TRAINED
    until(trained, what="the pushed poll to record the run trained")
    [delivery] = webhooks_for(emulator, job_id)
    assert delivery["type"] == "fine_tuning.job.succeeded" and delivery["attempts"][0] == 202
    assert not delivery["dropped"] and delivery["delivered_at"] >= delivery["ended_at"]

    client = deps.publisher.queue_client(deps.settings.evaluate_queue)
    [message] = list(client.receive_messages(max_messages=32, visibility_timeout=60))
    handle_evaluate(parse_message(decode_local(message.content)["body"])[1], deps)   # type: ignore[arg-type]
    states_seen = [a.get("to_state") for a in deps.registry.audit_trail(run_id)]
    assert states.EVALUATING in states_seen and states_seen.index(states.TRAINED) < states_seen.index(states.EVALUATING)
    # the poll that recorded `trained` was the handed-over one: the run's outbox and the poll index are clear
    assert all(tracked != run_id for tracked, _ in deps.registry.tracked_jobs())


def test_a_redelivered_webhook_does_nothing_more(pushed: Pushed, emulator: Any) -> None:
    import urllib.request

    from local.emulator.webhooks import sign
    deps = pushed.deps
    run_id = started_run(deps)
    job_id = deps.registry.require_run(run_id).job_id
    emulator.control.advance(60)
    [delivery] = until(lambda: [w for w in webhooks_for(emulator, job_id) if w["delivered_at"]],
                       what="the first delivery")
    body = json.dumps({"object": "event", "id": delivery["webhook_id"], "type": "fine_tuning.job.succeeded",
                       "created_at": 1, "data": {"id": job_id}}).encode()
    stamp = str(int(time.time()))
    again = urllib.request.Request(pushed.url, data=body, method="POST", headers={
        "webhook-id": delivery["webhook_id"], "webhook-timestamp": stamp,
        "webhook-signature": sign(pushed.secret, delivery["webhook_id"], stamp, body)})
    with urllib.request.urlopen(again, timeout=10) as answer:
        assert answer.status == 200 and b"duplicate" in answer.read()
    assert until(lambda: pump_polls(deps), what="the one poll message") == 1
    assert pump_polls(deps) == 0


def test_a_dropped_webhook_leaves_the_run_to_the_poll_timer(pushed: Pushed, emulator: Any) -> None:
    deps = pushed.deps
    emulator.control.faults(drop_next_webhooks=1)
    run_id = started_run(deps)
    job_id = deps.registry.require_run(run_id).job_id
    emulator.control.advance(60)
    [delivery] = until(lambda: webhooks_for(emulator, job_id), what="the job's end")
    assert delivery["dropped"] and delivery["attempts"] == []
    assert pump_polls(deps) == 0 and deps.registry.require_run(run_id).state == states.TRAINING
    poll_tick(deps)   # the timer's next tick: the fallback
    run = deps.registry.require_run(run_id)
    assert run.state == states.TRAINED or run.job_status == "succeeded"   # trained, or waiting for its results file
    until(lambda: (poll_tick(deps), deps.registry.require_run(run_id).state == states.TRAINED)[1],
          what="the timer to record the run trained")


def test_registering_again_changes_nothing_and_a_new_secret_replaces_the_endpoint(pushed: Pushed) -> None:
    deps = pushed.deps
    again = register(deps, pushed.url)
    assert (again.outcome, again.secret) == ("unchanged", None)
    [endpoint] = list_endpoints(deps)
    assert endpoint["url"] == pushed.url and "signing_secret" not in endpoint
    assert sorted(endpoint["event_types"]) == ["fine_tuning.job.cancelled", "fine_tuning.job.failed",
                                               "fine_tuning.job.succeeded"]
    fewer = register(deps, pushed.url, event_types=["fine_tuning.job.succeeded"])
    assert fewer.outcome == "updated" and list_endpoints(deps)[0]["event_types"] == ["fine_tuning.job.succeeded"]
    rotated = register(deps, pushed.url, new_secret=True)
    assert rotated.outcome == "recreated" and rotated.secret and rotated.secret != pushed.secret
    assert [e["id"] for e in list_endpoints(deps)] == [rotated.endpoint_id]


@pytest.mark.parametrize("body, refused", [
    ({"name": "x", "url": "http://example.com/hook", "event_types": ["fine_tuning.job.succeeded"]}, "url"),
    ({"name": "x", "url": "https://example.com/hook", "event_types": ["fine_tuning.job.paused"]}, "event type"),
    ({"name": "x", "url": "https://example.com/hook", "event_types": []}, "event_types"),
    ({"url": "https://example.com/hook", "event_types": ["batch.completed"]}, "name"),
    ({"name": "x", "url": "https://example.com/hook", "event_types": ["batch.completed"], "secret": "s"}, "secret"),
    ({"name": "x" * 257, "url": "https://example.com/hook", "event_types": ["batch.completed"]}, "name"),
    ({"name": "x", "url": "https://example.com/" + "h" * 2030, "event_types": ["batch.completed"]}, "url"),
])
def test_the_emulator_refuses_an_endpoint_azure_would_not_take(pushed: Pushed, body: dict[str, Any],
                                                                refused: str) -> None:
    import openai
    with pytest.raises(openai.BadRequestError, match=refused):
        pushed.deps.hub_client().post("dashboard/webhook_endpoints", body=body, cast_to=object)


def test_ftops_webhooks_register_writes_a_new_secret_to_its_file_only(pushed: Pushed, tmp_path: Any,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from ftops_cli.webhooks import run_list, run_register
    secret_file = tmp_path / "secret"
    args = argparse.Namespace(url=pushed.url, secret_file=secret_file, new_secret=False)
    run_register(args, deps=pushed.deps)
    assert "unchanged" in capsys.readouterr().out and not secret_file.exists()
    run_register(argparse.Namespace(url=pushed.url, secret_file=secret_file, new_secret=True), deps=pushed.deps)
    said = capsys.readouterr().out
    secret = secret_file.read_text()
    assert secret.startswith("whsec_") and secret not in said and "recreated" in said
    assert secret_file.stat().st_mode & 0o777 == 0o600
    run_list(argparse.Namespace(json=False), deps=pushed.deps)
    assert pushed.url in capsys.readouterr().out


def test_the_emulator_retries_a_failed_delivery_with_the_same_webhook_id(hub_env: Callable[..., Any],
                                                                         emulator: Any) -> None:
    seen: list[tuple[str, int]] = []

    def flaky(req: func.HttpRequest) -> func.HttpResponse:   # down at first, then up
        status = 503 if not seen else 200
        seen.append((req.headers["webhook-id"], status))
        return func.HttpResponse("{}", status_code=status, mimetype="application/json")

    front = HttpFront([Trigger("flaky", "http", "req", flaky, {"route": "hook"}, route=route_pattern("hook"),
                               methods=("POST",))], port=0).start()
    try:
        emulator.control.config(training=3.0, webhook_retry_seconds=[0.1, 0.1])
        deps = hub_env()
        register(deps, f"{front.url}/hook")
        run_id = started_run(deps)
        emulator.control.advance(60)
        job_id = deps.registry.require_run(run_id).job_id
        [delivery] = until(lambda: [w for w in webhooks_for(emulator, job_id) if w["delivered_at"]],
                           what="the retried delivery")
        assert delivery["attempts"] == [503, 200]
        assert [s for _, s in seen] == [503, 200] and {w for w, _ in seen} == {delivery["webhook_id"]}
    finally:
        front.stop()
        emulator.control.reset()
        emulator.control.config(webhook_retry_seconds=[1.0, 2.0, 4.0])
