"""Commands from other systems (queue ftops-commands): route each to the stage that owns it.

Who may send commands is Azure RBAC on the queue; approvals are checked further (listed approver, four
eyes, ticket) by the deployment stage.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.command_checks import dataset_blob_name
from shared.handling import PERMANENT
from shared.messages import CloudEvent, command_name
from shared.registry import RunNotFound

log = logging.getLogger(__name__)


def handle_command(event: CloudEvent, command: Any, deps: Any) -> None:
    from shared import deployment, intake, rollback, training
    name = command_name(event)
    log.info("command %s (message %s) for %s", name, event.id, event.subject or getattr(command, "blob", "?"))
    routes = {
        "train": lambda: intake.start_run(dataset_blob_name(deps, command.blob), deps, settings_override=command.settings,
                                          actor=command.requested_by or "ftops.commands"),
        "cancel": lambda: training.cancel_run(command, deps),
        "pause": lambda: training.pause_run(command, deps),
        "resume": lambda: training.resume_run(command, deps),
        "retrain": lambda: training.retrain_run(command, deps, message_id=event.id),
        "approve": lambda: deployment.approve(command, deps),
        "reject": lambda: deployment.reject(command, deps),
        "rollback": lambda: rollback.rollback(command, deps),
        "retire": lambda: rollback.retire(command, deps),
    }
    try:
        routes[name]()   # parse_message only lets known command types through
    except PERMANENT as exc:
        record_dead_letter(deps, event, name, command, exc)
        raise   # settle dead-letters it with the same reason


COMMANDS_PARTITION = "_commands"   # the audit trail of commands that name no run the registry has


def record_dead_letter(deps: Any, event: CloudEvent, name: str, command: Any, exc: Exception) -> None:
    """Make a refused command visible where people look: the run's audit trail (`ftops status RUN_ID`) and
    an event on the topic, before the message goes to the dead-letter queue."""
    from shared.events import publish
    run_id = getattr(command, "run_id", None)
    about = run_id if run_id and not isinstance(exc, RunNotFound) else COMMANDS_PARTITION
    detail = {"command": name, "message_id": event.id, "run_id": run_id, "reason": type(exc).__name__,
              "description": str(exc)[:500], "requested_by": getattr(command, "requested_by", None)}
    # if this fails the message is retried (transient) and refused again: recorded, never silently lost
    deps.registry.audit(about, "command_deadlettered", actor="ftops.commands", detail=detail)
    publish(deps, about, "command_deadlettered", detail)
