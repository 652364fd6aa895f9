"""Every row of the command table is a whole command: the commands queue parses its message, the router
reaches its handler (or refuses an operator action with the reason), the `ftops` CLI offers it with help
and builds exactly its message or API call, the operator API serves its route, and docs/CONTRACTS.md lists
it. The tests run per row, so a new row is held to all of this without a new test."""
from __future__ import annotations

import argparse
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fakes import make_deps

from ftops_cli import operate
from local.devhost.triggers import route_pattern
from shared.azure.access import AccessDenied
from shared.operator import api as operator_api
from shared.run import command_table
from shared.run.command_table import BY_NAME, COMMAND_ROUTES, COMMANDS, Command, for_route, markdown
from shared.run.messages import envelope, parse_message, payload_type
from shared.stages.commands import OperatorActionNotAccepted, handle_command

ROOT = Path(__file__).resolve().parents[2]
ROWS = [pytest.param(row, id=row.name) for row in COMMANDS]
BUS = [pytest.param(row, id=row.name) for row in COMMANDS if row.via == "bus"]
API = [pytest.param(row, id=row.name) for row in COMMANDS if row.via == "api"]
CLI_BUS = [pytest.param(row, id=row.name) for row in COMMANDS if not row.cli_api]
CLI_API = [pytest.param(row, id=row.name) for row in COMMANDS if row.cli_api]


def cli() -> dict[str, argparse.ArgumentParser]:
    parser = argparse.ArgumentParser(prog="ftops")
    sub = parser.add_subparsers(dest="command")
    operate.add_parser(sub)
    return dict(sub.choices)


def sample_argv(row: Command) -> tuple[list[str], dict[str, Any]]:
    """Command-line words for every argument of the row, and the payload fields they should give."""
    argv, expected = [row.name], {}
    for n, arg in enumerate(row.args):
        value: Any = {"n_epochs": n + 2} if arg.json_object else f"value-{n}"
        text = json.dumps(value) if arg.json_object else value
        argv += [text] if arg.positional else [arg.flag, text]
        expected[arg.payload_field] = value
    return argv, expected


@pytest.mark.parametrize("row", ROWS)
def test_the_queue_parses_the_rows_message(row: Command) -> None:
    assert payload_type(row.type) is row.payload
    fields = set(row.payload.model_fields)
    assert {arg.payload_field for arg in row.args} <= fields, "every CLI argument fills a field of the message"


@pytest.mark.parametrize("row", ROWS)
def test_the_cli_offers_the_row_with_help(row: Command) -> None:
    parser = cli()[row.name]
    assert parser.description and parser.description.startswith(row.help)
    helped = {a.dest: a.help for a in parser._actions if not isinstance(a, argparse._HelpAction)}
    assert all(helped.get(arg.dest) == arg.help for arg in row.args)


@pytest.mark.parametrize("row", CLI_BUS)
def test_the_cli_sends_exactly_the_rows_message(row: Command) -> None:
    argv, expected = sample_argv(row)
    args = argparse.ArgumentParser(prog="ftops")
    sub = args.add_subparsers(dest="command")
    operate.add_parser(sub)
    parsed = args.parse_args([*argv, "--by", "ci@contoso"])
    event, data = parse_message(operate.build(parsed).to_json())
    assert event.type == row.type and type(data) is row.payload
    assert data.model_dump(include=set(expected)) == expected and data.requested_by == "ci@contoso"


@pytest.mark.parametrize("row", BUS)
def test_the_router_reaches_the_rows_handler(row: Command) -> None:
    handler = command_table.load(row.handler)
    params = list(inspect.signature(handler).parameters.values())
    assert [p.name for p in params] == ["command", "deps", "message_id"]
    assert params[0].annotation == row.payload.__name__, "the handler takes the row's message"


@pytest.mark.parametrize("row", API)
def test_an_operator_action_on_the_queue_is_refused_and_recorded(row: Command) -> None:
    command = row.payload(**{name: f"{name}-1" for name, f in row.payload.model_fields.items() if f.is_required()})
    deps = make_deps()
    with pytest.raises(OperatorActionNotAccepted, match=f"`ftops {row.name}`"):
        handle_command(envelope(command, type_=row.type), command, deps)
    [audit] = deps.registry.audits
    assert audit["action"] == f"{row.name}.refused" and audit["actor"].startswith("unverified: ")
    assert [e.data["command"] for _, e in deps.publisher.sent] == [row.name]


def app_routes() -> list[tuple[str, tuple[str, ...]]]:
    """(route, methods) of every HTTP trigger the app registers, as the Functions host indexes them."""
    from function_app import app
    app.functions_bindings = None   # the worker indexes once per process; other tests may have indexed already
    triggers = [json.loads(fn.get_function_json())["bindings"][0] for fn in app.get_functions()]
    return [(t["route"], tuple(m.upper() for m in t["methods"])) for t in triggers if t["type"] == "httpTrigger"]


