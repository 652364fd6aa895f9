"""Operator commands: each sends one CloudEvent to the commands queue, exactly as another system would.

The bus commands (train, cancel, pause, resume, retrain) are checked first with the handlers' own rules
and refused with the reason (exit 2) when they cannot succeed; `--wait` follows them to their outcome.
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from shared import messages as m
from shared.cli.errors import UsageError
from shared.cli.follow import BUS_COMMANDS, follow, precheck


def add_parser(sub: Any) -> None:
    def command(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=run, command_name=name)
        p.add_argument("--by", dest="requested_by", default=None, help="who asks (recorded in the audit trail)")
        if name in BUS_COMMANDS:
            p.add_argument("--wait", action="store_true",
                           help="follow the command to its outcome and print it (a refusal with its reason)")
            p.add_argument("--timeout", type=float, default=120.0,
                           help="seconds --wait waits for an outcome (default 120)")
        return p

    p = command("train", "start a run from a dataset blob already in the datasets container")
    p.add_argument("blob", help="datasets/<name>.jsonl or datasets/<folder>/run.json (the container prefix is optional)")
    p.add_argument("--settings", default="{}", help="run settings as JSON, over run.json (as in run.json)")
    for name, what in (("cancel", "cancel a run that waits to train or trains (its hub job too)"),
                       ("pause", "pause a training run's hub job"), ("resume", "resume a paused hub job")):
        command(name, what).add_argument("run_id", help="the run (ftops status lists them)")
    command("retire", "retire a run: remove its deployments").add_argument("run_id", help="the run")
    p = command("retrain", "train again on the same data with new settings")
    p.add_argument("run_id", help="the run (ftops status lists them)")
    p.add_argument("--settings", default="{}", help="settings to change, as JSON (as in run.json)")
    for name in ("approve", "reject"):
        p = command(name, f"{name} promotion of a run into an environment")
        p.add_argument("run_id", help="the run awaiting approval")
        p.add_argument("--env", required=True, help="the environment (e.g. prod)")
        p.add_argument("--approver", required=True, help="who approves (a listed approver of the environment)")
        p.add_argument("--ticket", required=name == "approve", help="change ticket")
        if name == "reject":
            p.add_argument("--reason", required=True, help="why (recorded with the run)")
    p = command("rollback", "return an environment to the previous approved model")
    p.add_argument("--env", required=True, help="the environment to roll back")
    p.add_argument("--run-id", default=None, help="the run whose deployment to roll back (default: the newest)")
    p.add_argument("--reason", default=None, help="why (recorded in the audit trail)")


def _settings_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--settings is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise UsageError("--settings must be a JSON object, as in run.json")
    return value


def build(args: argparse.Namespace) -> m.CloudEvent:
    name, by = args.command_name, args.requested_by
    data: Any
    if name == "train":
        data = m.TrainCommand(blob=args.blob, settings=_settings_json(args.settings), requested_by=by)
    elif name == "retrain":
        data = m.RetrainCommand(run_id=args.run_id, settings=_settings_json(args.settings), requested_by=by)
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


def run(args: argparse.Namespace, *, deps: Any = None, sleep: Callable[[float], None] = time.sleep) -> int:
    event = build(args)   # argument mistakes first: finding them needs no settings
    if deps is None:
        from shared.bootstrap import get_deps
        deps = get_deps()
    bus = args.command_name in BUS_COMMANDS
    expect = precheck(deps, event) if bus else None
    deps.publisher.send(deps.settings.commands_queue, event)
    print(f"sent {event.type} ({event.id})")
    if expect is None or not args.wait:
        return 0
    code, what = follow(deps, event, expect, timeout=args.timeout, sleep=sleep)
    print(what)
    return code
