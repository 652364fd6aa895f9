"""`ftops status [RUN_ID] [--json]`: the registry's view of runs, why each stopped, and what it costs.

With RUN_ID: the run's error, its reports, the commands about it that were dead-lettered, and its audit
trail. Without: every run with the reason it stopped short, the hosting cost per deployment and totalled
by run state (what still bills for runs that will never reach prod shows up there).
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from datetime import date
from typing import TYPE_CHECKING, Any

from ftops_cli.views import run_view, table
from shared.run.costs import daily_hosting_cost, prices_from_settings
from shared.stages.drift import drifted
from shared.stages.drift import warning as drift_warning
from shared.stages.lifecycle import warning_line

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

WHY_WIDTH = 100   # the overview's reason column; `status RUN_ID` shows it whole
PAGE = 50         # runs per page: the registry is paged, never read whole


def add_parser(sub: Any) -> None:
    p = sub.add_parser("status", help="runs, why each stopped, deployments and their hosting cost",
                       description=__doc__)
    p.add_argument("run_id", nargs="?", help="one run in detail: error, reports, dead letters, audit trail")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--limit", type=int, default=PAGE, help=f"runs per page (default {PAGE}, by run id)")
    p.add_argument("--after-run", metavar="RUN_ID", help="the page after this run id (the last line says which)")
    p.add_argument("--stuck", action="store_true",
                   help="only the runs with no progress for longer than --after, or that cannot progress, and why")
    p.add_argument("--after", type=float, default=5.0, metavar="MINUTES",
                   help="with --stuck: how long without progress counts as stuck (default 5; a job training, a "
                        "quota wait or an approval: 60)")
    p.set_defaults(func=run)


def collect(deps: Deps, run_id: str | None = None, *, limit: int = PAGE, after: str | None = None) -> dict[str, Any]:
    registry = deps.registry
    next_page = None
    if run_id:
        runs = [registry.require_run(run_id)]
    else:
        runs, next_page = registry.page_runs(limit=limit, after=after)
    deployments = registry.list_deployments(run_id=run_id)
    container = deps.settings.reports_container
    views = [run_view(r, deployments, reports_container=container, topology=deps.topology) for r in runs]
    cost = daily_hosting_cost(deployments, prices_from_settings(deps.settings))
    state_of = {r.run_id: r.state for r in runs}
    for row in cost["deployments"]:   # the runs behind deployments, whichever page they are on (a few)
        if row["run_id"] not in state_of and (other := registry.get_run(row["run_id"])) is not None:
            state_of[other.run_id] = other.state
    if not run_id:   # deployments of runs not listed (none today) still count, under "unknown"
        by_state: dict[str, float] = defaultdict(float)
        for row in cost["deployments"]:
            by_state[state_of.get(row["run_id"], "unknown")] += row["per_day"]
        cost["per_day_by_run_state"] = {k: round(v, 2) for k, v in sorted(by_state.items())}
    view: dict[str, Any] = {"runs": views, "hosting_cost": cost, "dead_letters": _dead_letters(deps, run_id),
                            "next": next_page, "retirement_warnings": retirement_status(deps, deployments),
                            "drift_warnings": [drift_warning(c) for c in drifted(deps, deployments)]}
    if run_id:
        view["runs"][0]["audit"] = registry.audit_trail(run_id)
    return view


def retirement_status(deps: Deps, deployments: list[Any]) -> list[str]:
    """A line per active deployment whose model retires within RETIREMENT_WARNING_DAYS (the day the keep-alive last
    read from the Models API)."""
    today, window = deps.clock.now().date(), deps.settings.retirement_warning_days
    lines = []
    for d in deployments:
        if d.state == "active" and d.retires_on and (date.fromisoformat(d.retires_on) - today).days <= window:
            lines.append(warning_line(d.slot, d.model, date.fromisoformat(d.retires_on), today))
    return lines


def _dead_letters(deps: Deps, run_id: str | None) -> list[dict[str, Any]]:
    """Dead-lettered messages (every queue ftops reads), the run's only when one is named."""
    s = deps.settings
    letters = []
    for queue in (s.commands_queue, s.train_queue, s.evaluate_queue, s.deploy_queue, s.poll_queue):
        for letter in deps.publisher.peek_dead_letters(queue):
            if run_id is None or letter.get("subject") == run_id:
                letters.append({k: letter.get(k) for k in ("queue", "message_id", "subject", "reason", "description")})
    return letters


