"""Who the audit trail names as the actor: one spelling per actor, defined here only.

ftops's own stages are `ftops.<stage>`. A person acting through the operator API is the verified caller
(shared.azure.access.Caller.actor: `Name <oid>`); a command from the commands queue is what its sender
claimed, marked as a claim (`unverified: <name> via ftops-commands`), never in the verified form.
"""
from __future__ import annotations

import re
from typing import Protocol

INTAKE = "ftops.intake"
TRAINING = "ftops.training"
POLLING = "ftops.polling"
EVALUATION = "ftops.evaluation"
DEPLOYMENT = "ftops.deployment"
KEEPALIVE = "ftops.keepalive"
AUTO_RETIRE = "ftops.auto-retire"
COMMANDS = "ftops.commands"
RECONCILE = "ftops.reconcile"
FLYWHEEL = "ftops.flywheel"     # starts runs from production data; never approves

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_object_id(value: str | None) -> bool:
    """An Entra ID object id (a GUID): what rights and four eyes compare, never a display name."""
    return bool(value) and _GUID.fullmatch(str(value).strip()) is not None


class _Requested(Protocol):
    @property
    def requested_by(self) -> str | None: ...


def requester(command: _Requested) -> str:
    """The actor of a command: who it names (the operator API fills in the verified caller), else the
    commands channel it came through."""
    return command.requested_by or COMMANDS


def unverified(claimed: str) -> str:
    """What an unverifiable sender claimed to be: recorded, never taken for who acted."""
    return f"unverified: {claimed}"


UNNAMED = "unnamed sender"
CLAIM_CHARS = 200   # a claimed name is echoed into the audit trail: bounded


def via_queue(claimed: str | None, queue: str) -> str:
    """The actor of a command that came through the commands queue: who its message says sent it (or that
    it names nobody), marked unverified and with the channel, so the trail never reads like a verified
    caller however the claimed name is spelt (`Name <oid>` included)."""
    name = " ".join(str(claimed or "").split())[:CLAIM_CHARS] or UNNAMED
    return unverified(f"{name} via {queue}")
