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


def retry_later(deps: Deps, queue: str, request: Any, base_id: str, *, delay: float = BUSY_RETRY_SECONDS,
                why: str = "busy elsewhere", **changes: Any) -> str:
    """Send a delayed copy of `request` (with `changes`) and let this message go; returns the copy's id.

    Used when another worker holds the step (abandoning instead would come straight back on Service Bus and
    burn the delivery count in seconds) and when the hub is short of quota. The copy's MessageId is
    `<base_id>-a<n>`, n the step's next attempt as the registry counts it across every reason for waiting:
    two chains of copies (one waiting out a busy worker, one a quota refusal) never mint the same id, so
    duplicate detection never drops the only live copy.
    """
    from shared.run.messages import envelope
    attempt = deps.registry.next_attempt(base_id, after=request.attempt)
    again = request.model_copy(update={**changes, "attempt": attempt})
    message_id = f"{base_id}-a{attempt}"
    deps.publisher.send(queue, envelope(again, message_id=message_id), delay_seconds=delay)
    log.info("%s: %s; re-sent as %s in %.0f s", base_id, why, message_id, delay)
    return message_id


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