def run(args: argparse.Namespace) -> int:
    from ftops_cli.target import deps as target_deps
    deps = target_deps(args)
    if getattr(args, "stuck", False):
        from shared.stages import doctor
        found = doctor.stuck_runs(deps, bound_minutes=args.after, dead_letters=_dead_letters(deps, None))
        print(json.dumps(found, indent=2) if args.json else doctor.render(found, args.after))
        return 1 if found else 0
    view = collect(deps, args.run_id, limit=getattr(args, "limit", PAGE), after=getattr(args, "after_run", None))
    if args.json:
        print(json.dumps(view, indent=2, default=str))
    elif args.run_id:
        print(render_run(view))
    else:
        print(render_table(view))
    return 0


def render_run(view: dict[str, Any]) -> str:
    r = view["runs"][0]
    ev = r.get("evaluation") or {}
    lines = [f"run:       {r['run_id']}", f"state:     {r['state']}", f"source:    {r['source']}"]
    if r["job_id"]:
        lines.append(f"job:       {r['job_id']}" + (f" → {r['fine_tuned_model']}" if r["fine_tuned_model"] else ""))
    if ev:
        lines.append(f"evaluation: {'passed' if ev.get('passed') else 'failed'}")
    lines.append(f"why:       {r['reason'] or '-'}")
    lines.append("reports:   " + (", ".join(r["reports"]) or "-"))
    for d in r["deployments"]:
        retires = f", model retires {d['retires_on']}" if d.get("retires_on") else ""
        lines.append(f"deployed:  {d['environment']}/{d['region']} {d['account']}/{d['deployment']} ({d['state']}{retires})")
    lines += [f"warning:   {w}" for w in view.get("retirement_warnings", []) + view.get("drift_warnings", [])]
    letters = view["dead_letters"]
    lines.append(f"dead letters: {len(letters)}")
    lines += [f"  {x['queue']} {x['message_id']}: {x['reason']}: {x['description']}" for x in letters]
    refused = [a for a in r.get("audit", []) if a["action"] == "command_deadlettered"]
    lines += [f"  refused {a['detail'].get('command')} at {a['at']}: {a['detail'].get('description')}" for a in refused]
    lines += ["", "audit trail:"]
    lines += ["  " + x for x in table(["AT", "ACTION", "ACTOR"],
                                      [[a["at"], a["action"], a["actor"]] for a in r.get("audit", [])])]
    lines += _cost_lines(view["hosting_cost"])
    return "\n".join(lines)


def render_table(view: dict[str, Any]) -> str:
    rows = []
    for r in view["runs"]:
        ev = r.get("evaluation") or {}
        passed = "-" if not ev else ("pass" if ev.get("passed") else "fail")
        deps = ", ".join(f"{d['environment']}/{d['region']}" for d in r["deployments"]) or "-"
        why = r["reason"] or "-"
        rows.append([r["run_id"], r["state"], r["job_id"] or "-", passed, deps,
                     why if len(why) <= WHY_WIDTH else why[:WHY_WIDTH - 1] + "…"])
    lines = table(["RUN", "STATE", "JOB", "EVAL", "DEPLOYMENTS", "WHY"], rows) if rows else ["no runs yet"]
    if view.get("next"):
        lines.append(f"more runs: ftops status --after-run {view['next']}")
    lines += [f"warning: {w}" for w in view.get("retirement_warnings", []) + view.get("drift_warnings", [])]
    letters = view["dead_letters"]
    if letters:
        lines += ["", f"dead letters: {len(letters)} (ftops status RUN_ID shows a run's)"]
        lines += [f"  {x['queue']} {x['subject'] or '-'}: {x['reason']}: {x['description']}" for x in letters]
    return "\n".join(lines + _cost_lines(view["hosting_cost"]))


def _cost_lines(cost: dict[str, Any]) -> list[str]:
    if not cost["deployments"]:
        return []
    rows = [[f"{row['environment']}/{row['region']}", row["deployment"], row["run_id"], row["sku"],
             f"{row['per_day']:.2f}"] for row in cost["deployments"]]
    lines = ["", "hosting (estimate, USD per day):"]
    lines += table(["WHERE", "DEPLOYMENT", "RUN", "SKU", "USD/DAY"], rows, right={4})
    for state, total in cost.get("per_day_by_run_state", {}).items():
        lines.append(f"  runs {state}: {total:.2f}")
    lines.append(f"  total: {cost['total_per_day']:.2f}")
    return lines
