"""A run's transitions: one conditional registry write, one audit record, one event on the topic."""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection
from typing import Any

from shared.messages import run_event
from shared.registry import RunRecord

log = logging.getLogger(__name__)


def advance(deps: Any, run_id: str, target: str, *, actor: str, detail: dict[str, Any] | None = None,
            from_states: Collection[str] | None = None, **updates: Any) -> RunRecord:
    """Transition the run and tell other systems. Re-running after a crash republishes the same event id
    (derived from the write's ETag), so subscribers deduplicate instead of seeing it twice."""
    run = deps.registry.transition(run_id, target, actor=actor, detail=detail, from_states=from_states, **updates)
    event_id = hashlib.sha256(f"{run_id}|{target}|{run.etag}".encode()).hexdigest()[:32]
    deps.publisher.send(deps.settings.events_topic, run_event(target, run_id, detail, event_id=event_id))
    log.info("run %s → %s", run_id, target)
    return run


def publish(deps: Any, run_id: str, state: str, detail: dict[str, Any] | None = None) -> None:
    """An event that is not a state change (e.g. a keep-alive failure, a healed deployment)."""
    deps.publisher.send(deps.settings.events_topic, run_event(state, run_id, detail))
