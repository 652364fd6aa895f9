"""Operator commands, one subcommand per row of shared.run.command_table. The bus commands (cancel, pause,
resume, retrain) send one CloudEvent to the commands queue, exactly as another system would: checked first
with the handlers' own rules and refused with the reason (exit 2) when they cannot succeed; `--wait` follows
them to their outcome. `train` (POST runs: the signed-in user is the run's verified starter), `claim`,
`approve`, `reject`, `rollback`, `retire` call the operator API as the signed-in user
(ftops_cli.operator_client): who acts comes from the token, never from an argument.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ftops_cli.errors import UsageError
from ftops_cli.follow import follow, precheck
from shared.run.command_table import BY_NAME, COMMANDS, Command
from shared.run.messages import CloudEvent, envelope

if TYPE_CHECKING:
    from ftops_cli.operator_client import OperatorClient
    from shared.app.bootstrap import Deps


def add_parser(sub: Any) -> None:
    """One subcommand per row of shared.run.command_table, its arguments as the row declares them."""
    for row in COMMANDS:
        help_ = f"{row.help} (operator API, as the signed-in user)" if row.cli_api else row.help
        p = sub.add_parser(row.name, help=help_, description=help_)
        p.set_defaults(func=run_api if row.cli_api else run, command_name=row.name)
        if not row.cli_api:
            p.add_argument("--by", dest="requested_by", default=None, help="who asks (recorded in the audit trail)")
            p.add_argument("--wait", action="store_true",
                           help="follow the command to its outcome and print it (a refusal with its reason)")
            p.add_argument("--timeout", type=float, default=120.0,
                           help="seconds --wait waits for an outcome (default 120)")
        else:
            p.add_argument("--json", action="store_true", help="print the API's answer as JSON")
        for arg in row.args:
            if arg.positional:
                p.add_argument(arg.flag, help=arg.help)
            else:
                p.add_argument(arg.flag, required=arg.required, default=arg.default, help=arg.help)


def _values(row: Command, args: argparse.Namespace) -> dict[str, Any]:
    """The payload's fields from the command line."""
    return {arg.payload_field: _settings_json(getattr(args, arg.dest)) if arg.json_object else getattr(args, arg.dest)
            for arg in row.args}


def _settings_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--settings is not valid JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(value, dict):
        raise UsageError("--settings must be a JSON object, as in run.json")
    return value


def build(args: argparse.Namespace) -> CloudEvent:
    row = BY_NAME[args.command_name]
    data = row.payload.model_validate({**_values(row, args), "requested_by": args.requested_by})
    return envelope(data, type_=row.type)


def run(args: argparse.Namespace, *, deps: Deps | None = None, sleep: Callable[[float], None] = time.sleep) -> int:
    event = build(args)   # argument mistakes first: finding them needs no settings
    where = ""
    if deps is None:
        from ftops_cli.target import apply, described
        where = described(apply(getattr(args, "env_file", None)))
        from shared.app.bootstrap import get_deps
        deps = get_deps()
    expect = precheck(deps, event)
    deps.publisher.send(deps.settings.commands_queue, event)
    print(f"sent {event.type} ({event.id})" + (f" to {where}" if where else ""))
    if not args.wait:
        return 0
    code, what = follow(deps, event, expect, timeout=args.timeout, sleep=sleep)
    print(what)
    return code


def run_api(args: argparse.Namespace, client: OperatorClient | None = None) -> int:
    """Exit 0 done, 1 refused (the API's reason on stderr), 2 not configured or unreachable."""
    from ftops_cli.operator_client import ApiError, client_from_env
    from ftops_cli.target import NoTarget, apply, described
    from shared.run.config import ConfigError
    _values(BY_NAME[args.command_name], args)   # argument mistakes first (--settings): they need no sign-in
    try:
        where = described(apply(getattr(args, "env_file", None))) if client is None else None
        client = client or client_from_env()
        answer = _call(client, args)
    except (ConfigError, NoTarget) as exc:
        print(f"ftops {args.command_name}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        at = getattr(client, "api_url", None)
        print(f"ftops {args.command_name}: refused ({exc.status})" + (f" by the operator API at {at}" if at else "")
              + f": {exc.message}", file=sys.stderr)
        return 2 if exc.status in (0, 503) else 1
    except Exception as exc:  # noqa: BLE001 (sign-in failures: one clear line, no traceback)
        print(f"ftops {args.command_name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer, default=str) if args.json else _describe(args, answer))
    if where:   # which ftops this was: stderr, so that --json stays one object on stdout
        print(f"ftops {args.command_name}: acted on {where}", file=sys.stderr)
    return 1 if args.command_name == "train" and answer.get("state") == "rejected" else 0


def _call(client: OperatorClient, args: argparse.Namespace) -> dict[str, Any]:
    """POST the row's route; the fields its path does not name are the body (who acts is the token's)."""
    row = BY_NAME[args.command_name]
    if row.name == "approve":   # names what it approves: the candidate the run holds now (OperatorClient.approve)
        return client.approve(args.run_id, args.env, ticket=args.ticket, comment=args.comment)
    assert row.route is not None, f"{row.name}: an operator API command needs its route"
    values = _values(row, args)
    in_path = set(re.findall(r"{(\w+)}", row.route))
    path = row.route.format(**{k: urllib.parse.quote(str(values[k]), safe="") for k in in_path})
    return client.call("POST", path, {k: v for k, v in values.items() if k not in in_path})


def _describe(args: argparse.Namespace, answer: dict[str, Any]) -> str:
    if args.command_name == "approve":
        a = answer["approved"]
        return (f"approved {a['model']} of run {a['run_id']} into {a['environment']} as {a['approver_name']} "
                f"({a['approver_oid']}), ticket {a['ticket']}; {answer.get('next', '')}")
    if args.command_name == "reject":
        return f"rejected run {args.run_id} for {args.env}"
    if args.command_name == "rollback":
        if answer.get("note"):   # a repeat, or a run that serves nothing there: the API changed nothing
            return f"rollback of {args.env}: {answer['note']}"
        return f"rolled back {args.env}" + (f" (run {args.run_id})" if args.run_id else "")
    if args.command_name == "retire":
        return f"retired run {args.run_id}"
    if args.command_name == "train" and answer.get("state") == "rejected":
        return (f"run {answer.get('run_id')} rejected: {(answer.get('error') or {}).get('message', '')}; "
                f"report: {(answer.get('reports') or {}).get('validation.html', '-')}")
    if args.command_name == "train":
        confirmed = "confirmed" if answer.get("owner_confirmed") else "not confirmed yet: they run `ftops claim`"
        return (f"started run {answer.get('run_id')} ({answer.get('state')}) as {answer['started_by'].get('name')} "
                f"({answer['started_by'].get('oid')}); owner {answer.get('owner')}, {confirmed}")
    if args.command_name == "claim":
        return f"confirmed: you own run {args.run_id}"
    return f"{args.command_name}: done"
