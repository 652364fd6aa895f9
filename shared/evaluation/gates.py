"""Which trained candidate to ship, and whether it is good enough (the run's `thresholds`).

Every gate is reported with its value, threshold and verdict, passed or not, so a failed run's summary
says exactly what to fix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared.evaluation.confidence import Interval
from shared.evaluation.metrics import CandidateMetrics
from shared.evaluation.runner import Candidate
from shared.run.settings import Thresholds


@dataclass(frozen=True)
class Gate:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str
    grader: str | None = None                  # the grader whose scores the gate reads
    interval: dict[str, float] | None = None   # the bootstrap interval of `value`, when it has one

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()
                if v is not None or k in ("value", "threshold")}


def choose_candidate(candidates: Sequence[Candidate], metrics: Mapping[str, CandidateMetrics],
                     grader: str = "token_f1") -> Candidate:
    """The fine-tuned candidate (final model or checkpoint) with the best mean score of the gate grader.

    Ties go to the final model (it is what the job produced and what people expect), then to the later
    checkpoint. Scores are compared rounded so float noise does not decide between equal answers.
    """
    trained = [c for c in candidates if c.kind in ("final", "checkpoint") and c.name in metrics]
    if not trained:
        raise ValueError("no fine-tuned candidate was evaluated")

    def key(c: Candidate) -> tuple[float, int, int]:
        return (round(metrics[c.name].score(grader), 9), 1 if c.kind == "final" else 0, c.step or 0)

    return max(trained, key=key)


def thresholds_from(settings: Mapping[str, Any]) -> Thresholds:
    """The run's thresholds (run.json over defaults); a missing block means the defaults."""
    raw = settings.get("thresholds") or {}
    return raw if isinstance(raw, Thresholds) else Thresholds.model_validate(raw)


def _improvement_gate(name: str, against: str, chosen: float, other: float, diff: Interval | None,
                      threshold: float, rule: str, grader: str) -> Gate:
    diff = diff or Interval(chosen - other, chosen - other, chosen - other)
    judged = diff.low if rule == "lower_bound" else diff.mean
    how = (f"lower bound of the {diff.level:.0%} paired bootstrap interval {diff.low:+.3f}" if rule == "lower_bound"
           else f"mean difference {diff.mean:+.3f}")
    return Gate(name, diff.mean, threshold, judged >= threshold,
                f"{grader} {chosen:.3f} vs {against} {other:.3f}: {diff.mean:+.3f} [{diff.low:+.3f}, "
                f"{diff.high:+.3f}]; {how} (needs ≥ {threshold:+.3f})", grader=grader, interval=diff.to_dict())


def evaluate_gates(chosen: CandidateMetrics, base: CandidateMetrics, thresholds: Thresholds, *,
                   grader: str = "token_f1", over_base: Interval | None = None,
                   champion: CandidateMetrics | None = None, over_champion: Interval | None = None,
                   champion_note: str | None = None) -> list[Gate]:
    """Every gate on the chosen candidate. Improvements are judged on the paired bootstrap interval's
    lower bound (`improvement_rule: lower_bound`, the default) or on the mean difference (`mean`)."""
    score, (low, high) = chosen.score(grader), chosen.interval(grader)
    rule = thresholds.improvement_rule
    gates = [
        Gate("min_score", score, thresholds.min_score, score >= thresholds.min_score,
             f"mean {grader} {score:.3f} [{low:.3f}, {high:.3f}] (needs ≥ {thresholds.min_score:.3f})",
             grader=grader, interval={"mean": round(score, 4), "low": round(low, 4), "high": round(high, 4)}),
        _improvement_gate("min_improvement", "base", score, base.score(grader), over_base,
                          thresholds.min_improvement, rule, grader),
    ]
    if champion is not None:
        gates.append(_improvement_gate("min_improvement_over_champion", "champion", score, champion.score(grader),
                                       over_champion, thresholds.min_improvement_over_champion, rule, grader))
    elif champion_note:
        gates.append(Gate("min_improvement_over_champion", None, thresholds.min_improvement_over_champion, True,
                          champion_note, grader=grader))
    gates.append(Gate("max_error_rate", chosen.error_rate, thresholds.max_error_rate,
                      chosen.error_rate <= thresholds.max_error_rate,
                      f"{chosen.n_errors} of {chosen.n} calls failed ({chosen.error_rate:.1%}; "
                      f"allowed ≤ {thresholds.max_error_rate:.1%})"))
    rate = chosen.content_filter_rate
    gates.append(Gate("max_content_filter_rate", rate, thresholds.max_content_filter_rate,
                      rate <= thresholds.max_content_filter_rate,
                      f"{rate:.1%} of answers carried a content-filter result above safe or were filtered "
                      f"(allowed ≤ {thresholds.max_content_filter_rate:.1%})"))
    limit, p95 = thresholds.max_latency_p95_ms, chosen.latency_p95_ms
    if limit is None:
        gates.append(Gate("max_latency_p95_ms", p95, None, True, "no latency limit set"))
    elif p95 is None:
        gates.append(Gate("max_latency_p95_ms", None, limit, False, "no successful call to measure"))
    else:
        gates.append(Gate("max_latency_p95_ms", p95, limit, p95 <= limit,
                          f"p95 latency {p95:.0f} ms (allowed ≤ {limit:.0f} ms)"))
    return gates


def cost_gate(chosen: CandidateMetrics, champion: CandidateMetrics | None, limit: float | None) -> Gate | None:
    """The distillation gate (`thresholds.max_cost_ratio_vs_champion`): the challenger's estimated cost per
    1,000 requests — measured tokens × its base model's price — at most `limit` × the champion's, measured on
    the same examples. None when the run sets no limit; failed when either cost cannot be measured."""
    if limit is None:
        return None
    mine = chosen.cost_per_1k_requests_usd
    theirs = champion.cost_per_1k_requests_usd if champion is not None else None
    if mine is None or not theirs:
        return Gate("max_cost_ratio_vs_champion", None, limit, False,
                    "the cost per 1,000 requests of the candidate or of the champion could not be measured "
                    "(unknown price, or no champion evaluated)")
    ratio = mine / theirs
    return Gate("max_cost_ratio_vs_champion", ratio, limit, ratio <= limit,
                f"cost per 1,000 requests ${mine:.4f} vs champion ${theirs:.4f}: {ratio:.2f}× "
                f"(allowed ≤ {limit:.2f}×)")
