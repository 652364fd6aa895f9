"""Operator commands. The bus commands (train, cancel, pause, resume, retrain) send one CloudEvent to the
commands queue, exactly as another system would: checked first with the handlers' own rules and refused
with the reason (exit 2) when they cannot succeed; `--wait` follows them to their outcome. `approve`,
`reject`, `rollback`, `retire` call the operator API as the signed-in user (ftops_cli.operator_client):
who acts comes from the token, never from an argument.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from ftops_cli.errors import UsageError
from ftops_cli.follow import BUS_COMMANDS, follow, precheck
from shared import messages as m


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
    p = command("retrain", "train again on the same data with new settings")
    p.add_argument("run_id", help="the run (ftops status lists them)")
    p.add_argument("--settings", default="{}", help="settings to change, as JSON (as in run.json)")

    def api(name: str, help_: str) -> argparse.ArgumentParser:
        help_ = f"{help_} (operator API, as the signed-in user)"
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=run_api, command_name=name)
        p.add_argument("--json", action="store_true", help="print the API's answer as JSON")
        return p

    p = api("approve", "approve the model a run holds now into an environment")
    p.add_argument("run_id", help="the run awaiting approval")
    p.add_argument("--env", required=True, help="the environment that waits for approval (e.g. prod)")
    p.add_argument("--ticket", required=True, help="the change ticket this approval belongs to")
    p.add_argument("--comment", default=None, help="a note kept with the approval")
    p = api("reject", "refuse a run's promotion into an environment")
    p.add_argument("run_id", help="the run awaiting approval")
    p.add_argument("--env", required=True, help="the environment (e.g. prod)")
    p.add_argument("--reason", required=True, help="why (recorded with the run)")
    p.add_argument("--ticket", default=None, help="change ticket")
    p = api("rollback", "return an environment to the previous approved model")
    p.add_argument("--env", required=True, help="the environment to roll back")
    p.add_argument("--run-id", default=None, help="the run whose deployment to roll back")
    p.add_argument("--deployment", default=None, help="the deployment name to roll back")
    p.add_argument("--reason", default=None, help="why (recorded in the audit trail)")
    p = api("retire", "retire a run: remove its deployments everywhere")
    p.add_argument("run_id", help="the run")
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
    else:
        data = m.RunCommand(run_id=args.run_id, requested_by=by)
    return m.envelope(data, type_=f"ftops.command.{name}")


def run(args: argparse.Namespace, *, deps: Any = None, sleep: Callable[[float], None] = time.sleep) -> int:
    event = build(args)   # argument mistakes first: finding them needs no settings
    if deps is None:
        from ftops_cli.target import deps as target_deps
        deps = target_deps(args)
    bus = args.command_name in BUS_COMMANDS
    expect = precheck(deps, event) if bus else None
    deps.publisher.send(deps.settings.commands_queue, event)
    print(f"sent {event.type} ({event.id})")
    if expect is None or not args.wait:
        return 0
    code, what = follow(deps, event, expect, timeout=args.timeout, sleep=sleep)
    print(what)
    return code


def run_api(args: argparse.Namespace, client: Any = None) -> int:
    """Exit 0 done, 1 refused (the API's reason on stderr), 2 not configured or unreachable."""
    from ftops_cli.operator_client import ApiError, client_from_env
    from ftops_cli.target import NoTarget, apply
    from shared.config import ConfigError
    try:
        if client is None:
            apply(getattr(args, "env_file", None))
        client = client or client_from_env()
        answer = _call(client, args)
    except (ConfigError, NoTarget) as exc:
        print(f"ftops {args.command_name}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"ftops {args.command_name}: refused ({exc.status}): {exc.message}", file=sys.stderr)
        return 2 if exc.status in (0, 503) else 1
    except Exception as exc:  # noqa: BLE001 (sign-in failures: one clear line, no traceback)
        print(f"ftops {args.command_name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, default=str) if args.json else _describe(args, answer))
    return 0


def _call(client: Any, args: argparse.Namespace) -> dict[str, Any]:
    name = args.command_name
    if name == "approve":
        return client.approve(args.run_id, args.env, ticket=args.ticket, comment=args.comment)
    if name == "reject":
        return client.call("POST", f"runs/{args.run_id}/reject",
                           {"environment": args.env, "reason": args.reason, "ticket": args.ticket})
    if name == "rollback":
        return client.call("POST", f"environments/{args.env}/rollback",
                           {"run_id": args.run_id, "deployment": args.deployment, "reason": args.reason})
    return client.call("POST", f"runs/{args.run_id}/retire", {"reason": args.reason})


def _describe(args: argparse.Namespace, answer: dict[str, Any]) -> str:
    if args.command_name == "approve":
        a = answer["approved"]
        return (f"approved {a['model']} of run {a['run_id']} into {a['environment']} as {a['approver_name']} "
                f"({a['approver_oid']}), ticket {a['ticket']}; {answer.get('next', '')}")
    if args.command_name == "reject":
        return f"rejected run {args.run_id} for {args.env}"
    if args.command_name == "rollback":
        return f"rolled back {args.env}" + (f" (run {args.run_id})" if args.run_id else "")
    return f"retired run {args.run_id}"
