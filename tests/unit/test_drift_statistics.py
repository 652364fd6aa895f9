"""The drift watch's decision, measured by simulation on synthetic scores with known truth: a fresh sample of
an unchanged model raises a false alarm at most as often as the intervals' level says (2.5 % one-sided in
theory; up to about 4 % measured on skewed or 0/1 scores at small n, so the test holds it to 5 %), whatever
its size — the naive "fresh mean below the baseline's lower bound" does not — and a real drop is
found."""
from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from shared.evaluation.confidence import mean_interval, shortfall

Draw = Callable[[random.Random], float]
SHAPES: dict[str, tuple[Draw, Draw]] = {   # (unchanged, dropped by about 0.3)
    "0/1 scores": (lambda r: float(r.random() < 0.75), lambda r: float(r.random() < 0.45)),
    "graded scores": (lambda r: r.betavariate(6, 2), lambda r: r.betavariate(3, 4)),
}


def _alarms(baseline_draw: Draw, fresh_draw: Draw, *, n_baseline: int, n_fresh: int, trials: int,
            seed: int) -> tuple[float, float]:
    """(share flagged by the shortfall interval, share flagged by the naive rule)."""
    rng = random.Random(seed)
    honest = naive = 0
    for _ in range(trials):
        baseline = mean_interval([baseline_draw(rng) for _ in range(n_baseline)])
        fresh = mean_interval([fresh_draw(rng) for _ in range(n_fresh)])
        honest += shortfall(fresh, baseline).high < 0
        naive += fresh.mean < baseline.low
    return honest / trials, naive / trials


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize(("n_baseline", "n_fresh"), [(40, 5), (40, 20), (100, 100), (20, 200)])
def test_an_unchanged_model_is_rarely_called_drifted_at_any_sample_size(shape: str, n_baseline: int,
                                                                        n_fresh: int) -> None:
    same = SHAPES[shape][0]
    honest, _ = _alarms(same, same, n_baseline=n_baseline, n_fresh=n_fresh, trials=1500, seed=n_fresh)
    assert honest <= 0.05, honest


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_naive_rule_cries_drift_on_small_samples_of_an_unchanged_model(shape: str) -> None:
    """Why the decision is not "fresh mean below the baseline's lower bound": on 5 examples that rule flags
    an unchanged model in a large share of checks."""
    same = SHAPES[shape][0]
    honest, naive = _alarms(same, same, n_baseline=40, n_fresh=5, trials=1500, seed=5)
    assert naive >= 0.15 and naive > 5 * honest, (naive, honest)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_real_drop_is_found(shape: str) -> None:
    same, dropped = SHAPES[shape]
    found, _ = _alarms(same, dropped, n_baseline=80, n_fresh=80, trials=500, seed=11)
    assert found >= 0.9, found


def test_the_shortfall_interval_is_the_difference_with_both_margins() -> None:
    fresh, baseline = mean_interval([0.5] * 3 + [0.7] * 3), mean_interval([0.8, 0.9, 1.0, 0.85, 0.95])
    gap = shortfall(fresh, baseline)
    assert gap.mean == pytest.approx(fresh.mean - baseline.mean)
    assert gap.low < gap.mean < gap.high
    assert gap.high == pytest.approx(gap.mean + ((fresh.high - fresh.mean) ** 2
                                                 + (baseline.mean - baseline.low) ** 2) ** 0.5)
