"""Which trained candidate to ship, and whether it is good enough (the run's `thresholds`).

Every gate is reported with its value, threshold and verdict, passed or not, so a failed run's summary
says exactly what to fix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared.evaluation.metrics import CandidateMetrics
from shared.evaluation.runner import Candidate
from shared.run_settings import Thresholds


@dataclass(frozen=True)
class Gate:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def choose_candidate(candidates: Sequence[Candidate], metrics: Mapping[str, CandidateMetrics]) -> Candidate:
    """The fine-tuned candidate (final model or checkpoint) with the best mean F1.

    Ties go to the final model (it is what the job produced and what people expect), then to the later
    checkpoint. Scores are compared rounded so float noise does not decide between equal answers.
    """
    trained = [c for c in candidates if c.kind in ("final", "checkpoint") and c.name in metrics]
    if not trained:
        raise ValueError("no fine-tuned candidate was evaluated")

    def key(c: Candidate) -> tuple[float, int, int]:
        return (round(metrics[c.name].mean_f1, 9), 1 if c.kind == "final" else 0, c.step or 0)

    return max(trained, key=key)


def thresholds_from(settings: Mapping[str, Any]) -> Thresholds:
    """The run's thresholds (run.json over defaults); a missing block means the defaults."""
    raw = settings.get("thresholds") or {}
    return raw if isinstance(raw, Thresholds) else Thresholds.model_validate(raw)


def evaluate_gates(chosen: CandidateMetrics, base: CandidateMetrics, thresholds: Thresholds) -> list[Gate]:
    improvement = chosen.mean_f1 - base.mean_f1
    gates = [
        Gate("min_score", chosen.mean_f1, thresholds.min_score, chosen.mean_f1 >= thresholds.min_score,
             f"mean token F1 {chosen.mean_f1:.3f} (needs ≥ {thresholds.min_score:.3f})"),
        Gate("min_improvement", improvement, thresholds.min_improvement,
             improvement >= thresholds.min_improvement,
             f"F1 {chosen.mean_f1:.3f} vs base {base.mean_f1:.3f}: {improvement:+.3f} "
             f"(needs ≥ {thresholds.min_improvement:+.3f})"),
        Gate("max_error_rate", chosen.error_rate, thresholds.max_error_rate,
             chosen.error_rate <= thresholds.max_error_rate,
             f"{chosen.n_errors} of {chosen.n} calls failed ({chosen.error_rate:.1%}; "
             f"allowed ≤ {thresholds.max_error_rate:.1%})"),
    ]
    limit, p95 = thresholds.max_latency_p95_ms, chosen.latency_p95_ms
    if limit is None:
        gates.append(Gate("max_latency_p95_ms", p95, None, True, "no latency limit set"))
    elif p95 is None:
        gates.append(Gate("max_latency_p95_ms", None, limit, False, "no successful call to measure"))
    else:
        gates.append(Gate("max_latency_p95_ms", p95, limit, p95 <= limit,
                          f"p95 latency {p95:.0f} ms (allowed ≤ {limit:.0f} ms)"))
    return gates
