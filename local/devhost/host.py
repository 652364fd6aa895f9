"""The dev host: serves a FunctionApp's blob, Service Bus queue and timer triggers from Azurite.

One thread watches each trigger's source; invocations run on a small thread pool, at most
`queue_concurrency` at a time per queue (the host's maxConcurrentCalls). Delivery is at-least-once, as in
Azure: blob events are re-delivered after a restart, queue messages whose lock lapses come back with a
higher delivery count. With chaos on, every queue message and blob event is delivered twice and the host
exits once after `exit_after` deliveries so its supervisor restarts it.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import azure.functions as func
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from local.devhost.cron import Schedule
from local.devhost.servicebus import (
    LocalMessageActions,
    LocalServiceBusMessage,
    MessageAlreadySettled,
    UnreadableMessage,
    from_queue_message,
)
from local.devhost.triggers import Trigger, discover

log = logging.getLogger("local.devhost")
invocation: contextvars.ContextVar[str] = contextvars.ContextVar("devhost_invocation", default="host")
CHAOS_EXIT_CODE = 75          # EX_TEMPFAIL: "try again", what the supervisor sees from a chaos exit
BLOB_POISON_QUEUE = "webjobs-blobtrigger-poison"   # where the Functions host puts blob events it gave up on
BLOB_MAX_ATTEMPTS = 5                              # the blob trigger's default maxDequeueCount


@dataclass(frozen=True)
class HostOptions:
    lock_seconds: int = 60            # Service Bus lock duration (the queue's default)
    max_delivery_count: int = 10      # Service Bus maxDeliveryCount default
    queue_concurrency: int = 4        # host.json serviceBus.maxConcurrentCalls
    workers: int = 16
    blob_poll_seconds: float = 0.5
    queue_poll_seconds: float = 0.25
    tick_scale: float = 1.0           # > 1 compresses timer schedules (demo)
    abandon_backoff_max: int = 5      # seconds an abandoned message stays invisible, at most
    chaos: bool = False
    exit_after: int | None = None     # deliveries (blob + queue) before a chaos exit
    exit_mode: str = "crash"          # "crash": die at once (locks lapse) | "drain": finish in-flight work first
    http_port: int | None = None      # serve the HTTP triggers here (0: any free port); None: not at all
    http_prefix: str = "api"          # host.json extensions.http.routePrefix

    @staticmethod
    def from_env(env: Mapping[str, str], host_json: Path | None = None) -> HostOptions:
        """DEVHOST_* settings; maxConcurrentCalls defaults to host.json's, as the Functions host reads it."""
        concurrency, prefix = 4, "api"
        if host_json is not None and host_json.exists():
            extensions = json.loads(host_json.read_text()).get("extensions", {})
            concurrency = int(extensions.get("serviceBus", {}).get("maxConcurrentCalls", concurrency))
            prefix = str(extensions.get("http", {}).get("routePrefix", prefix))
        return HostOptions(
            lock_seconds=int(env.get("DEVHOST_LOCK_SECONDS", 60)),
            max_delivery_count=int(env.get("DEVHOST_MAX_DELIVERY_COUNT", 10)),
            queue_concurrency=int(env.get("DEVHOST_QUEUE_CONCURRENCY", concurrency)),
            workers=int(env.get("DEVHOST_WORKERS", 16)),
            blob_poll_seconds=float(env.get("DEVHOST_BLOB_POLL_SECONDS", 0.5)),
            tick_scale=float(env.get("DEVHOST_TICK_SCALE", 1.0)),
            http_port=int(env["DEVHOST_HTTP_PORT"]) if env.get("DEVHOST_HTTP_PORT") else None,
            http_prefix=prefix,
        )


