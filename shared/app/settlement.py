"""Settling queue messages the same way in every function: complete on success, dead-letter what can
never succeed (with a reason a person can act on), abandon what may succeed later (the runtime retries,
then Service Bus dead-letters after maxDeliveryCount)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shared.azure.bus import message_body
from shared.run.messages import CloudEvent, InvalidMessage, parse_message
from shared.store.registry import InvalidTransition, RunNotFound, StorageRefused

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


class PermanentError(RuntimeError):
    """The message is well-formed but can never succeed (forbidden, refers to nothing, bad settings)."""


PERMANENT = (PermanentError, InvalidTransition, RunNotFound, StorageRefused)   # dead-lettered on first delivery
BUSY_RETRY_SECONDS = 30.0


def retry_later(deps: Deps, queue: str, request: Any, base_id: str, *, delay: float = BUSY_RETRY_SECONDS) -> None:
    """Another worker holds this step (a lost lock, a duplicate): send a delayed copy and let this message go.

    Abandoning instead would come straight back on Service Bus and burn the delivery count in seconds; the
    copy (a new MessageId per attempt) comes back once the other worker has had time to finish or expire.
    """
    from shared.run.messages import envelope
    again = request.model_copy(update={"attempt": request.attempt + 1})
    deps.publisher.send(queue, envelope(again, message_id=f"{base_id}-w{again.attempt}"), delay_seconds=delay)
    log.info("%s is busy elsewhere; retrying as attempt %s in %.0f s", base_id, again.attempt, delay)


def settle(message: Any, actions: Any, handler: Callable[[CloudEvent, Any], None], *, accepts: str) -> None:
    """Parse the CloudEvent, check it belongs here (`type` starts with `accepts`), run the handler, settle."""
    message_id = getattr(message, "message_id", None)
    try:
        event, data = parse_message(message_body(message))
        if not event.type.startswith(accepts):
            raise InvalidMessage(f"message type {event.type!r} does not belong on this queue ({accepts}*)")
    except InvalidMessage as exc:
        log.warning("dead-lettering message %s: %s", message_id, exc)
        actions.deadletter(message, deadletter_reason="InvalidMessage", deadletter_error_description=str(exc))
        return
    try:
        handler(event, data)
    except PERMANENT as exc:
        log.warning("dead-lettering %s %s (run %s): %s", event.type, message_id, event.subject, exc)
        actions.deadletter(message, deadletter_reason=type(exc).__name__, deadletter_error_description=str(exc))
        return
    except Exception:
        log.exception("%s %s (run %s) failed; it will be retried", event.type, message_id, event.subject)
        actions.abandon(message)
        raise
    actions.complete(message)
