"""Commands from other systems (queue ftops-commands): route each to the stage that owns it.

Who may send commands is Azure RBAC on the queue; approvals are checked further (listed approver, four
eyes, ticket) by the deployment stage.
"""
from __future__ import annotations

import logging
from typing import Any

from shared.messages import CloudEvent, command_name

log = logging.getLogger(__name__)


def handle_command(event: CloudEvent, command: Any, deps: Any) -> None:
    from shared import deployment, intake, rollback, training
    name = command_name(event)
    log.info("command %s (message %s) for %s", name, event.id, event.subject or getattr(command, "blob", "?"))
    routes = {
        "train": lambda: intake.start_run(_dataset_blob(command.blob, deps), deps, settings_override=command.settings,
                                          actor=command.requested_by or "ftops.commands"),
        "cancel": lambda: training.cancel_run(command, deps),
        "pause": lambda: training.pause_run(command, deps),
        "resume": lambda: training.resume_run(command, deps),
        "retrain": lambda: training.retrain_run(command, deps),
        "approve": lambda: deployment.approve(command, deps),
        "reject": lambda: deployment.reject(command, deps),
        "rollback": lambda: rollback.rollback(command, deps),
        "retire": lambda: rollback.retire(command, deps),
    }
    routes[name]()   # parse_message only lets known command types through


def _dataset_blob(path: str, deps: Any) -> str:
    """`datasets/x.jsonl` or `x.jsonl` → the blob name inside the datasets container."""
    prefix = f"{deps.settings.datasets_container}/"
    return path[len(prefix):] if path.startswith(prefix) else path.lstrip("/")
