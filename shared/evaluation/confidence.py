"""How sure: intervals for a mean score and for a paired difference, honest at small n.

The percentile bootstrap this module used before undercovers badly on a few examples (measured on
simulated data: 64 % at n = 19, 23 % at n = 5, and a point when every score is equal), so:

- 0/1 scores (string_check, exact answers): the **Wilson score interval** (Wilson, JASA 1927; Brown, Cai &
  DasGupta, "Interval Estimation for a Binomial Proportion", Statistical Science 2001, recommend it for
  small n). Never a point: 19 of 19 right gives [0.832, 1].
- Other scores, and paired differences (challenger − base on the same examples, Koehn, EMNLP 2004): the
  **Student t interval** of the mean.
- Every score equal (no spread to estimate): the examples that could differ from the value seen are bounded
  by Wilson's upper limit for 0 of n, and the interval spans that share of the score's range either side.

`p_value` is the one-sided p-value of "the true mean is at most `threshold`" with the same method, so that a
gate at level α passes exactly when the interval's lower bound at one-sided α clears the threshold (what
Holm's correction for several candidates needs, `shared.evaluation.gates`). No randomness: the same scores
always give the same interval. tests/unit/test_evaluation_confidence.py measures the coverage by simulation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from statistics import NormalDist

LEVEL = 0.95   # two-sided; a gate reads the lower bound, a one-sided test at (1 − LEVEL) / 2


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    level: float = LEVEL
    method: str = "t"

    def to_dict(self) -> dict[str, float | str]:
        return {"mean": round(self.mean, 4), "low": round(self.low, 4), "high": round(self.high, 4),
                "level": round(self.level, 6), "method": self.method}

    def text(self) -> str:
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}]"


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def wilson(successes: float, n: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Wilson's score interval for a proportion (successes may be fractional: a mean of bounded scores)."""
    if n <= 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float], *, level: float = LEVEL, lo: float = 0.0, hi: float = 1.0) -> Interval:
    """The mean with its interval; scores lie in [lo, hi]. No values: 0 with the whole range."""
    n = len(values)
    if not n:
        return Interval(0.0, lo, hi, level, "none")
    mean = math.fsum(values) / n
    if lo == 0.0 and hi == 1.0 and is_binary(values):
        low, high = wilson(mean * n, n, level=level)
        return Interval(mean, low, high, level, "wilson")
    spread = max(values) - min(values)
    if n == 1 or spread == 0:
        share = wilson(0, n, level=level)[1]   # how many examples could differ from the one value seen
        return Interval(mean, mean - share * (mean - lo), mean + share * (hi - mean), level, "all-equal")
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    q = t_quantile(1 - (1 - level) / 2, n - 1)
    half = q * sd / math.sqrt(n)
    # the t interval, widened where the scores are skewed to where Hall's transformation puts it
    skew = _skewness(values, mean, sd)
    low = min(mean - half, mean - sd / math.sqrt(n) * _hall_inverse(q, skew, n))
    high = max(mean + half, mean - sd / math.sqrt(n) * _hall_inverse(-q, skew, n))
    return Interval(mean, max(lo, low), min(hi, high), level, "t" if skew == 0.0 else "t+hall")


def _skewness(values: Sequence[float], mean: float, sd: float) -> float:
    return math.fsum((v - mean) ** 3 for v in values) / len(values) / sd ** 3 if sd > 0 else 0.0


def _hall(t: float, skew: float, n: int) -> float:
    """Hall's transformation of the studentised mean (Hall, "On the removal of skewness by transformation",
    JRSS-B 1992): g(T) = T + γT²/(3√n) + γ²T³/(27n) + γ/(6√n), close to the t distribution when the scores
    are skewed (γ their skewness), where T itself is not; monotone, so it inverts in closed form."""
    a = skew / math.sqrt(n)
    if abs(a) < 1e-12:
        return t + a / 6
    return ((1 + a * t / 3) ** 3 - 1) / a + a / 6


