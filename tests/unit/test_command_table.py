"""Every row of the command table is a whole command: the commands queue parses its message, the router
reaches its handler (or refuses an operator action with the reason), the `ftops` CLI offers it with help
and builds exactly its message or API call, the operator API serves its route, and docs/CONTRACTS.md lists
it. The tests run per row, so a new row is held to all of this without a new test."""
from __future__ import annotations

import argparse
import dataclasses
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
# the rows the console offers a button for: those with a word for its banner (`claim` is the owner's, in the CLI)
CONSOLE = [pytest.param(row, id=row.name) for row in COMMANDS if row.via == "api" and row.done]
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


CANDIDATE = {"model": "m", "dataset_hash": "d", "evaluation_report_hash": "e"}


class _Api:
    """The operator API as the CLI's client sees it: a run's candidate, and an answer like the API's."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def run(self, run_id: str) -> dict[str, Any]:
        return {"candidate": CANDIDATE}

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        return {"approved": {**body, "run_id": path.split("/")[1], "approver_name": "n", "approver_oid": "o"}}


@pytest.mark.parametrize("row", API)
def test_the_cli_calls_the_rows_route_with_the_rest_as_body(row: Command, capsys: pytest.CaptureFixture[str]) -> None:
    argv, expected = sample_argv(row)
    parser = argparse.ArgumentParser(prog="ftops")
    operate.add_parser(parser.add_subparsers(dest="command"))
    api = _Api()
    assert operate.run_api(parser.parse_args(argv), api) == 0
    [(method, path, body)] = api.calls
    assert method == "POST" and path == row.route.format(**expected)
    rest = {k: v for k, v in expected.items() if f"{{{k}}}" not in row.route}
    assert body == rest | {k: CANDIDATE[k] for k in row.evidence}, "what it decides on is the run's candidate"
    # the row's sentence, naming what the route names (the run, the environment)
    said = capsys.readouterr().out.strip()
    assert said == row.sentence({**api.call("POST", path, body), **expected}).strip()
    assert all(expected[k] in said for k in row.path_fields) and row.said


@pytest.mark.parametrize("row", CONSOLE)
def test_the_consoles_form_posts_the_rows_route_and_its_body(row: Command) -> None:
    """The console's forms for the row (on the run's page, or on the page that asks to confirm) post to the
    row's route and only fields of the row's body (all the required ones, the evidence); the console sends
    the API exactly the row's body and says the row's word."""
    from test_console import OPERATOR, csrf_for, request, run_detail, serve
    from test_console import TOKEN as SESSION
    token = f"form_token={csrf_for(SESSION)}"
    where = {"run_id": "r1", "environment": "test"}   # the run page's run, and the environment it serves
    params = {k: v for k, v in where.items() if k in row.path_fields}
    path = f"/{concrete(row.route, **params)}"
    answers = {"get_run": (200, run_detail(OPERATOR)), "list_deployments": (200, {"deployments": []}),
               row.name: (200, {})}
    pages = [serve("run", request("/runs/r1", params={"run_id": "r1"}), **answers).body.decode(),
             serve("act", request(path, method="POST", params={**params, "action": row.name},
                                  body=f"{token}&run_id=r1".encode()), **answers).body.decode()]
    forms = [set(re.findall(r'name="([^"]+)"', inner)) - {"form_token", "confirm"}
             for page in pages for action, inner in re.findall(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page,
                                                                re.DOTALL)
             if route_pattern(row.route).match(action.removeprefix("/api/console/"))]
    assert forms and all(fields <= set(row.body) | set(row.path_fields) for fields in forms)
    assert {f for f in row.body if row.required(f)} | set(row.evidence) <= set().union(*forms)
    fields = [f for f in row.body if f not in params]
    form = "&".join([token, "confirm=yes", *(f"{f}=v-{f}" for f in fields)])   # retire, rollback: confirmed
    answer = serve("act", request(path, method="POST", params={**params, "action": row.name}, body=form.encode()),
                   **answers)
    [(action, sent_params, body)] = _console_calls()
    assert (action, sent_params) == (row.name, params) and list(body) == list(row.body)
    assert all(body[f] == f"v-{f}" for f in fields) and answer.status == 303
    assert answer.headers["Location"].endswith(f"?done={row.done.replace(' ', '-')}")   # a banner id (DONE)


def _console_calls() -> list[tuple[str, dict[str, str], Any]]:
    from test_console import FakeApi
    return FakeApi.calls


@pytest.mark.parametrize("row", BUS)
def test_wait_ends_where_the_row_says_with_its_sentence(row: Command) -> None:
    """`ftops NAME --wait` reads the row: nothing yet while the run has not moved; once what the row's `until`
    names is there (a state, or a record the handler audits with its detail), exit 0 and the row's sentence."""
    from ftops_cli.follow import Expectation, outcome
    from shared.run import states
    from shared.store.registry import RunRecord
    deps = make_deps()
    deps.registry.add_run(RunRecord(run_id="r1", source="datasets/r1.jsonl", state=states.RECEIVED))

    def move(state: str) -> None:
        deps.registry.save_run(dataclasses.replace(deps.registry.require_run("r1"), state=state))
    event = envelope(row.payload(**{n: "r1" for n, f in row.payload.model_fields.items() if f.is_required()}),
                     type_=row.type)
    expect = Expectation(row.name, "r1", seen_audit=len(deps.registry.audit_trail("r1")))
    assert outcome(deps, event, expect) is None
    until = row.until
    assert until is not None and row.said
    if until.left:
        move(states.UPLOADING)
    elif until.state:
        move(until.state)
    else:
        deps.registry.audit("r1", until.audit or "run.transition", actor="test", detail={"job_status": "running"},
                            **({"from_state": states.RECEIVED, "to_state": until.to_state} if until.to_state else {}))
    code, said = outcome(deps, event, expect) or (None, "")
    assert code == 0 and said == row.sentence({"job_status": "running", "run_id": "r1",
                                               "state": deps.registry.require_run("r1").state})
    assert "r1" in said and "{" not in said


@pytest.mark.parametrize("row", ROWS)
def test_docs_contracts_lists_the_row(row: Command) -> None:
    contracts = (ROOT / "docs" / "CONTRACTS.md").read_text()
    line = next(line for line in markdown().splitlines() if line.startswith(f"| `{row.name}` |"))
    assert line in contracts, f"docs/CONTRACTS.md's command table is stale; it should read:\n{markdown()}"


def test_names_and_types_are_unique() -> None:
    assert len(BY_NAME) == len(COMMANDS) == len({c.type for c in COMMANDS})
