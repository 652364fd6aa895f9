"""The approval view's comparison: the candidate's evaluation against the model the environment serves now.

Both sides come from this run's own evaluation report (`reports/<run>/evaluation.json`, written by the
evaluate stage), measured on the same examples: the chosen candidate and the champion (what the environment
served then, the run's own earlier model included), with the gates. When the evaluation measured no champion,
the candidate is compared with the base model measured in the same report.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
MAX_REPORT_BYTES = 4 * 1024 * 1024
# (label, metric key, higher is better)
METRICS = (("mean token F1", "mean_f1", True), ("exact match", "exact_match", True),
           ("latency p50 (ms)", "latency_p50_ms", False), ("latency p95 (ms)", "latency_p95_ms", False),
           ("errors", "n_errors", False))


@dataclass(frozen=True)
class Side:
    label: str                   # what this column is (serving now / base model / candidate)
    model: str | None
    run_id: str | None
    metrics: dict[str, Any] | None
    gates: list[dict[str, Any]]

    @property
    def gates_passed(self) -> str:
        return f"{sum(1 for g in self.gates if g.get('passed'))} / {len(self.gates)}" if self.gates else "—"


def read_report(deps: Deps, run_id: str, name: str = "evaluation.json") -> dict[str, Any] | None:
    """A run's JSON report as stored, or None (missing, too large, not JSON). Read only after the operator
    API has let the caller read that run."""
    try:
        container = deps.blobs.get_container_client(deps.settings.reports_container)
        blob = container.get_blob_client(f"{run_id}/{name}")
        if blob.get_blob_properties().size > MAX_REPORT_BYTES:
            return None
        value = json.loads(blob.download_blob().readall())
    except Exception as exc:  # noqa: BLE001 - a missing or broken report is shown as unknown, never a failure
        log.info("console: report %s/%s not readable: %s", run_id, name, type(exc).__name__)
        return None
    return value if isinstance(value, dict) else None


def chosen_side(report: dict[str, Any] | None, label: str, run_id: str | None, model: str | None) -> Side:
    if not report:
        return Side(label, model, run_id, None, [])
    name = (report.get("chosen") or {}).get("name")
    found = next((c for c in report.get("candidates") or [] if c.get("name") == name), None)
    return Side(label, (report.get("chosen") or {}).get("model") or model, run_id,
                (found or {}).get("metrics"), list(report.get("gates") or []))


def champion_side(report: dict[str, Any] | None, environment: str) -> Side | None:
    """The model the environment served when this run was evaluated, measured in this run's evaluation on the
    same examples as the candidate — the numbers its gate used (never the champion's own report, whose
    examples differ); None when the evaluation measured no champion."""
    found = next((c for c in (report or {}).get("candidates") or [] if c.get("kind") == "champion"), None)
    if found is None:
        return None
    n = ((report or {}).get("examples") or {}).get("evaluated")
    where = found.get("environment") or environment
    return Side(f"serving {where} (measured on this run's {n or 'same'} examples)", found.get("model"), None,
                found.get("metrics"), [])


def base_side(report: dict[str, Any] | None) -> Side | None:
    base = next((c for c in (report or {}).get("candidates") or [] if c.get("kind") == "base"), None)
    if base is None:
        return None
    return Side("base model (measured in this run's evaluation)", base.get("model"), None, base.get("metrics"), [])


def rows(reference: Side, candidate: Side) -> list[tuple[str, Any, Any, str, str]]:
    """(metric, reference value, candidate value, change, 'better'|'worse'|'') for each metric."""
    out = []
    for label, key, higher_better in METRICS:
        a = (reference.metrics or {}).get(key)
        b = (candidate.metrics or {}).get(key)
        change, verdict = "—", ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            delta = b - a
            coarse = max(abs(a), abs(b)) >= 10 or all(isinstance(x, int) for x in (a, b))
            change = f"{delta:+.0f}" if coarse else f"{delta:+.3f}"
            if delta:
                verdict = "better" if (delta > 0) == higher_better else "worse"
        out.append((label, _fmt(a), _fmt(b), change, verdict))
    errors = [sum(((side.metrics or {}).get("grader_errors") or {}).values()) if side.metrics else None
              for side in (reference, candidate)]
    out.append(("answers a grader could not score", _fmt(errors[0]), _fmt(errors[1]), "",
                "worse" if (errors[1] or 0) > (errors[0] or 0) else ""))
    out.append(("gates passed", reference.gates_passed, candidate.gates_passed, "", ""))
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)
