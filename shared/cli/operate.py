"""Operator commands: each sends one CloudEvent to the commands queue, exactly as another system would."""
from __future__ import annotations

import argparse
import json
from typing import Any

from shared import messages as m


def add_parser(sub: Any) -> None:
    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=run, command_name=name)
        p.add_argument("--by", dest="requested_by", default=None, help="who asks (recorded in the audit trail)")
        return p

    p = command("train", "start a run from a dataset blob already in the datasets container")
    p.add_argument("blob")
    p.add_argument("--settings", default="{}", help="run settings as JSON (as in run.json)")
    for name in ("cancel", "pause", "resume", "retire"):
        command(name, f"{name} a run").add_argument("run_id")
    p = command("retrain", "train again on the same data with new settings")
    p.add_argument("run_id")
    p.add_argument("--settings", default="{}")
    for name in ("approve", "reject"):
        p = command(name, f"{name} promotion of a run into an environment")
        p.add_argument("run_id")
        p.add_argument("--env", required=True)
        p.add_argument("--approver", required=True)
        p.add_argument("--ticket", required=name == "approve")
        if name == "reject":
            p.add_argument("--reason", required=True)
    p = command("rollback", "return an environment to the previous approved model")
    p.add_argument("--env", required=True)
    p.add_argument("--run-id", default=None)
    p.add_argument("--reason", default=None)


def build(args: argparse.Namespace) -> m.CloudEvent:
    name, by = args.command_name, args.requested_by
    data: Any
    if name == "train":
        data = m.TrainCommand(blob=args.blob, settings=json.loads(args.settings), requested_by=by)
    elif name == "retrain":
        data = m.RetrainCommand(run_id=args.run_id, settings=json.loads(args.settings), requested_by=by)
    elif name == "approve":
        data = m.ApproveCommand(run_id=args.run_id, environment=args.env, approver=args.approver, ticket=args.ticket)
    elif name == "reject":
        data = m.RejectCommand(run_id=args.run_id, environment=args.env, approver=args.approver,
                               reason=args.reason, ticket=args.ticket)
    elif name == "rollback":
        data = m.RollbackCommand(environment=args.env, run_id=args.run_id, requested_by=by, reason=args.reason)
    else:
        data = m.RunCommand(run_id=args.run_id, requested_by=by)
    return m.envelope(data, type_=f"ftops.command.{name}")


def run(args: argparse.Namespace) -> int:
    from shared.bootstrap import get_deps
    deps = get_deps()
    event = build(args)
    deps.publisher.send(deps.settings.commands_queue, event)
    print(f"sent {event.type} ({event.id})")
    return 0
