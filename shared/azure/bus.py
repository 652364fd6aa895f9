"""Publishing messages: one interface, two transports.

In Azure, Service Bus (MessageId = the CloudEvent id, so duplicate detection and idempotent handlers
line up). On one machine, Azurite storage queues stand in for the queues and the topic; the dev host
reads them with peek-lock semantics and dead-letters into `<queue>-deadletter` with a reason.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shared.run.messages import CloudEvent

log = logging.getLogger(__name__)

DEADLETTER_SUFFIX = "-deadletter"

# What the handlers rely on from every Service Bus queue. infra/modules/messaging.bicep creates the queues
# with exactly this (tests/unit/test_infra_contract.py compares them) and the dev host imitates it.
SERVICE_BUS_QUEUE_CONTRACT = {
    "requiresDuplicateDetection": True,   # MessageId = CloudEvent id: a resend after a crash is dropped
    "maxDeliveryCount": 10,               # abandoned (transient) failures are retried this often, then dead-lettered
    "requiresSession": False,             # the triggers are plain queue receivers, no sessions
}
# A crash between sending and settling resends within a lock duration or two; the window must cover that.
MIN_DUPLICATE_DETECTION_WINDOW = timedelta(minutes=10)
SEND_TIMEOUT_S = 30.0   # one send waits this long at most (its default waits out every retry of a hung namespace)


class Publisher(Protocol):
    def send(self, queue: str, event: CloudEvent, *, delay_seconds: float = 0) -> None:
        """Enqueue a message on a queue (or the events topic); delayed messages become visible later."""

    def peek_dead_letters(self, queue: str, *, max_count: int = 100) -> list[dict[str, Any]]:
        """What the queue dead-lettered, without removing it: queue, message_id, reason, description,
        subject (the run), body."""


def dead_letter_subject(body: str) -> str | None:
    """The run a dead-lettered CloudEvent was about (its subject, else data.run_id), if it parses."""
    try:
        event = json.loads(body)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    data = event["data"] if isinstance(event.get("data"), dict) else {}
    subject = event.get("subject") or data.get("run_id")
    return subject if isinstance(subject, str) else None


def message_body(message: Any) -> bytes:
    """The body of a Service Bus message, whatever shape the binding handed us (SDK type, func type, bytes)."""
    if isinstance(message, (bytes, bytearray)):
        return bytes(message)
    if isinstance(message, str):
        return message.encode()
    if hasattr(message, "get_body"):
        return bytes(message.get_body())
    body = message.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(body)   # azure-servicebus: an iterable of data sections


class ServiceBusPublisher:
    def __init__(self, namespace: str, credential: Any, *, topic: str) -> None:
        from azure.servicebus import ServiceBusClient  # heavy import: only where Service Bus is used
        self._client = ServiceBusClient(namespace, credential)
        self._topic = topic
        self._senders: dict[str, Any] = {}

    def send(self, queue: str, event: CloudEvent, *, delay_seconds: float = 0) -> None:
        from azure.servicebus import ServiceBusMessage
        sender = self._senders.get(queue)
        if sender is None:
            make = self._client.get_topic_sender if queue == self._topic else self._client.get_queue_sender
            sender = self._senders[queue] = make(queue)
        message = ServiceBusMessage(event.to_json(), message_id=event.id, subject=event.subject,
                                    content_type="application/cloudevents+json; charset=utf-8",
                                    application_properties={"type": event.type})
        if delay_seconds > 0:
            message.scheduled_enqueue_time_utc = datetime.now(UTC) + timedelta(seconds=delay_seconds)
        sender.send_messages(message, timeout=SEND_TIMEOUT_S)
        log.info("sent %s %s to %s", event.type, event.id, queue)

    def peek_dead_letters(self, queue: str, *, max_count: int = 100) -> list[dict[str, Any]]:
        from azure.servicebus import ServiceBusSubQueue
        with self._client.get_queue_receiver(queue, sub_queue=ServiceBusSubQueue.DEAD_LETTER) as receiver:
            messages = receiver.peek_messages(max_message_count=max_count)
        letters = []
        for m in messages:
            body = message_body(m).decode("utf-8", errors="replace")
            letters.append({"queue": queue, "message_id": m.message_id, "reason": m.dead_letter_reason,
                            "description": m.dead_letter_error_description, "body": body,
                            "subject": m.subject or dead_letter_subject(body)})
        return letters


def encode_local(message_id: str, body: str, **extra: Any) -> str:
    """The local transport's queue message: the Service Bus fields we use, as JSON text."""
    return json.dumps({"message_id": message_id, "body": body, **extra})


def decode_local(content: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(content)   # what encode_local wrote
    return message


class LocalQueuePublisher:
    """Azurite queues standing in for Service Bus queues and the events topic (one machine only).

    Like a Service Bus queue with duplicate detection, a MessageId already sent to a queue is dropped
    (remembered in a table); a crash between send and remembering gives a duplicate, which handlers absorb.
    """

    def __init__(self, queue_service: Any, sent_table: Any | None = None) -> None:
        self._service = queue_service
        self._sent = sent_table
        self._ready: set[str] = set()

    def queue_client(self, queue: str) -> Any:
        client = self._service.get_queue_client(queue)
        if queue not in self._ready:
            from azure.core.exceptions import ResourceExistsError
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            self._ready.add(queue)
        return client

    def send(self, queue: str, event: CloudEvent, *, delay_seconds: float = 0) -> None:
        if self._already_sent(queue, event.id):
            log.info("duplicate %s %s to %s dropped (duplicate detection)", event.type, event.id, queue)
            return
        content = encode_local(event.id, event.to_json(), enqueued_at=datetime.now(UTC).isoformat())
        self.queue_client(queue).send_message(content, visibility_timeout=int(delay_seconds) or None)
        if self._sent is not None:
            self._sent.upsert_entity({"PartitionKey": queue, "RowKey": event.id})
        log.info("sent %s %s to %s", event.type, event.id, queue)

    def peek_dead_letters(self, queue: str, *, max_count: int = 100) -> list[dict[str, Any]]:
        letters = []
        # Azurite's peek returns at most 32 messages: enough for a status view on one machine
        for message in self.queue_client(f"{queue}{DEADLETTER_SUFFIX}").peek_messages(max_messages=min(max_count, 32)):
            try:
                record = json.loads(message.content)
            except ValueError:
                record = {"body": message.content}
            body = str(record.get("body") or "")
            letters.append({"queue": queue, "message_id": record.get("message_id"), "reason": record.get("reason"),
                            "description": record.get("description"), "body": body,
                            "subject": dead_letter_subject(body)})
        return letters

    def _already_sent(self, queue: str, message_id: str) -> bool:
        if self._sent is None:
            return False
        from azure.core.exceptions import ResourceNotFoundError
        try:
            self._sent.get_entity(queue, message_id)
            return True
        except ResourceNotFoundError:
            return False
