"""Settling queue messages the same way in every function: complete on success, dead-letter what can
never succeed (with a reason a person can act on), abandon what may succeed later (the runtime retries,
then Service Bus dead-letters after maxDeliveryCount)."""
from __future__ import annotations

import logging
from typing import Any, Callable

from shared.bus import message_body
from shared.messages import CloudEvent, InvalidMessage, parse_message
from shared.registry import InvalidTransition, RunNotFound

log = logging.getLogger(__name__)


class PermanentError(RuntimeError):
    """The message is well-formed but can never succeed (forbidden, refers to nothing, bad settings)."""


_PERMANENT = (PermanentError, InvalidTransition, RunNotFound)


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
    except _PERMANENT as exc:
        log.warning("dead-lettering %s %s (run %s): %s", event.type, message_id, event.subject, exc)
        actions.deadletter(message, deadletter_reason=type(exc).__name__, deadletter_error_description=str(exc))
        return
    except Exception:
        log.exception("%s %s (run %s) failed; it will be retried", event.type, message_id, event.subject)
        actions.abandon(message)
        raise
    actions.complete(message)
