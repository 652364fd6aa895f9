"""A run's transitions: one conditional registry write (with its audit record and the messages it causes in
the run's outbox), then the audit record filed, the event on the topic and the next stage's request
(shared.store.outbox)."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from shared.run.messages import CloudEvent, run_event
from shared.store import outbox
from shared.store.registry import RunRecord

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


def advance(deps: Deps, run_id: str, target: str, *, actor: str, detail: dict[str, Any] | None = None,
            from_states: Collection[str] | None = None, send: Sequence[tuple[str, CloudEvent]] = (),
            **updates: Any) -> RunRecord:
    """Transition the run and tell other systems: the event (and `send`, e.g. the next stage's request) is
    written with the transition and sent after it, so a crash in between loses nothing — a repeat of this
    call finds the run already in `target` and sends what is still in its outbox, with the same ids."""
    event = run_event(target, run_id, detail, event_id=uuid.uuid4().hex)
    pending = [outbox.entry(deps, run_id, deps.settings.events_topic, event)]
    pending += [outbox.entry(deps, run_id, queue, message) for queue, message in send]
    audit_id = f"audit-{event.id}"   # the transition's audit record goes in the outbox too, ahead of its messages
    ours = [audit_id, *(p["id"] for p in pending)]
    deps.registry.mark_outbox(run_id, ours)
    run = deps.registry.transition(run_id, target, actor=actor, detail=detail, from_states=from_states,
                                   outbox=pending, audit_id=audit_id, **updates)
    unwritten = set(ours) - {m.get("id") for m in run.outbox}   # a repeat: the run was already there
    if run.outbox:
        outbox.flush(deps, run_id, run.outbox)
        run = deps.registry.require_run(run_id)   # clearing the outbox wrote the run: its ETag moved on
    if unwritten:
        deps.registry.clear_outbox(run_id, sorted(unwritten))   # nothing of ours to send: only our markers go
    log.info("run %s → %s", run_id, target)
    return run


def publish(deps: Deps, run_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
    """An event that is not a state change (e.g. a keep-alive failure, a healed deployment): held until sent."""
    outbox.send_held(deps, deps.settings.events_topic, run_event(state, run_id, detail))
