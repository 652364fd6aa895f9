"""The commands ftops takes, in one table. A row says what the command's message is, through what it comes
(the commands queue, or the operator API for what needs a verified person), who may send it, the handler
that runs it, and how the `ftops` CLI asks for it.

Derived from the rows: the command types the commands queue parses (shared.run.messages), the commands
function's router and its refusal of operator actions (shared.stages.commands), the CLI's operator subcommands
(ftops_cli.operate), the operator API's commands (`shared.operator.api.ACTIONS`, served under the route
shapes COMMAND_ROUTES by functions/operator.py). tests/unit/test_command_table.py holds every row to the
operator API's routes and to docs/CONTRACTS.md. A new command is a row, its handler, and its line in the docs.
"""
from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

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
class Command:
    name: str
    help: str
    args: tuple[Arg, ...]
    via: Literal["bus", "api"]   # the commands queue takes it, or only the operator API does
    handler: str            # "module:function". bus: (command, deps, message_id); api: the operator API action
    who: str                # who may: the right that is checked
    route: str | None = None     # POST /api/<route> when the operator API offers it (a COMMAND_ROUTES shape)
    api_handler: str | None = None   # the operator API's action for `route` when `handler` is the queue's
    cli_via_api: bool = False    # a bus row the `ftops` CLI sends through the operator API (a verified starter)

    @property
    def cli_api(self) -> bool:
        """The `ftops` subcommand calls the operator API as the signed-in user (else it sends the message)."""
        return self.via == "api" or self.cli_via_api

    @property
    def type(self) -> str:
        return TYPE_PREFIX + self.name

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
            route="runs", api_handler="shared.operator.api:start_run", cli_via_api=True),
    Command("cancel", "cancel a run that waits to train or trains (its hub job too)", (RUN,),
            "bus", "shared.stages.commands:cancel", QUEUE_SENDER),
    Command("pause", "pause a training run's hub job", (RUN,), "bus", "shared.stages.commands:pause",
            QUEUE_SENDER),
    Command("resume", "resume a paused hub job", (RUN,), "bus", "shared.stages.commands:resume", QUEUE_SENDER),
    Command("retrain", "train again on the same data with new settings",
            (RUN, Arg("--settings", "settings to change, as JSON (as in run.json)", json_object=True, default="{}")),
            "bus", "shared.stages.commands:retrain", f"{QUEUE_SENDER}; on the API, app role `Operator`",
            route="runs/{run_id}/retrain", api_handler="shared.operator.api:retrain"),
    Command("approve", "approve the model a run holds now into an environment",
            (Arg("run_id", "the run awaiting approval"),
             Arg("--env", "the environment that waits for approval (e.g. prod)", field="environment", required=True),
             Arg("--ticket", "the change ticket this approval belongs to", required=True),
             Arg("--comment", "a note kept with the approval")),
            "api", "shared.operator.api:approve", "app role `Approver.<env>`, not the run's owner",
            route="runs/{run_id}/approve"),
    Command("reject", "refuse a run's promotion into an environment",
            (Arg("run_id", "the run awaiting approval"),
             Arg("--env", "the environment (e.g. prod)", field="environment", required=True),
             Arg("--reason", "why (recorded with the run)", required=True),
             Arg("--ticket", "change ticket")),
            "api", "shared.operator.api:reject", "app role `Approver.<env>`", route="runs/{run_id}/reject"),
    Command("rollback", "return an environment to the previous approved model",
            (Arg("--env", "the environment to roll back", field="environment", required=True),
             Arg("--run-id", "the run whose deployment to roll back"),
             Arg("--deployment", "the deployment name to roll back"), REASON),
            "api", "shared.operator.api:rollback_environment", "app role `Operator`",
            route="environments/{environment}/rollback"),
    Command("retire", "retire a run: remove its deployments everywhere",
            (Arg("run_id", "the run"), REASON), "api", "shared.operator.api:retire_run", "app role `Operator`",
            route="runs/{run_id}/retire"),
    Command("claim", "confirm that you are the owner a run's run.json names (needed before a gated environment)",
            (Arg("run_id", "the run"),), "api", "shared.operator.api:claim", "the run's named owner (token oid)",
            route="runs/{run_id}/claim"),
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