def concrete(route: str, **values: str) -> str:
    return re.sub(r"{(\w+)}", lambda m: values.get(m.group(1), f"{m.group(1)}-1"), route)


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in COMMANDS if r.route])
def test_the_operator_api_serves_the_rows_route(row: Command) -> None:
    path = concrete(row.route)
    served = [(route, m) for route, methods in app_routes() if "POST" in methods
              if (m := route_pattern(route).match(path))]
    [(route, match)] = served   # one trigger takes the POST, whatever order the host tries routes in
    assert route in COMMAND_ROUTES and for_route(route, match.groupdict().get("action", "")) is row
    assert operator_api.ACTIONS[row.name] is command_table.load(row.api_handler_name)
    if row.via == "api":
        assert row.api_handler_name == row.handler


class _Refuses:
    """A token verifier that finds the token invalid (it claims an oid, unverified)."""

    def __init__(self) -> None:
        self.calls = 0

    def verify(self, authorization: str | None) -> Any:
        self.calls += 1
        raise AccessDenied(401, "signature does not verify", claims={"oid": "00000000-0000-0000-0000-00000000000a"})


@pytest.mark.parametrize("row", [pytest.param(r, id=r.name) for r in COMMANDS if r.route])
def test_a_post_to_the_rows_route_runs_the_rows_action_with_the_routes_own_parameters(row: Command) -> None:
    from datetime import UTC, datetime, timedelta

    from fakes import FixedClock

    from shared.operator.unverified import UnverifiedTraffic
    shape = next(s for s in COMMAND_ROUTES if route_pattern(s).match(concrete(row.route)))
    params = {**route_pattern(row.route).match(concrete(row.route)).groupdict()}
    if "{action}" in shape:
        params["action"] = row.name.upper()
    clock = FixedClock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    deps, traffic = make_deps(clock=clock), UnverifiedTraffic(operator_api.OPERATOR_PARTITION)
    answer = operator_api.handle_command(shape, authorization="Bearer forged", params=params, body=b"{}",
                                         deps=deps, verifier=_Refuses(), unverified=traffic)
    assert answer.status == 401 and deps.registry.audits == []   # an unverifiable caller writes nothing itself
    clock.at += timedelta(minutes=6)
    traffic.tick(deps)
    # counted by the row's name, in the one record of its window
    [audit] = deps.registry.audits
    assert audit["action"] == "api.unverified_requests" and audit["run_id"] == operator_api.OPERATOR_PARTITION
    assert [b["action"] for b in audit["detail"]["by"]] == [row.name]


@pytest.mark.parametrize("shape", [s for s in COMMAND_ROUTES if "{action}" in s])
@pytest.mark.parametrize("action", ["launch", "get_run", "list_runs"])
def test_an_action_no_row_offers_is_404_in_the_apis_error_shape_before_any_token_check(shape: str, action: str
                                                                                        ) -> None:
    deps, verifier = make_deps(), _Refuses()
    params = {**route_pattern(shape).match(concrete(shape, action=action)).groupdict()}
    answer = operator_api.handle_command(shape, authorization="Bearer x", params=params, body=b"{}", deps=deps,
                                         verifier=verifier)
    assert answer.status == 404 and answer.body["error"]["status"] == 404
    offered = sorted(r.route.rsplit("/", 1)[1] for r in COMMANDS if r.route and route_pattern(shape).match(r.route))
    assert offered and all(name in answer.body["error"]["message"] for name in offered)
    assert verifier.calls == 0 and deps.registry.audits == [] and deps.publisher.sent == []


def test_every_rows_route_has_a_shape_that_ends_in_its_name() -> None:
    for row in COMMANDS:
        if row.route and row.route not in COMMAND_ROUTES:   # `runs` is a shape of its own (POST runs: train)
            assert row.route.rsplit("/", 1)[1] == row.name
            assert any(route_pattern(s).match(row.route) for s in COMMAND_ROUTES), f"{row.name}: add its shape"


class _Api:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        return {"candidate": {"model": "m", "dataset_hash": "d", "evaluation_report_hash": "e"}}

    def approve(self, run_id: str, environment: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("POST", f"runs/{run_id}/approve", {"environment": environment, **kw}))
        return {"approved": {"model": "m", "run_id": run_id, "environment": environment, "approver_name": "n",
                             "approver_oid": "o", "ticket": kw["ticket"]}}


@pytest.mark.parametrize("row", API)
def test_the_cli_calls_the_rows_route_with_the_rest_as_body(row: Command, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = sample_argv(row)
    parser = argparse.ArgumentParser(prog="ftops")
    operate.add_parser(parser.add_subparsers(dest="command"))
    api = _Api()
    assert operate.run_api(parser.parse_args(argv), api) == 0
    method, path, body = api.calls[-1]
    assert method == "POST" and path == row.route.format(**expected)
    assert body == {k: v for k, v in expected.items() if f"{{{k}}}" not in row.route}
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("row", ROWS)
def test_docs_contracts_lists_the_row(row: Command) -> None:
    contracts = (ROOT / "docs" / "CONTRACTS.md").read_text()
    line = next(line for line in markdown().splitlines() if line.startswith(f"| `{row.name}` |"))
    assert line in contracts, f"docs/CONTRACTS.md's command table is stale; it should read:\n{markdown()}"


def test_names_and_types_are_unique() -> None:
    assert len(BY_NAME) == len(COMMANDS) == len({c.type for c in COMMANDS})
