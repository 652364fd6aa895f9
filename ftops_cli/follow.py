"""Bus commands that answer: checked before they are sent, and (with --wait) followed to their outcome.

The checks are the handlers' own (shared.stages.command_checks), so what the CLI refuses is exactly what the
commands function would have dead-lettered. The outcome is read where the handler leaves it: the run's
state and audit trail, the `command_deadlettered` audit record (with the message id), or the commands
queue's dead letters.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ftops_cli.errors import UsageError
from shared.app.settlement import PERMANENT
from shared.run import states
from shared.run.hub_api import surface
from shared.run.messages import CloudEvent

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps


@dataclass
class Expectation:
    """What the command's success looks like, and where to look."""
    command: str
    run_id: str
    seen_audit: int = 0                        # audit entries there before sending: only newer ones count
    seen_commands_audit: int = 0
    notes: list[str] = field(default_factory=list)


def precheck(deps: Deps, event: CloudEvent) -> Expectation:
    """Refuse (UsageError, exit 2) a command that cannot succeed; otherwise what to wait for."""
    from shared.stages import command_checks as checks
    from shared.stages.commands import COMMANDS_PARTITION
    name, data = event.type.removeprefix("ftops.command."), event.data
    try:   # `train` is not sent from here: it goes through the operator API (POST runs), which checks it
        run = deps.registry.require_run(data["run_id"])
        run_id = run.run_id
        if name == "cancel" and not checks.cancel_needed(run):
            raise UsageError(f"run {run_id} is already cancelled")
        if name in ("pause", "resume"):
            checks.check_job_action(run, name, surface(deps.settings.hub.api_version))
        if name == "retrain" and not checks.retrain_settings(run, data.get("settings") or {})[1]:
            raise UsageError(f"run {run_id}: a retrain with these settings is already under way")
    except PERMANENT as exc:
        raise UsageError(f"not sent: {exc}") from None
    return Expectation(name, run_id, seen_audit=len(deps.registry.audit_trail(run_id)),
                       seen_commands_audit=len(deps.registry.audit_trail(COMMANDS_PARTITION)))


def outcome(deps: Deps, event: CloudEvent, expect: Expectation) -> tuple[int, str] | None:
    """(exit code, what happened) once the command has an outcome; None while it has none yet."""
    from shared.stages.commands import COMMANDS_PARTITION
    registry = deps.registry
    new = registry.audit_trail(expect.run_id)[expect.seen_audit:]
    new += registry.audit_trail(COMMANDS_PARTITION)[expect.seen_commands_audit:]
    for entry in new:
        if entry["action"] == "command_deadlettered" and entry["detail"].get("message_id") == event.id:
            return 1, f"refused: {entry['detail'].get('reason')}: {entry['detail'].get('description')}"
    for letter in deps.publisher.peek_dead_letters(deps.settings.commands_queue):
        if letter.get("message_id") == event.id:
            return 1, f"dead-lettered: {letter.get('reason')}: {letter.get('description')}"
    run = registry.get_run(expect.run_id)
    if run is None:
        return None
    name = expect.command
    if name == "cancel" and run.state == states.CANCELLED:
        return 0, f"run {run.run_id} cancelled"
    if name in ("pause", "resume"):
        for entry in new:
            if entry["action"] == f"job.{name}":
                return 0, f"run {run.run_id}: job {name}d (hub status {entry['detail'].get('job_status')})"
    if name == "retrain" and any(e.get("to_state") == states.UPLOADING for e in new):
        return 0, f"run {run.run_id} is training again (state {run.state})"
    return None


def follow(deps: Deps, event: CloudEvent, expect: Expectation, *, timeout: float,
           sleep: Callable[[float], None] = time.sleep, poll_seconds: float = 1.0) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        result = outcome(deps, event, expect)
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            return 1, (f"no outcome after {timeout:.0f} s (is the commands function running?); "
                       f"`ftops status {expect.run_id}` shows what happens next")
        sleep(poll_seconds)