def _hall_inverse(x: float, skew: float, n: int) -> float:
    a = skew / math.sqrt(n)
    if abs(a) < 1e-12:
        return x - a / 6
    y = 1 + a * (x - a / 6)
    return 3 / a * (math.copysign(abs(y) ** (1 / 3), y) - 1)


def paired_difference(a: Sequence[float], b: Sequence[float], *, level: float = LEVEL) -> Interval:
    """mean(a) − mean(b) over the same examples: the t interval of the per-example differences."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need the same examples ({len(a)} vs {len(b)})")
    return mean_interval([x - y for x, y in zip(a, b, strict=True)], level=level, lo=-1.0, hi=1.0)


def p_value(values: Sequence[float], threshold: float, *, lo: float = 0.0, hi: float = 1.0) -> float:
    """One-sided p-value of H0 "true mean ≤ threshold", by the test each interval inverts, so that the lower
    bound at level 1 − 2α clears the threshold exactly when p ≤ α (the Wilson interval inverts the score
    test; the t interval the t test; the all-equal bound its own Wilson limit)."""
    n = len(values)
    if not n:
        return 1.0
    mean = math.fsum(values) / n
    normal = NormalDist()
    if lo == 0.0 and hi == 1.0 and is_binary(values):
        if not 0.0 < threshold < 1.0:
            return 0.0 if threshold <= 0.0 else 1.0
        return 1 - normal.cdf((mean - threshold) / math.sqrt(threshold * (1 - threshold) / n))
    if n == 1 or max(values) == min(values):
        if mean <= threshold:
            return 1.0
        share = (mean - threshold) / (mean - lo)   # lower bound = mean − u·(mean − lo) ≥ threshold ⇔ u ≤ share
        if share >= 1:
            return 0.0
        return 1 - normal.cdf(math.sqrt(share * n / (1 - share)))   # u = z² / (n + z²), solved for z
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    t = (mean - threshold) / (sd / math.sqrt(n))
    # the larger of the t test's and Hall's: the lower bound above is the smaller of the two intervals' bounds
    return max(1 - t_cdf(t, n - 1), 1 - t_cdf(_hall(t, _skewness(values, mean, sd), n), n - 1))


# --- Student's t quantile, without scipy -----------------------------------------------------------------
def t_cdf(t: float, df: int) -> float:
    """P(T ≤ t) for Student's t with df degrees of freedom, through the regularised incomplete beta function."""
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


@cache
def t_quantile(p: float, df: int) -> float:
    """The p quantile of Student's t (bisection on `t_cdf`; 1e-10 of the tables' values)."""
    if df <= 0:
        raise ValueError("t needs at least one degree of freedom")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
        if high - low < 1e-12:
            break
    return (low + high) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b): continued fraction, modified Lentz (Numerical Recipes §6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1) / (a + b + 2):
        return 1 - _betainc(b, a, 1 - x)
    tiny = 1e-300
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + numerator * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1) < 1e-15:
            break
    return front * result / a


# --- a fresh sample against a baseline (the drift watch) --------------------------------------------------
def shortfall(fresh: Interval, baseline: Interval) -> Interval:
    """fresh − baseline, two means measured on different examples, with the interval their own intervals
    give: each side's margin toward the other (the fresh sample's upper, the baseline's lower, and the
    reverse), combined in quadrature as for independent estimates. `high < 0` says the fresh sample is
    below the baseline at the intervals' level (one-sided (1 − level) / 2), whatever the two sizes.

    Why not "the fresh mean below the baseline's lower bound": that ignores the fresh sample's own noise, so
    its false alarms grow as the sample shrinks (simulated in tests/unit/test_drift_statistics.py: 23–26 % of
    checks on 5 examples of an unchanged model, 7–9 % even at 100; this rule: 1–4 %). It reduces to that rule
    only as the fresh sample grows without bound; as the baseline grows, to "the fresh interval wholly below
    the baseline mean"."""
    diff = fresh.mean - baseline.mean
    up = math.hypot(fresh.high - fresh.mean, baseline.mean - baseline.low)
    down = math.hypot(fresh.mean - fresh.low, baseline.high - baseline.mean)
    return Interval(diff, diff - down, diff + up, min(fresh.level, baseline.level), "quadrature")
