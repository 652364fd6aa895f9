"""The run as people and other programs see it: one shape for `ftops status --json` and `ftops demo --json`."""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

from shared.run import rules, states


def deployment_view(record: Any) -> dict[str, Any]:
    return {"environment": record.environment, "account": record.account, "region": record.region,
            "deployment": record.deployment, "model": record.model, "state": record.state,
            "last_ping": record.last_ping, "retires_on": getattr(record, "retires_on", None)}


reached_end = rules.reached_end
reason = rules.why_stopped   # one reason for `ftops status`, the demo's table, the operator API and the console


def reports(run: Any, container: str = "reports") -> list[str]:
    """The report blobs a run has (the HTML pages; the JSON sits beside each)."""
    found = []
    if run.validation is not None or run.state == states.REJECTED:
        found.append(f"{container}/{run.run_id}/validation.html")
    if run.evaluation is not None:
        found.append(f"{container}/{run.run_id}/evaluation.html")
    return found


def run_view(run: Any, deployments: list[Any], *, reports_container: str = "reports",
             topology: Any = None) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "source": run.source,
        "state": run.state,
        "terminal": run.terminal,
        "reached_end": reached_end(run),
        "job_id": run.job_id,
        "fine_tuned_model": run.fine_tuned_model,
        "evaluation": run.evaluation,
        "deployments": [deployment_view(d) for d in deployments if d.run_id == run.run_id],
        "error": run.error,
        "reason": reason(run, topology),
        "reports": reports(run, reports_container),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }


def table(headers: list[str], rows: list[list[str]], *, right: Collection[int] = frozenset()) -> list[str]:
    """Columns as wide as their widest value (the last one unpadded), so nothing runs into its neighbour."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if i in right else (c if i == len(cells) - 1 else c.ljust(w))
               for i, (c, w) in enumerate(zip(cells, widths))]
        return "  ".join(out).rstrip()
    return [line(headers), *(line(r) for r in rows)]
