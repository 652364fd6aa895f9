"""`ftops history ENV [--json]`: which model each region of an environment served, from when, approved by
whom, and why it left (the slot history: shared.store.registry.SlotEntry), newest first."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ftops_cli.errors import UsageError
from ftops_cli.views import table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("history", help="an environment's deployment history: each model, since, approved by, why it left",
                       description=__doc__)
    p.add_argument("environment", help="the environment (e.g. prod)")
    p.add_argument("--deployment", help="only this deployment name")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, *, deps: Any = None) -> int:
    if deps is None:
        from ftops_cli.target import deps as target_deps
        deps = target_deps(args)
    topology = deps.require_topology()
    if topology.environment(args.environment) is None:
        raise UsageError(f"environment {args.environment!r} is not configured (SPOKES_CONFIG has "
                         f"{', '.join(topology.names)})")
    entries = deps.registry.slot_history(args.environment, deployment=args.deployment)
    if args.json:
        print(json.dumps({"environment": args.environment,
                          "history": [{k: v for k, v in vars(e).items() if k != "etag"} for e in entries]}, indent=2))
        return 0
    print(render(args.environment, entries))
    return 0


def render(environment: str, entries: list[Any]) -> str:
    if not entries:
        return f"{environment}: nothing deployed by ftops yet"
    rows = [[e.region, e.deployment, e.model, e.run_id, e.since[:19].replace("T", " "),
             "serving" if e.serving else e.until[:19].replace("T", " "), e.came, e.approved_by or "-",
             e.ticket or "-", _left(e)] for e in reversed(entries)]
    return "\n".join(table(["REGION", "DEPLOYMENT", "MODEL", "RUN", "SINCE", "UNTIL", "CAME", "APPROVED BY",
                            "TICKET", "WHY IT LEFT"], rows))


def _left(entry: Any) -> str:
    marks = [m for m, on in (("retired", entry.retired), ("unhealthy", not entry.healthy)) if on]
    text = entry.left or ("-" if entry.serving else "")
    return f"{text} [{', '.join(marks)}]" if marks else text
