"""`ftops status [RUN_ID] [--json]`: the registry's view of runs, with the estimated hosting cost."""
from __future__ import annotations

import argparse
import json
from typing import Any

from shared.cli.views import run_view
from shared.costs import daily_hosting_cost, prices_from_settings


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="runs and deployments as the registry sees them")
    p.add_argument("run_id", nargs="?", help="one run in detail (with its audit trail)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=run)


def collect(deps: Any, run_id: str | None = None) -> dict[str, Any]:
    registry = deps.registry
    runs = [registry.require_run(run_id)] if run_id else registry.list_runs()
    deployments = registry.list_deployments(run_id=run_id)
    view: dict[str, Any] = {"runs": [run_view(r, deployments) for r in runs],
                            "hosting_cost": daily_hosting_cost(deployments, prices_from_settings(deps.settings))}
    if run_id:
        view["runs"][0]["audit"] = registry.audit_trail(run_id)
    return view


def run(args: argparse.Namespace) -> int:
    from shared.bootstrap import get_deps
    view = collect(get_deps(), args.run_id)
    if args.json:
        print(json.dumps(view, indent=2, default=str))
        return 0
    print(render_table(view))
    return 0


def render_table(view: dict[str, Any]) -> str:
    lines = [f"{'RUN':<28} {'STATE':<22} {'JOB':<22} {'EVAL':<6} DEPLOYMENTS"]
    for r in view["runs"]:
        ev = r.get("evaluation") or {}
        passed = "-" if not ev else ("pass" if ev.get("passed") else "fail")
        deps = ", ".join(f"{d['environment']}/{d['region']}" for d in r["deployments"]) or "-"
        lines.append(f"{r['run_id']:<28} {r['state']:<22} {(r['job_id'] or '-'):<22} {passed:<6} {deps}")
        for entry in r.get("audit", []):
            lines.append(f"    {entry['at']}  {entry['action']:<28} {entry['actor']}")
    cost = view["hosting_cost"]
    if cost["deployments"]:
        lines.append("")
        lines.append(f"{'HOSTING (estimate)':<28} {'DEPLOYMENT':<34} {'SKU':<15} {'USD/DAY':>8}")
        for row in cost["deployments"]:
            lines.append(f"{row['environment'] + '/' + row['region']:<28} {row['deployment']:<34} {row['sku']:<15} "
                         f"{row['per_day']:>8.2f}")
        lines.append(f"{'total':<79} {cost['total_per_day']:>8.2f}")
    return "\n".join(lines)
