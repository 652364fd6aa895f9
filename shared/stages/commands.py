"""Commands from other systems (queue ftops-commands): route each to the stage that owns it.

Who may send commands is Azure RBAC on the queue, and a message cannot prove who wrote it: so the queue
takes only the commands shared.run.command_table marks `bus` (train, retrain, cancel, pause, resume), each to
the handler its row names (below). The operator actions (approve, reject, rollback, retire) need a verified
identity (the operator API, shared.operator.api); on this queue they are dead-lettered with that reason
and recorded in the run's audit trail with what the message claimed.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from shared.app.settlement import PERMANENT, PermanentError
from shared.run import actors, command_table
from shared.run.command_table import BY_TYPE
from shared.run.messages import CloudEvent, RetrainCommand, RunCommand, TrainCommand, command_name
from shared.stages.command_checks import dataset_blob_name
from shared.store.registry import RunNotFound

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)


class OperatorActionNotAccepted(PermanentError):
    """An operator action arrived on the commands queue, where nobody's identity can be verified."""


def handle_command(event: CloudEvent, command: Any, deps: Deps) -> None:
    name = command_name(event)
    log.info("command %s (message %s) for %s", name, event.id, event.subject or getattr(command, "blob", "?"))
    row = BY_TYPE[event.type]   # parse_message only lets the table's command types through
    if row.via != "bus":
        _refuse_operator_action(event, command, deps, name)
    if hasattr(command, "requested_by"):   # who it names is a claim: every record of it says so
        command = command.model_copy(update={"requested_by": actors.via_queue(command.requested_by,
                                                                               deps.settings.commands_queue)})
    try:
        command_table.load(row.handler)(command, deps, event.id)
    except PERMANENT as exc:
        record_dead_letter(deps, event, name, command, exc)
        raise   # settle dead-letters it with the same reason


# --- the bus commands' handlers, as shared.run.command_table names them: (command, deps, message_id) ----------
def train(command: TrainCommand, deps: Deps, message_id: str) -> None:
    from shared.stages import intake
    intake.start_run(dataset_blob_name(deps, command.blob), deps, settings_override=command.settings,
                     actor=actors.requester(command))


def cancel(command: RunCommand, deps: Deps, message_id: str) -> None:
    from shared.stages import training
    training.cancel_run(command, deps)


def pause(command: RunCommand, deps: Deps, message_id: str) -> None:
    from shared.stages import training
    training.pause_run(command, deps)


def resume(command: RunCommand, deps: Deps, message_id: str) -> None:
    from shared.stages import training
    training.resume_run(command, deps)


def retrain(command: RetrainCommand, deps: Deps, message_id: str) -> None:
    from shared.stages import training
    training.retrain_run(command, deps, message_id=message_id)


def _refuse_operator_action(event: CloudEvent, command: Any, deps: Deps, name: str) -> None:
    claimed = getattr(command, "approver", None) or getattr(command, "requested_by", None)
    reason = (f"{name} is not accepted on the commands queue: a message cannot prove who sent it. Use the "
              f"operator API (`ftops {name}`, signed in with Entra ID)")
    run_id = getattr(command, "run_id", None) or event.subject or "_operator"   # the API's partition for runless
    deps.registry.audit(run_id, f"{name}.refused", actor=actors.via_queue(claimed, deps.settings.commands_queue),
                        detail={"reason": reason, "channel": "servicebus", "message_id": event.id,
                                "claimed_sender": claimed, "environment": getattr(command, "environment", None)})
    from shared.store.events import publish  # other systems hear of it, as of any refused command
    publish(deps, run_id, "command_deadlettered", {"command": name, "message_id": event.id, "run_id": run_id,
                                                   "reason": "OperatorActionNotAccepted", "description": reason,
                                                   "requested_by": claimed})
    raise OperatorActionNotAccepted(reason)


COMMANDS_PARTITION = "_commands"   # the audit trail of commands that name no run the registry has


def record_dead_letter(deps: Deps, event: CloudEvent, name: str, command: Any, exc: Exception) -> None:
    """Make a refused command visible where people look: the run's audit trail (`ftops status RUN_ID`) and
    an event on the topic, before the message goes to the dead-letter queue."""
    from shared.store.events import publish
    run_id = getattr(command, "run_id", None)
    about = run_id if run_id and not isinstance(exc, RunNotFound) else COMMANDS_PARTITION
    detail = {"command": name, "message_id": event.id, "run_id": run_id, "reason": type(exc).__name__,
              "description": str(exc)[:500], "requested_by": getattr(command, "requested_by", None)}
    # if this fails the message is retried (transient) and refused again: recorded, never silently lost
    deps.registry.audit(about, "command_deadlettered", actor=actors.COMMANDS, detail=detail)
    publish(deps, about, "command_deadlettered", detail)