class DevHost:
    def __init__(self, app: Any, env: Mapping[str, str], options: HostOptions | None = None) -> None:
        from azure.storage.blob import BlobServiceClient
        from azure.storage.queue import QueueServiceClient

        self.env = dict(env)
        self.options = options or HostOptions()
        self.triggers = discover(app, self.env)
        conn = self._connection("AzureWebJobsStorage")
        self._queues = QueueServiceClient.from_connection_string(conn)
        self._blob_services: dict[str, Any] = {}
        self._blob_factory = BlobServiceClient.from_connection_string
        self.actions = LocalMessageActions(self._queues, max_delivery_count=self.options.max_delivery_count,
                                           abandon_backoff_max=self.options.abandon_backoff_max)
        self._pool = ThreadPoolExecutor(max_workers=self.options.workers, thread_name_prefix="devhost")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._futures: set[Future[None]] = set()
        self.deliveries = 0
        self.http: Any = None              # the HTTP front, when serving HTTP triggers
        self.exit_requested = False
        self.on_exit_request: Callable[[], None] | None = None   # __main__ sets this to os._exit in crash mode

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> DevHost:
        if self.options.http_port is not None and any(t.kind == "http" for t in self.triggers):
            from local.devhost.http import HttpFront
            self.http = HttpFront(self.triggers, port=self.options.http_port, prefix=self.options.http_prefix).start()
        for t in self.triggers:
            if t.kind == "http":
                continue
            target = {"blob": self._blob_loop, "queue": self._queue_loop, "timer": self._timer_loop}[t.kind]
            thread = threading.Thread(target=self._guard, args=(target, t), name=f"devhost-{t.function_name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
            log.info("serving %s: %s", t.function_name, _describe(t))
        return self

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop watching, then wait (up to `timeout` in all) for invocations already running; True if they
        all finished. Ones still stuck (e.g. retrying against a storage that went away) are left behind:
        delivery is at-least-once, so what they held comes back."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self.http is not None:
            self.http.stop()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            running = list(self._futures)
        _, pending = wait(running, timeout=max(0.0, deadline - time.monotonic()))
        self._pool.shutdown(wait=False, cancel_futures=True)
        if pending:
            log.warning("%d invocation(s) still running at stop; their messages will be delivered again",
                        len(pending))
        return not pending

    def _submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        future = self._pool.submit(fn, *args)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    def request_stop(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (or a chaos exit is requested); True if it was."""
        return self._stop.wait(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- blob trigger -------------------------------------------------------------------------------------
    def _blob_loop(self, t: Trigger) -> None:
        assert t.container and t.blob_pattern
        container = self._blob_service(t).get_container_client(t.container)
        seen: set[tuple[str, str]] = set()    # in memory only: a restart re-delivers (at-least-once)
        while not self._stop.is_set():
            try:
                blobs = [(b.name, b.etag) for b in container.list_blobs()]
            except ResourceNotFoundError:
                blobs = []                    # the app creates its containers on first use
            for name, etag in blobs:
                if (name, etag) in seen or not t.blob_pattern.match(name):
                    continue
                seen.add((name, etag))
                for copy in range(2 if self.options.chaos else 1):
                    if not self._count_delivery(f"{t.function_name} blob {name}"):
                        return
                    self._submit(self._invoke_blob, t, name, etag, 1, copy)
            self._stop.wait(self.options.blob_poll_seconds)

    def _invoke_blob(self, t: Trigger, name: str, etag: str, attempt: int, copy: int) -> None:
        token = invocation.set(f"{t.function_name} {name}" + (" (duplicate)" if copy else ""))
        try:
            log.info("blob created: %s/%s (etag %s, attempt %d)", t.container, name, etag, attempt)
            client = self._blob_service(t).get_blob_client(t.container, name)
            t.func(**{t.arg_name: client})
        except Exception as exc:
            log.exception("failed on blob %s/%s (attempt %d)", t.container, name, attempt)
            if attempt >= BLOB_MAX_ATTEMPTS:
                self._blob_poison(t, name, etag, attempt, exc)
            elif not self._stop.is_set():
                # the host retries a failed blob event with a growing delay, then gives up to a poison queue
                delay = 2 ** (attempt - 1)
                timer = threading.Timer(delay, lambda: self._submit(self._invoke_blob, t, name, etag,
                                                                         attempt + 1, copy))
                timer.daemon = True
                timer.start()
        finally:
            invocation.reset(token)

    def _blob_poison(self, t: Trigger, name: str, etag: str, attempts: int, exc: Exception) -> None:
        queue = self._queues.get_queue_client(BLOB_POISON_QUEUE)
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        queue.send_message(json.dumps({
            "queue": BLOB_POISON_QUEUE, "function": t.function_name, "container": t.container, "blob": name,
            "etag": etag, "reason": "MaxDequeueCountExceeded", "description": f"{type(exc).__name__}: {exc}",
            "delivery_count": attempts, "deadlettered_at": datetime.now(UTC).isoformat()}), time_to_live=-1)
        log.error("gave up on blob %s/%s after %d attempts: moved to %s", t.container, name, attempts,
                  BLOB_POISON_QUEUE)

    def _blob_service(self, t: Trigger) -> Any:
        key = t.connection or "AzureWebJobsStorage"
        with self._lock:
            if key not in self._blob_services:
                self._blob_services[key] = self._blob_factory(self._connection(key))
            return self._blob_services[key]

    # --- Service Bus queue trigger ------------------------------------------------------------------------
    def _queue_loop(self, t: Trigger) -> None:
        assert t.queue_name
        queue = self._queues.get_queue_client(t.queue_name)
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        limit = self.options.queue_concurrency
        while not self._stop.is_set():
            with self._lock:
                free = limit - self._in_flight.get(t.function_name, 0)
            if free <= 0:
                self._stop.wait(0.05)
                continue
            received = list(queue.receive_messages(messages_per_page=min(free, 32), max_messages=min(free, 32),
                                                   visibility_timeout=self.options.lock_seconds))
            if not received:
                self._stop.wait(self.options.queue_poll_seconds)
                continue
            for qm in received:
                if self.options.chaos and qm.dequeue_count == 1 and not _is_chaos_copy(qm.content):
                    # a second copy with the same MessageId: two invocations of one message
                    queue.send_message(_chaos_copy(qm.content))
                try:
                    message = from_queue_message(t.queue_name, queue, qm)
                except UnreadableMessage as exc:   # never delivered: no function could read it either
                    self.actions.unreadable(t.queue_name, queue, qm, str(exc))
                    continue
                if message.delivery_count > self.options.max_delivery_count:
                    self.actions.expire(message)     # locks lapsed too often (crashes, hung handlers)
                    continue
                if not self._count_delivery(f"{t.function_name} message {message.message_id}"):
                    return
                with self._lock:
                    self._in_flight[t.function_name] = self._in_flight.get(t.function_name, 0) + 1
                self._submit(self._invoke_queue, t, message)

    def _invoke_queue(self, t: Trigger, message: LocalServiceBusMessage) -> None:
        token = invocation.set(f"{t.function_name} {message.message_id}")
        done = threading.Event()
        renewer = threading.Thread(target=self._renew_lock, args=(message, done, invocation.get()), daemon=True)
        renewer.start()
        try:
            log.info("delivering message %s from %s (delivery %d)", message.message_id, t.queue_name,
                     message.delivery_count)
            kwargs: dict[str, Any] = {t.arg_name: message}
            if t.actions_arg:
                kwargs[t.actions_arg] = self.actions
            try:
                t.func(**kwargs)
            except Exception:
                log.exception("function raised on message %s (delivery %d)", message.message_id,
                              message.delivery_count)
                self._settle(self.actions.abandon, message)
                return
            if not self.actions.is_settled(message):
                if t.auto_complete:
                    self._settle(self.actions.complete, message)
                else:   # as in Service Bus: unsettled stays locked until the lock lapses, then comes back
                    log.warning("message %s was not settled; it stays locked for up to %d s",
                                message.message_id, self.options.lock_seconds)
        finally:
            done.set()
            with self._lock:
                self._in_flight[t.function_name] -= 1
            invocation.reset(token)

    def _settle(self, action: Callable[[LocalServiceBusMessage], None], message: LocalServiceBusMessage) -> None:
        if self.actions.is_settled(message):
            return
        try:
            action(message)
        except MessageAlreadySettled as exc:
            log.warning("%s", exc)

    def _renew_lock(self, message: LocalServiceBusMessage, done: threading.Event, context: str) -> None:
        invocation.set(context)
        # renew well before the lock lapses, like the host's maxAutoLockRenewalDuration
        while not done.wait(max(1.0, self.options.lock_seconds / 3)):
            if not self.actions.renew(message, self.options.lock_seconds):
                return

    # --- timer trigger ------------------------------------------------------------------------------------
    def _timer_loop(self, t: Trigger) -> None:
        assert t.schedule
        schedule = Schedule.parse(t.schedule)
        scale = self.options.tick_scale
        # schedule time runs `scale` times faster than the wall clock (1 = real time)
        wall0, mono0 = datetime.now(UTC), time.monotonic()

        def schedule_now() -> datetime:
            return wall0 + timedelta(seconds=(time.monotonic() - mono0) * scale)

        running: list[Any] = []
        past_due = False
        if t.run_on_startup:
            running = [self._submit(self._invoke_timer, t, False)]
        due = schedule.next_after(schedule_now())
        while not self._stop.is_set():
            wait = (due - schedule_now()).total_seconds() / scale
            if wait > 0:
                self._stop.wait(min(wait, 1.0))
                continue
            if running and not running[0].done():
                past_due = True             # a timer is a singleton: skip the tick, flag the next one
                log.info("%s: previous tick still running; skipping %s", t.function_name, due.isoformat())
            else:
                running = [self._submit(self._invoke_timer, t, past_due)]
                past_due = False
            due = schedule.next_after(max(due, schedule_now() - timedelta(seconds=1)))

    def _invoke_timer(self, t: Trigger, past_due: bool) -> None:
        token = invocation.set(f"{t.function_name} tick")
        try:
            t.func(**{t.arg_name: func.TimerRequest(past_due=past_due)})
        except Exception:
            log.exception("timer function failed")   # a timer is not retried (no @app.retry here)
        finally:
            invocation.reset(token)

    # --- helpers ------------------------------------------------------------------------------------------
    def _count_delivery(self, what: str) -> bool:
        """Count a blob or queue delivery; False (and stop) once a chaos exit is due."""
        with self._lock:
            if self.exit_requested:
                return False
            self.deliveries += 1
            due = self.options.exit_after is not None and self.deliveries > self.options.exit_after
            if due:
                self.exit_requested = True
        if due:
            log.warning("chaos: exiting after %d deliveries (at %s)", self.deliveries - 1, what)
            self._stop.set()
            if self.on_exit_request:
                self.on_exit_request()
            return False
        return True

    def _guard(self, target: Callable[[Trigger], None], t: Trigger) -> None:
        """Keep a watcher alive through transient storage errors (Azurite restarting, timeouts)."""
        token = invocation.set(t.function_name)
        try:
            while not self._stop.is_set():
                try:
                    target(t)
                    return
                except Exception:
                    log.exception("watcher for %s failed; restarting it in 1 s", t.function_name)
                    self._stop.wait(1.0)
        finally:
            invocation.reset(token)

    def _connection(self, name: str) -> str:
        value = self.env.get(name) or self.env.get("AzureWebJobsStorage")
        if not value:
            raise ValueError(f"connection setting {name!r} (or AzureWebJobsStorage) is not set")
        return value


def _describe(t: Trigger) -> str:
    if t.kind == "blob":
        return f"blob trigger on container {t.container!r} ({t.binding.get('path')})"
    if t.kind == "http":
        return f"http trigger {','.join(t.methods)} {t.binding.get('route')}"
    if t.kind == "queue":
        return f"queue trigger on {t.queue_name!r} (auto_complete={t.auto_complete})"
    return f"timer {t.schedule!r}"


def _is_chaos_copy(content: Any) -> bool:
    try:
        return bool(json.loads(content).get("chaos_copy"))
    except (ValueError, AttributeError, TypeError):
        return False


def _chaos_copy(content: Any) -> str:
    try:
        data = json.loads(content)
        if isinstance(data, dict):
            return json.dumps({**data, "chaos_copy": True})
    except (ValueError, TypeError):
        pass
    return json.dumps({"message_id": None, "body": content, "chaos_copy": True})


def with_options(options: HostOptions, **changes: Any) -> HostOptions:
    return replace(options, **{k: v for k, v in changes.items() if v is not None})


def exit_now(code: int = CHAOS_EXIT_CODE) -> None:
    """A crash: no cleanup, no draining; locks lapse and messages come back, as after a real host crash."""
    logging.shutdown()
    os._exit(code)
