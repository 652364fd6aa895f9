"""The dev host turns every queue message it can read into a Service Bus message, however deep its body,
and says which one it cannot read (the watcher dead-letters that one: tests/integration/test_devhost.py)."""
from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from local.devhost.servicebus import UnreadableMessage, from_queue_message
from shared.azure.bus import encode_local
from shared.run.messages import InvalidMessage, parse_message

DEEP = "[" * 20_000 + "]" * 20_000


def queued(content: str) -> SimpleNamespace:
    return SimpleNamespace(content=content, id="q-1", pop_receipt="p", dequeue_count=1,
                           inserted_on=datetime(2026, 12, 7, tzinfo=UTC))


def test_a_deep_body_in_the_envelope_is_delivered_for_the_function_to_dead_letter() -> None:
    message = from_queue_message("ftops-commands", object(), queued(encode_local("m-deep", DEEP)))
    assert message.message_id == "m-deep" and message.body == DEEP.encode()
    with pytest.raises(InvalidMessage, match="nested too deeply"):   # what the app's functions do with it
        parse_message(message.body)


def test_text_too_deep_to_read_as_an_envelope_is_named_unreadable() -> None:
    with pytest.raises(UnreadableMessage, match="nested too deeply"):
        from_queue_message("ftops-commands", object(), queued(DEEP))
