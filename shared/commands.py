"""Commands from other systems (queue ftops-commands): route each to the stage that owns it.

Who may send commands is Azure RBAC on the queue, and a message cannot prove who wrote it: so the queue
takes train, retrain, cancel, pause and resume only. Approve, reject, rollback and retire are operator
actions with a verified identity (the operator API, shared.operator_api); on this queue they are
dead-lettered with that reason and recorded in the run's audit trail with what the message claimed.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.handling import PermanentError
from shared.messages import CloudEvent, command_name

log = logging.getLogger(__name__)
OPERATOR_ACTIONS = ("approve", "reject", "rollback", "retire")


class OperatorActionNotAccepted(PermanentError):
    """An operator action arrived on the commands queue, where nobody's identity can be verified."""


def handle_command(event: CloudEvent, command: Any, deps: Any) -> None:
    from shared import intake, training
    name = command_name(event)
    log.info("command %s (message %s) for %s", name, event.id, event.subject or getattr(command, "blob", "?"))
    if name in OPERATOR_ACTIONS:
        _refuse_operator_action(event, command, deps, name)
    routes = {
        "train": lambda: intake.start_run(_dataset_blob(command.blob, deps), deps, settings_override=command.settings,
                                          actor=command.requested_by or "ftops.commands"),
        "cancel": lambda: training.cancel_run(command, deps),
        "pause": lambda: training.pause_run(command, deps),
        "resume": lambda: training.resume_run(command, deps),
        "retrain": lambda: training.retrain_run(command, deps),
    }
    routes[name]()   # parse_message only lets known command types through


def _refuse_operator_action(event: CloudEvent, command: Any, deps: Any, name: str) -> None:
    claimed = getattr(command, "approver", None) or getattr(command, "requested_by", None)
    reason = (f"{name} is not accepted on the commands queue: a message cannot prove who sent it. Use the "
              f"operator API (`ftops {name}`, signed in with Entra ID)")
    run_id = getattr(command, "run_id", None) or event.subject or "_operator"   # the API's partition for runless
    if run_id:
        deps.registry.audit(run_id, f"{name}.refused", actor=f"unverified: {claimed or 'unnamed sender'}",
                            detail={"reason": reason, "channel": "servicebus", "message_id": event.id,
                                    "claimed_sender": claimed, "environment": getattr(command, "environment", None)})
    raise OperatorActionNotAccepted(reason)


def _dataset_blob(path: str, deps: Any) -> str:
    """`datasets/x.jsonl` or `x.jsonl` → the blob name inside the datasets container."""
    prefix = f"{deps.settings.datasets_container}/"
    return path[len(prefix):] if path.startswith(prefix) else path.lstrip("/")
