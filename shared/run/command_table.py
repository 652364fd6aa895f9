"""The commands ftops takes, in one table. A row says what the command's message is, through what it comes
(the commands queue, or the operator API for what needs a verified person), who may send it, the handler
that runs it, how the `ftops` CLI asks for it, when it is done and what is said then.

Derived from the rows: the command types the commands queue parses (shared.run.messages), the commands
function's router and its refusal of operator actions (shared.stages.commands), the CLI's operator subcommands
with their `--wait` outcomes and success sentences (ftops_cli.operate, ftops_cli.follow), the operator API's
commands (`shared.operator.api.ACTIONS`, served under the route shapes COMMAND_ROUTES by functions/operator.py)
and their request bodies, the console's actions (shared.operator.console.run_page). tests/unit/test_command_table.py
holds every row to all of these and to docs/CONTRACTS.md. A new command is a row, its handler, and its line
in the docs.
"""
from __future__ import annotations

import builtins
import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shared.run import states
from shared.run.messages import COMMAND_PAYLOADS, COMMAND_PREFIX, _Data

TYPE_PREFIX = COMMAND_PREFIX
QUEUE_SENDER = "a sender on the commands queue (Azure RBAC)"


@dataclass(frozen=True)
class Arg:
    """One CLI argument: a positional (`run_id`) or an option (`--env`); it fills the payload's `field`."""
    flag: str
    help: str
    field: str = ""              # default: the flag's name (`--run-id` → run_id)
    required: bool = False
    json_object: bool = False    # given as JSON text, sent as an object (run settings)
    default: str | None = None

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("-")

    @property
    def dest(self) -> str:
        """The argparse name of the value."""
        return self.flag.lstrip("-").replace("-", "_")

    @property
    def payload_field(self) -> str:
        return self.field or self.dest


