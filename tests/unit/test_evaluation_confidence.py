"""Bootstrap intervals: they cover the mean, narrow with more examples, and decide min_improvement."""
from __future__ import annotations

import random

import pytest

from shared.evaluation.confidence import mean_interval, paired_difference
from shared.evaluation.gates import evaluate_gates
from shared.evaluation.metrics import ExampleResult, aggregate
from shared.run.settings import Thresholds


def test_interval_brackets_the_mean_and_narrows_with_more_examples() -> None:
    rng = random.Random(1)
    small = [float(rng.random() < 0.6) for _ in range(20)]
    large = [float(rng.random() < 0.6) for _ in range(800)]
    a, b = mean_interval(small), mean_interval(large)
    assert a.low <= a.mean <= a.high and b.low <= b.mean <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 3
    assert mean_interval(small) == a                       # seeded: the same scores, the same interval


def test_paired_bootstrap_sees_a_consistent_small_gain_that_unpaired_noise_would_hide() -> None:
    rng = random.Random(2)
    base = [rng.random() for _ in range(200)]
    better = [min(1.0, x + 0.03) for x in base]            # every example a little better
    diff = paired_difference(better, base)
    assert diff.low > 0.02 and diff.mean == pytest.approx(0.03, abs=0.005)
    with pytest.raises(ValueError, match="same examples"):
        paired_difference(better, base[:-1])


def _metrics(scores: list[float]) -> object:
    return aggregate([ExampleResult(index=i, answer="a", latency_ms=10.0, scores={"g": s}) for i, s in enumerate(scores)],
                     graders=["g"])


def test_min_improvement_passes_on_the_lower_bound_not_on_a_lucky_mean() -> None:
    """19 examples, mean 0.01 better than base: the old rule (mean) passes a threshold of 0.0, the interval
    rule does not — the gain is within noise."""
    rng = random.Random(3)
    base = [float(rng.random() < 0.5) for _ in range(19)]
    chosen = list(base)
    chosen[0], chosen[1] = 1.0 - chosen[0], 1.0 - chosen[1]     # one better, one worse …
    chosen[2] = 1.0 if chosen[2] == 0.0 else chosen[2]           # … and one more better, or a tie
    diff = paired_difference(chosen, base)
    assert diff.mean >= 0 and diff.low < 0
    m_chosen, m_base = _metrics(chosen), _metrics(base)
    strict = {x.name: x for x in evaluate_gates(m_chosen, m_base, Thresholds(min_improvement=0.0, min_score=0.0),
                                                grader="g", over_base=diff)}
    old = {x.name: x for x in evaluate_gates(m_chosen, m_base, Thresholds(min_improvement=0.0, min_score=0.0,
                                                                           improvement_rule="mean"),
                                             grader="g", over_base=diff)}
    assert not strict["min_improvement"].passed and "lower bound" in strict["min_improvement"].detail
    assert old["min_improvement"].passed
    assert strict["min_improvement"].grader == "g" and strict["min_improvement"].interval["low"] == round(diff.low, 4)


def test_champion_gate_and_content_filter_gate() -> None:
    base, champion, chosen = _metrics([0.2] * 50), _metrics([0.8] * 50), _metrics([0.7] * 50)
    gates = {x.name: x for x in evaluate_gates(chosen, base, Thresholds(min_score=0.5), grader="g",
                                               over_base=paired_difference([0.7] * 50, [0.2] * 50),
                                               champion=champion,
                                               over_champion=paired_difference([0.7] * 50, [0.8] * 50))}
    assert gates["min_improvement"].passed and not gates["min_improvement_over_champion"].passed
    assert "vs champion 0.800" in gates["min_improvement_over_champion"].detail
    flagged = aggregate([ExampleResult(index=i, answer="a", latency_ms=1.0, flagged=i < 5) for i in range(50)])
    assert flagged.content_filter_rate == pytest.approx(0.1)
    verdict = {x.name: x.passed for x in evaluate_gates(flagged, flagged, Thresholds(min_score=0, min_improvement=-1))}
    assert verdict["max_content_filter_rate"] is False


def test_cost_per_thousand_requests_from_measured_tokens() -> None:
    rows = [ExampleResult(index=0, answer="a", latency_ms=1.0, prompt_tokens=1000, completion_tokens=500)]
    metrics = aggregate(rows, price_per_1m=(0.80, 3.20))
    assert metrics.cost_per_1k_requests_usd == pytest.approx(1000 * (1000 * 0.8 + 500 * 3.2) / 1e6)
