"""The outbox: a message (or a transition's audit record) is never lost between a registry write and its send.

A transition writes the messages it causes (its event on the topic, the next stage's request) into the
run's `outbox` in the same conditional write as the new state, then sends them and clears them. A crash in
between leaves them in the run; whoever comes next sends them again with the same ids (subscribers and
Service Bus duplicate detection drop the repeat): the redelivered message (`advance` finds the run already
there and flushes), or the outbox timer's `sweep` (functions/outbox.py, OUTBOX_SCHEDULE), which follows the `outbox` table's markers (one per message,
written before the transition, removed once that message is sent). An event that is no transition (`events.publish`) is
held in the `outbox` table itself until it is sent.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shared.run.messages import CloudEvent

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

INLINE_LIMIT = 5_000      # characters of one message kept in the run entity (its outbox property holds 30K); more → blob
HELD_LIMIT = 30_000       # characters of a held event (outbox table property)
SWEEP_GRACE_SECONDS = 60  # a marker younger than this may belong to a transition still being written


def entry(deps: Deps, run_id: str, queue: str, event: CloudEvent, *, delay_seconds: float = 0) -> dict[str, Any]:
    """One outbox entry; a large message is parked in reports/<run>/outbox/<id>.json first."""
    body = event.to_json()
    item: dict[str, Any] = {"id": event.id, "queue": queue, "delay": delay_seconds}
    if len(body) <= INLINE_LIMIT:
        return {**item, "event": body}
    path = f"{run_id}/outbox/{event.id}.json"
    deps.blobs.get_blob_client(deps.settings.reports_container, path).upload_blob(body.encode(), overwrite=True)
    return {**item, "blob": path}


def flush(deps: Deps, run_id: str, outbox: list[dict[str, Any]]) -> None:
    """Send what the run's outbox holds, in order, then clear it. A failed send raises (the caller's message
    is retried, or the next sweep sends it); what was sent is cleared either way."""
    sent: list[str] = []
    try:
        for item in outbox:
            if "audit" in item:   # the transition's audit record (shared.store.registry.Registry.transition)
                deps.registry.write_audit(run_id, item["audit"])
            else:
                deps.publisher.send(item["queue"], _event(deps, item), delay_seconds=float(item.get("delay") or 0))
            sent.append(item["id"])
    finally:
        if sent or not outbox:
            deps.registry.clear_outbox(run_id, sent)


def send_held(deps: Deps, queue: str, event: CloudEvent) -> None:
    """An event that is no transition: held in the outbox table, sent, released."""
    body = event.to_json()
    held = len(body) <= HELD_LIMIT   # a property holds 32K characters; a larger event is only sent
    if held:
        deps.registry.hold_event(event.id, queue, body)
    deps.publisher.send(queue, event)
    if not held:
        return
    deps.registry.unmark_outbox("event", event.id)


def sweep(deps: Deps, *, grace_seconds: float = SWEEP_GRACE_SECONDS) -> int:
    """Send what crashes left behind (markers and held events older than the grace); returns how many
    runs or events it handled. One failure does not stop the others: the next sweep tries again."""
    cutoff = (datetime.now(UTC) - timedelta(seconds=grace_seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")
    handled = 0
    for item in deps.registry.outbox_entries():
        if item["marked_at"] > cutoff:
            continue
        try:
            if item["partition"] == "event":
                deps.publisher.send(item["queue"], CloudEvent.model_validate_json(item["body"]))
                deps.registry.unmark_outbox("event", item["row"])
            else:   # a message's marker: run_id|message_id (a marker of a whole run, run_id, from before)
                run_id, _, message_id = item["row"].rpartition("|") if "|" in item["row"] else (item["row"], "", "")
                run = deps.registry.get_run(run_id)
                if run is not None and run.outbox:
                    log.warning("run %s: sending %d message(s) a crash left in its outbox", run.run_id,
                                len(run.outbox))
                    flush(deps, run.run_id, run.outbox)
                if run is None or not run.outbox or message_id not in {m.get("id") for m in run.outbox}:
                    deps.registry.unmark_outbox("run", item["row"])   # sent, or never written (died before)
            handled += 1
        except Exception:
            log.exception("outbox sweep: %s/%s failed; the next sweep tries again", item["partition"], item["row"])
    return handled


def _event(deps: Deps, item: dict[str, Any]) -> CloudEvent:
    if "event" in item:
        return CloudEvent.model_validate_json(item["event"])
    body = deps.blobs.get_blob_client(deps.settings.reports_container, item["blob"]).download_blob().readall()
    return CloudEvent.model_validate(json.loads(body))
