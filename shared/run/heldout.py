"""How many held-out examples a gate needs before it may decide anything (docs/evaluation.md, "Enough data").

The power calculation behind `MIN_HELD_OUT`, for the default `min_score` gate (the lower bound of the 95 %
interval of the mean must clear 0.5, a one-sided test at α = 0.025): a fine-tuned model whose true mean
clears the threshold by a quarter of the scale (δ = 0.25, i.e. 0.75 against 0.5) should pass 80 % of the
time even with the largest spread a score in [0, 1] can have at that mean (σ ≤ 0.5), so

    n = ⌈((z₀.₉₇₅ + z₀.₈₀) · σ / δ)²⌉ = ⌈((1.960 + 0.842) · 0.5 / 0.25)²⌉ = 32,

and never fewer than 30. With fewer examples an interval is too wide to tell a good model from a bad one,
and the 11-example drop that once promoted a model on one answer is refused at intake instead.
"""
from __future__ import annotations

import math
from statistics import NormalDist

ALPHA = 0.025     # one-sided: the lower bound of a two-sided 95 % interval
POWER = 0.80
SPREAD = 0.5      # the largest standard deviation of a score in [0, 1]
EFFECT = 0.25     # how far above the threshold a model must be for the gate to see it 80 % of the time
FLOOR = 30


def held_out_needed(*, effect: float = EFFECT, spread: float = SPREAD, alpha: float = ALPHA,
                    power: float = POWER) -> int:
    """Examples for a one-sided test at `alpha` to see a true mean `effect` above its threshold with `power`."""
    z = NormalDist().inv_cdf
    return max(FLOOR, math.ceil(((z(1 - alpha) + z(power)) * spread / effect) ** 2))


MIN_HELD_OUT = held_out_needed()   # 32
MIN_TRAIN = 10                     # the service's minimum for a training file