@dataclass(frozen=True)
class Until:
    """When a command sent on the queue has taken effect (what `ftops NAME --wait` waits for), read where its
    handler leaves it: the run's state, or a record in its audit trail written after the command was sent."""
    left: tuple[str, ...] = ()    # the run is in none of these states any more
    state: str | None = None      # the run is in this state
    audit: str | None = None      # a new audit record of this action (its detail fills the sentence)
    to_state: str | None = None   # a new audit record that moved the run into this state

    def reached(self, state: str, new_audit: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The detail of what shows it (an audit record's, or {}), or None while nothing does."""
        if (self.left and state not in self.left) or (self.state and state == self.state):
            return {}
        return next((entry.get("detail") or {} for entry in new_audit
                     if (self.audit and entry["action"] == self.audit)
                     or (self.to_state and entry.get("to_state") == self.to_state)), None)


_FIELD = re.compile(r"{(\w+)")


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    args: tuple[Arg, ...]
    via: Literal["bus", "api"]   # the commands queue takes it, or only the operator API does
    handler: str            # "module:function". bus: (command, deps, message_id); api: the operator API action
    who: str                # who may: the right that is checked
    done: str = ""          # api: what it did, in a word, the console's banner after it ("approved")
    said: str | tuple[str, ...] = ""   # the CLI's sentence once done; see `sentence`
    until: Until | None = None   # bus: when it has taken effect (`ftops NAME --wait`)
    route: str | None = None     # POST /api/<route> when the operator API offers it (a COMMAND_ROUTES shape)
    api_handler: str | None = None   # the operator API's action for `route` when `handler` is the queue's
    # API body fields that name exactly what is decided, never typed in: the run's candidate as the API shows
    # it (the CLI reads it first; the console's form carries it from the page the person looked at)
    evidence: tuple[str, ...] = ()
    cli_via_api: bool = False    # a bus row the `ftops` CLI sends through the operator API (a verified starter)

    @property
    def cli_api(self) -> bool:
        """The `ftops` subcommand calls the operator API as the signed-in user (else it sends the message)."""
        return self.via == "api" or self.cli_via_api

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.name

    @property
    def path_fields(self) -> tuple[str, ...]:
        """The fields its operator API route names (`runs/{run_id}/approve`: run_id)."""
        return tuple(re.findall(r"{(\w+)}", self.route or ""))

    @property
    def body(self) -> tuple[str, ...]:
        """The operator API's request body: the arguments its route does not name, then the evidence."""
        return tuple(a.payload_field for a in self.args if a.payload_field not in self.path_fields) + self.evidence

    def required(self, field: str) -> bool:
        return any(a.payload_field == field and (a.required or a.positional) for a in self.args)

    def sentence(self, values: Mapping[str, Any]) -> str:
        """`said` filled in: `{field}` from `values` (the command's fields, the API's answer, the run's
        `run_id` and `state`, the detail that showed the outcome). `said` in parts: a part after the first
        only when every field it names has a value."""
        first, *rest = (self.said,) if isinstance(self.said, str) else self.said
        text = first + "".join(p for p in rest if all(values.get(f) for f in _FIELD.findall(p)))
        return text.format_map(_Blank(values))

    @property
    def payload(self) -> builtins.type[_Data]:   # builtins: `type` here is the property above
        """Its message's data (shared.run.messages); the API parses its own request bodies."""
        return COMMAND_PAYLOADS[self.name]

    @property
    def api_handler_name(self) -> str:
        """What the operator API runs for `route`: `api_handler`, else an `api` row's own handler."""
        if self.route is None:
            raise ValueError(f"command {self.name!r} has no operator API route")
        return self.api_handler or self.handler


def load(handler: str) -> Callable[..., Any]:
    """The function a row names ("module:function"). Called by the rooms that dispatch (the commands router in
    shared.stages, the operator API), never at import: the table is vocabulary and runs nothing of theirs."""
    module, _, function = handler.partition(":")
    fn: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return fn


RUN = Arg("run_id", "the run (ftops status lists them)")
SETTINGS = Arg("--settings", "run settings as JSON, over run.json (as in run.json)", json_object=True, default="{}")
REASON = Arg("--reason", "why (recorded in the audit trail)")

COMMANDS: tuple[Command, ...] = (
    Command("train", "start a run from a dataset blob already in the datasets container",
            (Arg("blob", "datasets/<name>.jsonl or datasets/<folder>/run.json (the container prefix is optional)"),
             SETTINGS), "bus", "shared.stages.commands:train",
            f"{QUEUE_SENDER} (its owner stays a claim); on the API, app role `Operator` (the verified starter)",
            said=("started run {run_id} ({state})", " as {started_by[name]} ({started_by[oid]})", "; owner {owner}"),
            until=Until(left=(states.RECEIVED, states.VALIDATING)),
            route="runs", api_handler="shared.operator.api:start_run", cli_via_api=True),
    Command("cancel", "cancel a run that waits to train or trains (its hub job too)", (RUN,),
            "bus", "shared.stages.commands:cancel", QUEUE_SENDER,
            said="run {run_id} cancelled", until=Until(state=states.CANCELLED)),
    Command("pause", "pause a training run's hub job", (RUN,), "bus", "shared.stages.commands:pause",
            QUEUE_SENDER, said="run {run_id}: job paused (hub status {job_status})",
            until=Until(audit="job.pause")),
    Command("resume", "resume a paused hub job", (RUN,), "bus", "shared.stages.commands:resume", QUEUE_SENDER,
            said="run {run_id}: job resumed (hub status {job_status})",
            until=Until(audit="job.resume")),
    Command("retrain", "train again on the same data with new settings",
            (RUN, Arg("--settings", "settings to change, as JSON (as in run.json)", json_object=True, default="{}")),
            "bus", "shared.stages.commands:retrain", f"{QUEUE_SENDER}; on the API, app role `Operator`",
            said="run {run_id} is training again (state {state})",
            until=Until(to_state=states.UPLOADING), route="runs/{run_id}/retrain", api_handler="shared.operator.api:retrain"),
    Command("approve", "approve the model a run holds now into an environment",
            (Arg("run_id", "the run awaiting approval"),
             Arg("--env", "the environment that waits for approval (e.g. prod)", field="environment", required=True),
             Arg("--ticket", "the change ticket this approval belongs to", required=True),
             Arg("--comment", "a note kept with the approval")),
            "api", "shared.operator.api:approve", "app role `Approver.<env>`, not the run's owner",
            done="approved", said="approved {approved[model]} of run {approved[run_id]} into {approved[environment]} "
                                  "as {approved[approver_name]} ({approved[approver_oid]}), ticket {approved[ticket]}; {next}",
            route="runs/{run_id}/approve", evidence=("model", "dataset_hash", "evaluation_report_hash")),
    Command("reject", "refuse a run's promotion into an environment",
            (Arg("run_id", "the run awaiting approval"),
             Arg("--env", "the environment (e.g. prod)", field="environment", required=True),
             Arg("--reason", "why (recorded with the run)", required=True),
             Arg("--ticket", "change ticket")),
            "api", "shared.operator.api:reject", "app role `Approver.<env>`",
            done="rejected", said="rejected run {run_id} for {environment}", route="runs/{run_id}/reject"),
    Command("rollback", "return an environment to the previous approved model",
            (Arg("--env", "the environment to roll back", field="environment", required=True),
             Arg("--run-id", "the run whose deployment to roll back"),
             Arg("--deployment", "the deployment name to roll back"), REASON),
            "api", "shared.operator.api:rollback_environment", "app role `Operator`",
            done="rolled back", said=("rolled back {environment}", " (run {run_id})"),
            route="environments/{environment}/rollback"),
    Command("retire", "retire a run: remove its deployments everywhere",
            (Arg("run_id", "the run"), REASON), "api", "shared.operator.api:retire_run", "app role `Operator`",
            done="retired", said="retired run {run_id}", route="runs/{run_id}/retire"),
    Command("claim", "confirm that you are the owner a run's run.json names (needed before a gated environment)",
            (Arg("run_id", "the run"),), "api", "shared.operator.api:claim", "the run's named owner (token oid)",
            said="confirmed: you own run {run_id}", route="runs/{run_id}/claim"),
)
BY_NAME = {c.name: c for c in COMMANDS}
BY_TYPE = {c.type: c for c in COMMANDS}
BY_ROUTE = {c.route: c for c in COMMANDS if c.route}

# The shapes of the commands' routes: one HTTP trigger each (functions/operator.py), the command's name its
# last segment, except `runs` itself (POST runs starts a run: the train row). A row whose route has another
# shape needs a shape here (tests/unit/test_command_table.py).
COMMAND_ROUTES = ("runs/{run_id}/{action}", "environments/{environment}/{action}", "runs")


def for_route(shape: str, action: str) -> Command | None:
    """The row a POST to `shape` with this `{action}` names, or None. Case-insensitive, as literal route
    segments were matched (ASP.NET Core routing under the Functions host; the dev host)."""
    return BY_ROUTE.get(shape.replace("{action}", action.lower()))


def markdown() -> str:
    """The table as docs/CONTRACTS.md shows it."""
    rows = ["| command | message | through | who may | handler | operator API |", "|---|---|---|---|---|---|"]
    rows += [f"| `{c.name}` | `{c.type}` ({c.payload.__name__}) | {'commands queue' if c.via == 'bus' else 'operator API'}"
             f" | {c.who} | `{c.handler}` | {f'`POST /api/{c.route}`' if c.route else '—'} |" for c in COMMANDS]
    return "\n".join(rows)
