"""Service Bus queue semantics on an Azurite storage queue: peek-lock, delivery count, settlement actions
and a dead-letter queue, with the message and actions shapes of the SDK-type binding.

- lock = the queue message's visibility timeout; renewed while the function runs (the host's auto lock
  renewal), so a slow handler does not get its message delivered twice;
- delivery count = the storage queue's dequeue count;
- dead letters go to `<queue>-deadletter` as JSON with reason, description, delivery count, message id,
  the original body and the time.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

from shared.azure.bus import DEADLETTER_SUFFIX

log = logging.getLogger(__name__)


class MessageAlreadySettled(RuntimeError):
    """Settling a message twice, as the Service Bus SDK refuses it."""


class UnreadableMessage(ValueError):
    """A queue message the local transport cannot read at all (its text nests too deeply to parse): the
    watcher dead-letters it at once instead of failing on it every lock period."""


@dataclass
class Lease:
    """The storage queue message behind one delivery; its pop receipt changes each time the lock moves."""
    queue_client: Any
    message_id_in_queue: str
    pop_receipt: str
    settled: str | None = None          # "complete" | "abandon" | "deadletter" | "lost"
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class LocalServiceBusMessage:
    """The attributes of azure.servicebus.ServiceBusReceivedMessage the app uses."""
    body: bytes
    message_id: str
    delivery_count: int
    lock_token: str
    enqueued_time_utc: datetime
    application_properties: dict[str, Any]
    queue_name: str
    subject: str | None = None
    content_type: str | None = None
    _lease: Lease | None = field(default=None, repr=False)

    def get_body(self) -> bytes:
        return self.body

    def __str__(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def from_queue_message(queue_name: str, queue_client: Any, qm: Any) -> LocalServiceBusMessage:
    """A storage queue message (text = shared.azure.bus.encode_local JSON) → the Service Bus message shape.
    Text that is not our envelope is still delivered, as raw body, so the function dead-letters it."""
    content = qm.content if isinstance(qm.content, str) else bytes(qm.content).decode("utf-8", "replace")
    try:
        envelope = json.loads(content)
        if not isinstance(envelope, dict) or "body" not in envelope:
            raise ValueError("not a local transport envelope")
    except ValueError:
        envelope = {"message_id": qm.id, "body": content}
    except RecursionError:
        raise UnreadableMessage("the queue message's text is JSON nested too deeply to parse") from None
    body = envelope["body"]
    body_bytes = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    enqueued = _parse_time(envelope.get("enqueued_at")) or qm.inserted_on or datetime.now(UTC)
    props = dict(envelope.get("application_properties") or {})
    try:
        props.setdefault("type", json.loads(body_bytes).get("type"))
    except (ValueError, AttributeError, RecursionError):
        pass   # delivered as it is: the function dead-letters what it cannot parse
    lease = Lease(queue_client, qm.id, qm.pop_receipt)
    return LocalServiceBusMessage(body=body_bytes, message_id=str(envelope.get("message_id") or qm.id),
                                  delivery_count=int(qm.dequeue_count or 1), lock_token=qm.pop_receipt,
                                  enqueued_time_utc=enqueued, application_properties=props,
                                  queue_name=queue_name, subject=envelope.get("subject"), _lease=lease)


class LocalMessageActions:
    """Mirrors azurefunctions.extensions.bindings.servicebus.ServiceBusMessageActions over Azurite."""

    def __init__(self, queue_service: Any, *, max_delivery_count: int, abandon_backoff_max: int = 5) -> None:
        self._service = queue_service
        self._max_delivery_count = max_delivery_count
        self._backoff_max = abandon_backoff_max
        self._dlq_ready: set[str] = set()
        self._dlq_lock = threading.Lock()

    def complete(self, message: LocalServiceBusMessage) -> None:
        _remove(self._take(message, "complete"), message, "completing")

    def abandon(self, message: LocalServiceBusMessage) -> None:
        lease = self._take(message, "abandon")
        if message.delivery_count >= self._max_delivery_count:
            # Service Bus moves it to the dead-letter queue once the count reaches maxDeliveryCount
            self._to_deadletter(message, lease, "MaxDeliveryCountExceeded",
                                f"Message could not be consumed after {message.delivery_count} delivery attempts.")
            return
        # visible again soon; a small growing backoff stands in for the host's retry delay
        delay = min(message.delivery_count, self._backoff_max)
        with lease.lock:
            try:
                lease.queue_client.update_message(lease.message_id_in_queue, lease.pop_receipt,
                                                  visibility_timeout=delay)
            except ResourceNotFoundError:
                pass   # lock already lost: it is visible again anyway

    def deadletter(self, message: LocalServiceBusMessage, deadletter_reason: str | None = None,
                   deadletter_error_description: str | None = None) -> None:
        lease = self._take(message, "deadletter")
        self._to_deadletter(message, lease, deadletter_reason or "", deadletter_error_description or "")

    def defer(self, message: LocalServiceBusMessage) -> None:
        raise NotImplementedError("the dev host does not implement deferral (ftops never defers)")

    def renew_message_lock(self, message: LocalServiceBusMessage) -> None:
        """Explicit renewal is a no-op here: the dev host renews every lock while the function runs."""

    # --- helpers used by the host ---------------------------------------------------------------------
    def unreadable(self, queue_name: str, queue_client: Any, qm: Any, reason: str) -> None:
        """Dead-letter a queue message the host could not even turn into a Service Bus message."""
        content = qm.content if isinstance(qm.content, str) else bytes(qm.content).decode("utf-8", "replace")
        message = LocalServiceBusMessage(body=content[:4096].encode(), message_id=str(qm.id),
                                         delivery_count=int(qm.dequeue_count or 1), lock_token=qm.pop_receipt,
                                         enqueued_time_utc=qm.inserted_on or datetime.now(UTC),
                                         application_properties={}, queue_name=queue_name,
                                         _lease=Lease(queue_client, qm.id, qm.pop_receipt))
        self._to_deadletter(message, self._take(message, "deadletter"), "UnparseableMessage",
                            f"{reason}; {len(content):,} characters, the first 4,096 kept")

    def expire(self, message: LocalServiceBusMessage) -> None:
        """Received with a delivery count already past the maximum (locks expired, host crashed)."""
        lease = self._take(message, "deadletter")
        self._to_deadletter(message, lease, "MaxDeliveryCountExceeded",
                            f"Message could not be consumed after {message.delivery_count - 1} delivery attempts.")

    def renew(self, message: LocalServiceBusMessage, lock_seconds: int) -> bool:
        """Extend the lock (the host's auto lock renewal); False once the message is settled or lost."""
        lease = message._lease
        if lease is None:
            return False
        with lease.lock:
            if lease.settled:
                return False
            try:
                receipt = lease.queue_client.update_message(lease.message_id_in_queue, lease.pop_receipt,
                                                            visibility_timeout=lock_seconds)
            except ResourceNotFoundError:
                lease.settled = "lost"
                log.warning("message %s: lock lost (renewed too late)", message.message_id)
                return False
            lease.pop_receipt = receipt.pop_receipt
            return True

    def is_settled(self, message: LocalServiceBusMessage) -> bool:
        return bool(message._lease and message._lease.settled)

    def _take(self, message: LocalServiceBusMessage, action: str) -> Lease:
        lease = message._lease
        if lease is None:
            raise ValueError("not a message the dev host delivered")
        with lease.lock:
            if lease.settled == "lost":
                raise MessageAlreadySettled(f"message {message.message_id}: the lock was lost; cannot {action}")
            if lease.settled:
                raise MessageAlreadySettled(f"message {message.message_id} was already settled ({lease.settled})")
            lease.settled = action
        log.info("message %s on %s: %s (delivery %d)", message.message_id, message.queue_name, action,
                 message.delivery_count)
        return lease

    def _to_deadletter(self, message: LocalServiceBusMessage, lease: Lease, reason: str, description: str) -> None:
        queue = f"{message.queue_name}{DEADLETTER_SUFFIX}"
        dlq = self._service.get_queue_client(queue)
        with self._dlq_lock:
            if queue not in self._dlq_ready:
                try:
                    dlq.create_queue()
                except ResourceExistsError:
                    pass
                self._dlq_ready.add(queue)
        record = {"queue": message.queue_name, "message_id": message.message_id, "reason": reason,
                  "description": description, "delivery_count": message.delivery_count,
                  "body": message.body.decode("utf-8", errors="replace"),
                  "enqueued_at": message.enqueued_time_utc.isoformat(),
                  "deadlettered_at": datetime.now(UTC).isoformat()}
        # write the dead letter first, then remove the original: a crash in between duplicates, never loses
        dlq.send_message(json.dumps(record), time_to_live=-1)
        _remove(lease, message, "dead-lettering")
        log.warning("dead-lettered message %s from %s: %s: %s", message.message_id, message.queue_name,
                    reason, description)


def _parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _remove(lease: Lease, message: LocalServiceBusMessage, doing: str) -> None:
    """Delete the locked message from its queue; a lock lost meanwhile means it will be delivered again."""
    with lease.lock:
        try:
            lease.queue_client.delete_message(lease.message_id_in_queue, lease.pop_receipt)
        except ResourceNotFoundError:
            log.warning("message %s: lock lost before %s; it will be delivered again", message.message_id, doing)
