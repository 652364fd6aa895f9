"""Which trained candidate to ship, and whether it is good enough (the run's `thresholds`).

Every gate is reported with its value, threshold and verdict, passed or not, so a failed run's summary
says exactly what to fix.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from shared.evaluation.confidence import Interval, p_value
from shared.evaluation.metrics import CandidateMetrics, ExampleResult
from shared.evaluation.runner import Candidate
from shared.run.heldout import MIN_HELD_OUT
from shared.run.settings import Thresholds


@dataclass(frozen=True)
class Gate:
    name: str
    value: float | None
    threshold: float | None
    passed: bool
    detail: str
    grader: str | None = None                  # the grader whose scores the gate reads
    interval: dict[str, Any] | None = None   # the interval of `value`, when it has one

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()
                if v is not None or k in ("value", "threshold")}


def thresholds_from(settings: Mapping[str, Any]) -> Thresholds:
    """The run's thresholds (run.json over defaults); a missing block means the defaults."""
    raw = settings.get("thresholds") or {}
    return raw if isinstance(raw, Thresholds) else Thresholds.model_validate(raw)


ALPHA = 0.025   # one-sided, per gate: the lower bound of a two-sided 95 % interval


def common_examples(results: Mapping[str, Sequence[ExampleResult]], grader: str) -> list[int]:
    """The examples every candidate's `grader` scored: an answer the grader could not score (a judge that
    failed) is no evidence either way, so that example leaves every candidate's comparison; so does one the
    grader does not apply to (a text grader on a tool-call reference)."""
    rows = list(results.values())
    n = min((len(r) for r in rows), default=0)
    return [i for i in range(n)
            if not any(grader in r[i].grading_failed or grader in r[i].not_applicable for r in rows)]


def scores_on(rows: Sequence[ExampleResult], grader: str, keep: Sequence[int]) -> list[float]:
    return [rows[i].scores.get(grader, rows[i].f1 if grader == "token_f1" else 0.0) for i in keep]


@dataclass(frozen=True)
class Verdict:
    """One fine-tuned candidate's gates."""
    candidate: Candidate
    gates: list[Gate]

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


def holm(p_values: Mapping[str, float], alpha: float = ALPHA) -> dict[str, float]:
    """Holm's step-down correction (Holm, Scand. J. Statistics 1979): each candidate's one-sided level, and
    passing only while every smaller p-value passed; a candidate that cannot pass gets level 0. Whichever
    candidate is then chosen, the chance that any one passes a gate it should fail stays ≤ alpha."""
    order = sorted(p_values, key=lambda name: p_values[name])
    levels: dict[str, float] = {}
    stopped = False
    for rank, name in enumerate(order):
        level = alpha / (len(order) - rank)
        stopped = stopped or p_values[name] > level
        levels[name] = 0.0 if stopped else level
    return levels


def gate_candidates(trained: Sequence[Candidate], results: Mapping[str, Sequence[ExampleResult]],
                    metrics: Mapping[str, CandidateMetrics], thresholds: Thresholds, *, grader: str = "token_f1",
                    champion_note: str | None = None) -> tuple[Candidate, dict[str, Verdict]]:
    """Every fine-tuned candidate gated, then the choice: the best mean of the gate grader among those that
    pass every gate (ties: the final model, then the later checkpoint); when none passes, the best of all,
    so the report says what failed. Interval gates are corrected for the number of candidates (Holm), so
    choosing the best of several does not raise the false-pass rate (tests/unit/test_evaluation_confidence.py
    measures it by simulation)."""
    trained = [c for c in trained if c.kind in ("final", "checkpoint") and c.name in results]
    if not trained:
        raise ValueError("no fine-tuned candidate was evaluated")
    keep = common_examples(results, grader)
    scores = {name: scores_on(rows, grader, keep) for name, rows in results.items()}
    diffs: dict[str, dict[str, list[float]]] = {
        other: {c.name: [a - b for a, b in zip(scores[c.name], scores[other], strict=True)] for c in trained}
        for other in ("base", "champion") if other in scores}
    targets = {"base": thresholds.min_improvement,
               "champion": (-thresholds.non_inferiority_margin if thresholds.champion_rule == "non_inferior"
                            else thresholds.min_improvement_over_champion)}
    levels = {other: holm({name: p_value(d, targets[other], lo=-1.0, hi=1.0) for name, d in by_name.items()})
              for other, by_name in diffs.items()}
    # the examples each candidate's comparison lost because the gate grader failed on its answer or on the
    # base's or the champion's (the union: failures on different examples add up)
    refs = [results[other] for other in diffs]
    lost = {c.name: sum(any(grader in rows[i].grading_failed for rows in (results[c.name], *refs))
                        for i in range(min(len(r) for r in (results[c.name], *refs)))) for c in trained}
    failed_on = {other: sum(grader in r.grading_failed for r in results[other]) for other in diffs}
    verdicts = {}
    for c in trained:
        gates = _gates_of(c, metrics, thresholds, grader=grader, n_common=len(keep), k=len(trained),
                          diffs={o: d[c.name] for o, d in diffs.items()},
                          levels={o: lv[c.name] for o, lv in levels.items()}, targets=targets,
                          champion_note=champion_note, lost=lost[c.name], failed_on=failed_on)
        verdicts[c.name] = Verdict(c, gates)

    def key(c: Candidate) -> tuple[bool, float, int, int]:
        return (verdicts[c.name].passed, round(metrics[c.name].score(grader), 9), 1 if c.kind == "final" else 0,
                c.step or 0)

    return max(trained, key=key), verdicts


