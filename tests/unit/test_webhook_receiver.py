"""The hub's webhook receiver (shared.stages.webhooks) and the one-job poll it hands over to, on the fakes.

The tests sign deliveries themselves, as Standard Webhooks specifies (HMAC-SHA256 over `<id>.<timestamp>.<body>`
with the base64 key after `whsec_`): an implementation independent of the openai SDK the receiver uses."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import fakes
import pytest
from fakes import MemoryRegistry, settings_for_tests
from test_polling_tick import FakeHub

from shared.azure.hub import HubJob
from shared.run import states
from shared.run.messages import PollRequest, evaluate_message_id
from shared.stages.polling import handle_poll
from shared.stages.webhooks import receive
from shared.store.registry import RunRecord

SECRET = "whsec_" + base64.b64encode(b"ftops-test-signing-key-32-bytes!").decode()
OTHER = "whsec_" + base64.b64encode(b"someone-else-s-signing-key-bytes").decode()


def signed(event: dict[str, Any], *, webhook_id: str = "evt-1", secret: str = SECRET,
           timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    return body, {"Webhook-Id": webhook_id, "Webhook-Timestamp": ts,
                  "Webhook-Signature": "v1," + base64.b64encode(mac).decode(), "Content-Type": "application/json"}


def job_event(job_id: str = "ftjob-1", kind: str = "fine_tuning.job.succeeded") -> dict[str, Any]:
    return {"object": "event", "id": "evt_abc", "type": kind, "created_at": int(time.time()), "data": {"id": job_id}}


def deps_with_run(secret: str | None = SECRET, **settings: Any) -> Any:
    registry = MemoryRegistry()
    registry.runs["r1"] = RunRecord(run_id="r1", source="t", state=states.TRAINING, job_id="ftjob-1", etag="1")
    registry.track_job("r1", "ftjob-1")
    return fakes.make_deps(settings_for_tests(hub_webhook_secret=secret, poll_queue="poll", **settings),
                           registry=registry)


def polls(deps: Any) -> list[Any]:
    return [e for q, e in deps.publisher.sent if q == "poll"]


def test_a_signed_event_for_a_followed_job_hands_that_job_to_the_poll_queue() -> None:
    deps = deps_with_run()
    answer = receive(*signed(job_event()), deps)
    assert (answer.status, answer.outcome) == (202, "handed_to_poller")
    [poll] = polls(deps)
    assert poll.type == "ftops.stage.poll" and poll.subject == "r1"
    assert (poll.data["run_id"], poll.data["job_id"], poll.data["event"]) == ("r1", "ftjob-1", "fine_tuning.job.succeeded")


@pytest.mark.parametrize("tamper", ["secret", "body", "signature", "missing header"])
def test_a_delivery_whose_signature_does_not_match_is_refused_401_and_does_nothing(tamper: str, caplog) -> None:
    deps = deps_with_run()
    body, headers = signed(job_event(), secret=OTHER if tamper == "secret" else SECRET)
    if tamper == "body":
        body = body.replace(b"ftjob-1", b"ftjob-2")
    if tamper == "signature":
        headers["Webhook-Signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    if tamper == "missing header":
        del headers["Webhook-Signature"]
    with caplog.at_level(logging.DEBUG):
        answer = receive(body, headers, deps)
    assert answer.status == 401 and json.loads(answer.json())["error"]["status"] == 401
    assert "signature" in json.loads(answer.json())["error"]["message"]
    assert polls(deps) == [] and deps.registry._results() == {}
    logged = caplog.text
    assert SECRET not in logged and SECRET.removeprefix("whsec_") not in logged and "ftjob" not in logged


def test_a_stale_delivery_is_refused_even_when_its_signature_is_right() -> None:
    deps = deps_with_run()
    answer = receive(*signed(job_event(), timestamp=int(time.time()) - 3600), deps)
    assert answer.status == 401 and "too old" in answer.message and polls(deps) == []
    answer = receive(*signed(job_event(), timestamp=int(time.time()) + 3600), deps)
    assert answer.status == 401 and "too new" in answer.message and polls(deps) == []


def test_a_redelivered_event_does_nothing_the_second_time() -> None:
    deps = deps_with_run()
    first = receive(*signed(job_event(), webhook_id="evt-7"), deps)
    # the hub retries with the same webhook-id and a new timestamp (its signature differs)
    again = receive(*signed(job_event(), webhook_id="evt-7", timestamp=int(time.time()) + 1), deps)
    assert (first.status, again.status, again.outcome) == (202, 200, "duplicate")
    assert len(polls(deps)) == 1
    other = receive(*signed(job_event(), webhook_id="evt-8"), deps)
    assert other.status == 202 and len(polls(deps)) == 2


def test_a_delivery_another_worker_is_handling_asks_the_hub_to_try_again() -> None:
    deps = deps_with_run()
    key = "webhook-" + hashlib.sha256(b"evt-9").hexdigest()[:40]
    deps.registry.claim(key)
    answer = receive(*signed(job_event(), webhook_id="evt-9"), deps)
    assert (answer.status, answer.outcome) == (409, "in_progress") and polls(deps) == []


def test_an_event_for_a_job_no_run_follows_is_acknowledged_and_counted_not_an_error() -> None:
    from shared.stages.webhooks import counts
    deps = deps_with_run()
    before = counts().get("unknown_job", 0)
    answer = receive(*signed(job_event("ftjob-someone-elses")), deps)
    assert (answer.status, answer.outcome) == (200, "unknown_job") and polls(deps) == []
    assert counts()["unknown_job"] == before + 1


@pytest.mark.parametrize("kind", ["batch.completed", "response.completed", "fine_tuning.job.paused", None])
def test_an_event_type_ftops_does_not_act_on_is_acknowledged_and_counted(kind: str | None) -> None:
    from shared.stages.webhooks import counts
    deps = deps_with_run()
    before = counts().get("ignored_event_type", 0)
    answer = receive(*signed(job_event(kind=kind)), deps)   # type: ignore[arg-type]
    assert (answer.status, answer.outcome) == (200, "ignored_event_type") and polls(deps) == []
    assert counts()["ignored_event_type"] == before + 1


def test_without_a_secret_every_delivery_is_refused_and_polling_alone_follows_the_jobs() -> None:
    deps = deps_with_run(secret=None)
    answer = receive(*signed(job_event()), deps)
    assert answer.status == 503 and "HUB_WEBHOOK_SECRET" in answer.message and polls(deps) == []


def test_the_secret_is_not_in_the_settings_repr() -> None:
    assert SECRET not in repr(settings_for_tests(hub_webhook_secret=SECRET))


def poll_deps(job: HubJob) -> Any:
    registry = MemoryRegistry()
    registry.runs["r1"] = RunRecord(run_id="r1", source="t", state=states.TRAINING, job_id="ftjob-1", etag="1",
                                    job_status="running")
    registry.track_job("r1", "ftjob-1")
    return fakes.make_deps(settings_for_tests(poll_queue="poll", evaluate_queue="evaluate"), registry=registry,
                           hub=FakeHub({"ftjob-1": job}))


REQUEST = PollRequest(run_id="r1", job_id="ftjob-1", event="fine_tuning.job.succeeded", webhook_id="evt-1")


def test_the_handed_over_poll_moves_a_succeeded_job_on_exactly_as_the_timer_would() -> None:
    deps = poll_deps(HubJob(id="ftjob-1", status="succeeded", model="m", fine_tuned_model="m.ft-1",
                            result_files=["file-results"]))
    assert handle_poll(REQUEST, deps) == "succeeded"
    assert deps.registry.require_run("r1").state == states.TRAINED and not deps.registry.tracked
    assert [e.id for q, e in deps.publisher.sent if q == "evaluate"] == [evaluate_message_id("r1", "ftjob-1")]


def test_a_pushed_job_still_awaiting_its_results_file_is_looked_at_again_soon_not_at_the_next_tick() -> None:
    deps = poll_deps(HubJob(id="ftjob-1", status="succeeded", model="m", fine_tuned_model="m.ft-1"))
    assert handle_poll(REQUEST, deps) == "awaiting_results"
    [again] = polls(deps)
    assert again.data["attempt"] == 1 and again.id.endswith("-a1") and deps.publisher.delays[-1] == 1.0
    assert deps.registry.require_run("r1").state == states.TRAINING
    assert handle_poll(PollRequest(**again.data), deps) == "awaiting_results"
    assert deps.publisher.delays[-1] == 2.0


def test_a_failed_job_pushed_ends_its_run_as_the_timer_would() -> None:
    deps = poll_deps(HubJob(id="ftjob-1", status="failed", model="m",
                            error={"code": "server_error", "message": "internal"}))
    assert handle_poll(REQUEST.model_copy(update={"event": "fine_tuning.job.failed"}), deps) == "failed"
    assert deps.registry.require_run("r1").state == states.TRAINING_FAILED


def test_the_dev_host_serves_the_webhook_route_and_the_poll_queue_from_the_apps_own_declarations() -> None:
    from function_app import app
    from local.devhost.triggers import discover
    from local.settings import local_env
    env = local_env(storage_connection="UseDevelopmentStorage=true", emulator_url="https://127.0.0.1:1",
                    ca_file="ca.pem")
    triggers = {t.function_name: t for t in discover(app, env)}
    hook, poll = triggers["hub_webhook"], triggers["poll_job"]
    assert hook.kind == "http" and hook.methods == ("POST",) and hook.route and hook.route.fullmatch("hub/webhooks")
    assert (poll.kind, poll.queue_name, poll.auto_complete) == ("queue", "ftops-poll", False)


def test_a_late_poll_for_a_job_the_run_no_longer_follows_leaves_the_runs_next_job_followed() -> None:
    deps = poll_deps(HubJob(id="ftjob-1", status="succeeded", model="m", fine_tuned_model="m.ft-1"))
    deps.registry.runs["r1"] = RunRecord(run_id="r1", source="t", state=states.TRAINING, job_id="ftjob-2", etag="2")
    deps.registry.track_job("r1", "ftjob-2")   # retrained: the index follows the run's new job
    assert handle_poll(REQUEST, deps) == "not_followed"
    assert deps.registry.tracked_jobs() == [("r1", "ftjob-2")]
