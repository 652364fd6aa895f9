"""The dev host against Azurite, serving a small FunctionApp declared here with the app's own decorators."""
from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.core.exceptions import ResourceExistsError
from azurefunctions.extensions.bindings import blob, servicebus

from local.devhost import DevHost, HostOptions, discover
from shared.azure.bus import encode_local

pytestmark = pytest.mark.integration

app = func.FunctionApp()
calls: dict[str, list[Any]] = defaultdict(list)
_calls_lock = threading.Lock()


def record(key: str, value: Any) -> None:
    with _calls_lock:
        calls[key].append(value)


@app.blob_trigger(arg_name="client", path="%T_CONTAINER%/{name}", connection="DatasetStorage",
                  source=func.BlobSource.EVENT_GRID)
def on_blob(client: blob.BlobClient) -> None:
    record(client.container_name, (client.blob_name, client.get_blob_properties().etag))


@app.service_bus_queue_trigger(arg_name="message", queue_name="%T_QUEUE%", connection="ServiceBusConnection",
                               auto_complete_messages=False)
def on_message(message: servicebus.ServiceBusReceivedMessage, actions: servicebus.ServiceBusMessageActions) -> None:
    body = json.loads(message.body)
    record(body["key"], (message.message_id, message.delivery_count))
    if body["do"] == "raise":
        raise RuntimeError("transient trouble")
    if body["do"] == "deadletter":
        actions.deadletter(message, deadletter_reason="UnknownRun", deadletter_error_description="run r-1 is gone")
    elif body["do"] == "complete":
        actions.complete(message)
    # "nothing": neither settle nor raise


@app.timer_trigger(arg_name="timer", schedule="%T_SCHEDULE%", run_on_startup=False, use_monitor=False)
def on_timer(timer: func.TimerRequest) -> None:
    record("ticks", (time.monotonic(), timer.past_due))


@pytest.fixture
def env(azurite: Any) -> dict[str, str]:
    uid = uuid.uuid4().hex[:8]
    return {"AzureWebJobsStorage": azurite.connection_string, "DatasetStorage": azurite.connection_string,
            "T_CONTAINER": f"drops-{uid}", "T_QUEUE": f"q-{uid}", "T_SCHEDULE": "*/1 * * * * *"}


@pytest.fixture
def run_host(env: dict[str, str]) -> Iterator[Callable[..., DevHost]]:
    hosts: list[DevHost] = []

    def start(**options: Any) -> DevHost:
        defaults: dict[str, Any] = {"lock_seconds": 5, "max_delivery_count": 3, "abandon_backoff_max": 1}
        host = DevHost(app, env, HostOptions(**{**defaults, **options})).start()
        hosts.append(host)
        return host

    yield start
    for host in hosts:
        host.stop()


def send(azurite: Any, queue: str, key: str, do: str, message_id: str = "m-1") -> None:
    from azure.storage.queue import QueueClient
    client = QueueClient.from_connection_string(azurite.connection_string, queue)
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    client.send_message(encode_local(message_id, json.dumps({"key": key, "do": do})))