def _gates_of(c: Candidate, metrics: Mapping[str, CandidateMetrics], thresholds: Thresholds, *, grader: str,
              n_common: int, k: int, diffs: Mapping[str, list[float]], levels: Mapping[str, float],
              targets: Mapping[str, float], champion_note: str | None, lost: int,
              failed_on: Mapping[str, int]) -> list[Gate]:
    m = metrics[c.name]
    score, (low, high) = m.score(grader), m.interval(grader)
    gates = [
        Gate("min_held_out", float(n_common), float(MIN_HELD_OUT), n_common >= MIN_HELD_OUT,
             f"{n_common} held-out examples graded by {grader} for every candidate (gates need at least "
             f"{MIN_HELD_OUT}: below that an interval cannot tell a good model from a bad one; docs/evaluation.md, "
             "\"Enough data\")"),
        Gate("min_score", score, thresholds.min_score, score >= thresholds.min_score,
             f"mean {grader} {score:.3f} [{low:.3f}, {high:.3f}] must be ≥ {thresholds.min_score:.3f}",
             grader=grader, interval={"mean": round(score, 4), "low": round(low, 4), "high": round(high, 4)}),
        _grader_error_gate(m, thresholds.max_grader_error_rate, grader, lost, failed_on),
    ]
    if "base" in diffs:
        gates.append(_improvement_gate("min_improvement", "base", diffs["base"], levels["base"], targets["base"],
                                       thresholds.improvement_rule, grader, k, "superior"))
    if "champion" in diffs:
        gates.append(_improvement_gate("min_improvement_over_champion", "champion", diffs["champion"],
                                       levels["champion"], targets["champion"], thresholds.improvement_rule, grader,
                                       k, thresholds.champion_rule))
    elif champion_note:
        gates.append(Gate("min_improvement_over_champion", None, targets["champion"], True, champion_note,
                          grader=grader))
    gates += _service_gates(m, thresholds)
    if (priced := cost_gate(m, metrics.get("champion"), thresholds.max_cost_ratio_vs_champion)) is not None:
        gates.append(priced)
    return gates


def _grader_error_gate(m: CandidateMetrics, limit: float, grader: str, lost: int, failed_on: Mapping[str, int]) -> Gate:
    """The worse of two shares: the answers of this candidate its worst grader could not score, and the examples
    its comparison lost because the gate grader failed on its answer or on the base's or the champion's (the
    union: a judge failing on 5 % of each model's answers, on different examples, loses 10 %). Before, only the
    candidate's own failures counted: a judge failing on a third of the base's answers passed this gate and
    the comparison decided on the other two thirds."""
    worst = max(m.grader_errors.items(), key=lambda kv: kv[1], default=None)
    own = worst[1] / m.n if worst and m.n else 0.0
    share = lost / m.n if m.n else 0.0
    said = [f"grader {worst[0]} could not score {worst[1]} of {m.n} answers ({own:.1%})"] if worst else []
    if lost:
        others = ", ".join(f"{n} of the {other} model's" for other, n in failed_on.items() if n)
        said.append(f"the comparison lost {lost} of {m.n} examples ({share:.1%}) to {grader}'s failures"
                    + (f" (on {others} answers)" if others else ""))
    rate = max(own, share)
    what = ("; ".join(said) + "; those examples are left out of every candidate's comparison" if said
            else f"every grader scored all {m.n} answers")
    return Gate("max_grader_error_rate", rate, limit, rate <= limit, f"{what} (allowed ≤ {limit:.1%})")


def _improvement_gate(name: str, against: str, diff: Sequence[float], level: float, target: float, rule: str,
                      grader: str, k: int, kind: str) -> Gate:
    """Lower bound (one-sided `level`, Holm-adjusted) of the paired interval of (candidate − other) ≥ target."""
    mean_only = rule == "mean"
    two_sided = 1 - 2 * level if level > 0 else 1 - 2 * ALPHA / k
    interval = paired_interval(diff, level=two_sided)
    passed = (interval.mean >= target) if mean_only else (level > 0 and interval.low >= target)
    meaning = (f"non-inferior: at worst {-target:.3f} below the {against}" if kind == "non_inferior"
               else f"better than the {against} by at least {target:+.3f}")
    how = (f"mean difference {interval.mean:+.3f} must be ≥ {target:+.3f}" if mean_only else
           f"lower bound {interval.low:+.3f} of the {two_sided:.1%} {interval.method} interval of the paired "
           f"difference ({'Holm-adjusted for ' + str(k) + ' candidates from 95 %' if k > 1 else 'one candidate'}) "
           f"must be ≥ {target:+.3f}")
    return Gate(name, interval.mean, target, passed,
                f"{meaning}: {grader} {interval.mean:+.3f} [{interval.low:+.3f}, {interval.high:+.3f}] on "
                f"{len(diff)} examples; {how}", grader=grader, interval=interval.to_dict())


def paired_interval(diff: Sequence[float], *, level: float) -> Interval:
    from shared.evaluation.confidence import mean_interval
    return mean_interval(diff, level=level, lo=-1.0, hi=1.0)


def _service_gates(chosen: CandidateMetrics, thresholds: Thresholds) -> list[Gate]:
    gates = [Gate("max_error_rate", chosen.error_rate, thresholds.max_error_rate,
                  chosen.error_rate <= thresholds.max_error_rate,
                  f"{chosen.n_errors} of {chosen.n} calls failed ({chosen.error_rate:.1%}; "
                  f"allowed ≤ {thresholds.max_error_rate:.1%})")]
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
