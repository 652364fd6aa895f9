"""The run as people and other programs see it: one shape for `ftops status --json` and `ftops demo --json`."""
from __future__ import annotations

from typing import Any


def deployment_view(record: Any) -> dict[str, Any]:
    return {"environment": record.environment, "account": record.account, "region": record.region,
            "deployment": record.deployment, "model": record.model, "state": record.state,
            "last_ping": record.last_ping}


def run_view(run: Any, deployments: list[Any]) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "source": run.source,
        "state": run.state,
        "terminal": run.terminal,
        "job_id": run.job_id,
        "fine_tuned_model": run.fine_tuned_model,
        "evaluation": run.evaluation,
        "deployments": [deployment_view(d) for d in deployments if d.run_id == run.run_id],
        "error": run.error,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
    }