def dead_letters(azurite: Any, queue: str) -> list[dict[str, Any]]:
    from azure.core.exceptions import ResourceNotFoundError
    from azure.storage.queue import QueueClient
    client = QueueClient.from_connection_string(azurite.connection_string, f"{queue}-deadletter")
    try:
        return [json.loads(m.content) for m in client.peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def wait_for(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s")


def test_triggers_come_from_the_app_declarations(env: dict[str, str]) -> None:
    triggers = {t.function_name: t for t in discover(app, env)}
    assert triggers["on_blob"].kind == "blob" and triggers["on_blob"].container == env["T_CONTAINER"]
    assert triggers["on_blob"].source == "EventGrid"
    assert triggers["on_message"].queue_name == env["T_QUEUE"]
    assert triggers["on_message"].auto_complete is False and triggers["on_message"].actions_arg == "actions"
    assert triggers["on_timer"].schedule == "*/1 * * * * *"


def test_a_message_that_raises_is_redelivered_then_deadlettered(azurite: Any, env: dict[str, str],
                                                                 run_host: Callable[..., DevHost]) -> None:
    key = f"raise-{uuid.uuid4().hex[:6]}"
    run_host()
    send(azurite, env["T_QUEUE"], key, "raise", message_id="train-r-1")
    [letter] = wait_for(lambda: dead_letters(azurite, env["T_QUEUE"]))
    assert [count for _, count in calls[key]] == [1, 2, 3]          # one more each delivery, up to the max
    assert letter["reason"] == "MaxDeliveryCountExceeded"
    assert letter["message_id"] == "train-r-1" and letter["delivery_count"] == 3
    assert json.loads(letter["body"]) == {"key": key, "do": "raise"}


def test_deadletter_action_records_reason_and_description(azurite: Any, env: dict[str, str],
                                                          run_host: Callable[..., DevHost]) -> None:
    key = f"dl-{uuid.uuid4().hex[:6]}"
    run_host()
    send(azurite, env["T_QUEUE"], key, "deadletter", message_id="deploy-r-1-dev")
    [letter] = wait_for(lambda: dead_letters(azurite, env["T_QUEUE"]))
    assert (letter["reason"], letter["description"]) == ("UnknownRun", "run r-1 is gone")
    assert letter["message_id"] == "deploy-r-1-dev" and letter["delivery_count"] == 1 and letter["deadlettered_at"]
    time.sleep(1.5)
    assert len(calls[key]) == 1                                       # settled: never delivered again


def test_completed_message_is_gone_and_unsettled_one_comes_back_after_its_lock(
        azurite: Any, env: dict[str, str], run_host: Callable[..., DevHost]) -> None:
    done, unsettled = f"ok-{uuid.uuid4().hex[:6]}", f"none-{uuid.uuid4().hex[:6]}"
    run_host(lock_seconds=2)
    send(azurite, env["T_QUEUE"], done, "complete", message_id="a")
    send(azurite, env["T_QUEUE"], unsettled, "nothing", message_id="b")
    wait_for(lambda: len(calls[unsettled]) >= 2, timeout=15)        # not settled, auto-complete off: relocked
    assert calls[unsettled][:2] == [("b", 1), ("b", 2)]
    assert calls[done] == [("a", 1)]
    assert dead_letters(azurite, env["T_QUEUE"]) == []


def test_blob_events_once_per_name_and_etag_and_again_for_a_reupload(azurite: Any, env: dict[str, str],
                                                                      run_host: Callable[..., DevHost]) -> None:
    from azure.storage.blob import BlobServiceClient
    container = BlobServiceClient.from_connection_string(azurite.connection_string) \
        .create_container(env["T_CONTAINER"])
    run_host(blob_poll_seconds=0.2)
    first = container.upload_blob("team/a.jsonl", b"{}\n").get_blob_properties().etag
    other = container.upload_blob("b.jsonl", b"{}\n").get_blob_properties().etag
    seen = calls[env["T_CONTAINER"]]
    wait_for(lambda: len(seen) >= 2)
    time.sleep(1.0)                                                  # several more listings: no repeats
    assert sorted(seen) == sorted([("team/a.jsonl", first), ("b.jsonl", other)])
    second = container.upload_blob("team/a.jsonl", b"{}\n{}\n", overwrite=True).get_blob_properties().etag
    wait_for(lambda: ("team/a.jsonl", second) in seen)
    assert len(seen) == 3


def test_chaos_delivers_each_message_twice(azurite: Any, env: dict[str, str],
                                           run_host: Callable[..., DevHost]) -> None:
    key = f"chaos-{uuid.uuid4().hex[:6]}"
    run_host(chaos=True)
    send(azurite, env["T_QUEUE"], key, "complete", message_id="evaluate-r-9")
    wait_for(lambda: len(calls[key]) >= 2)
    time.sleep(1.0)
    assert [mid for mid, _ in calls[key]] == ["evaluate-r-9", "evaluate-r-9"]


def test_chaos_exit_after_n_deliveries(azurite: Any, env: dict[str, str], run_host: Callable[..., DevHost]) -> None:
    key = f"exit-{uuid.uuid4().hex[:6]}"
    host = run_host(exit_after=2)
    for i in range(3):
        send(azurite, env["T_QUEUE"], key, "complete", message_id=f"m{i}")
    assert host.wait(15), "the host did not ask to exit"
    assert host.exit_requested and host.deliveries == 3
    time.sleep(0.5)
    assert len(calls[key]) == 2                                      # the third was received, never run


def test_a_timer_ticks_on_its_schedule(run_host: Callable[..., DevHost]) -> None:
    start = len(calls["ticks"])
    run_host()
    wait_for(lambda: len(calls["ticks"]) >= start + 2, timeout=5)
    ticks = calls["ticks"][start:]
    assert all(past_due is False for _, past_due in ticks)
    assert 0.5 < ticks[1][0] - ticks[0][0] < 1.6                    # "*/1": once a second


def test_a_message_nested_too_deeply_to_parse_is_deadlettered_once_and_the_queue_keeps_flowing(
        azurite: Any, env: dict[str, str], run_host: Callable[..., DevHost]) -> None:
    from azure.storage.queue import QueueClient
    client = QueueClient.from_connection_string(azurite.connection_string, env["T_QUEUE"])
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()
    deep = "[" * 20_000 + "]" * 20_000
    client.send_message(deep)
    run_host(lock_seconds=2)
    [letter] = wait_for(lambda: dead_letters(azurite, env["T_QUEUE"]))
    assert letter["reason"] == "UnparseableMessage" and "nested too deeply" in letter["description"]
    assert letter["delivery_count"] == 1 and letter["body"] == deep[:4096]
    key = f"after-{uuid.uuid4().hex[:6]}"   # the watcher is alive: the next message is delivered at once
    send(azurite, env["T_QUEUE"], key, "complete", message_id="m-after")
    wait_for(lambda: calls[key])
    assert calls[key] == [("m-after", 1)] and len(dead_letters(azurite, env["T_QUEUE"])) == 1
