"""Dataset statistics and the training cost estimate.

Epochs follow OpenAI's cookbook default rule (target 3; at least 100 and at most 25,000 example
passes); billed tokens = sum of min(limit, tokens) per example x epochs (over-long examples are cut
to the limit by the service). Prices come from shared.run.models and are estimates. Every figure is exact
and held in fixed memory: context sizes are counted per size (ContextCounts), never listed per example.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

import numpy as np

from shared.run.models import REINFORCEMENT, ModelFacts

TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_DEFAULT_EPOCHS = 1
MAX_DEFAULT_EPOCHS = 25
MAX_JOB_TOKENS = 2_000_000_000  # Azure quota: (tokens in training file) x epochs per job
HISTOGRAM_BINS = 24


def default_epochs(n_examples: int) -> int:
    epochs = TARGET_EPOCHS
    if n_examples <= 0:
        return epochs
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        epochs = min(MAX_DEFAULT_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    elif n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        epochs = max(MIN_DEFAULT_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return epochs


class ContextCounts:
    """How many usable examples have each context size: exact quantiles, minimum, maximum and histogram in
    fixed memory. Sizes below EXACT_BELOW are counted in one array (4 MiB, its pages touched only where
    sizes fall); larger ones, which need a line of hundreds of kilobytes each, in a dict."""

    EXACT_BELOW = 1 << 20

    def __init__(self) -> None:
        self._small = np.zeros(self.EXACT_BELOW, dtype=np.uint32)
        self._large: dict[int, int] = {}
        self.n = 0

    def add(self, sizes: array[int]) -> None:
        """Count one block's context sizes (an array("I"))."""
        if not len(sizes):
            return
        values = np.frombuffer(sizes, dtype=np.uint32)
        self.n += len(values)
        large = values >= self.EXACT_BELOW
        if large.any():
            for v in values[large].tolist():
                self._large[v] = self._large.get(v, 0) + 1
            values = values[~large]
        distinct, counts = np.unique(values, return_counts=True)
        self._small[distinct] += counts.astype(np.uint32)

    def values_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct sizes ascending, how many examples have each)."""
        distinct = np.flatnonzero(self._small)
        counts = self._small[distinct].astype(np.int64)
        if self._large:
            big = sorted(self._large)
            distinct = np.concatenate((distinct, np.array(big, dtype=np.int64)))
            counts = np.concatenate((counts, np.array([self._large[v] for v in big], dtype=np.int64)))
        return distinct.astype(np.int64), counts

    @classmethod
    def of(cls, sizes: list[int]) -> ContextCounts:
        counts = cls()
        counts.add(array("I", sizes))
        return counts


def percentile(values: np.ndarray, counts: np.ndarray, q: float) -> int:
    """Nearest-rank percentile of the sizes `values` (ascending) seen `counts` times each: exactly the
    element of rank ceil(q·n) of the sorted list of all of them."""
    n = int(counts.sum())
    if not n:
        return 0
    rank = max(1, min(n, math.ceil(q * n)))
    return int(values[int(np.searchsorted(np.cumsum(counts), rank))])


def histogram(values: np.ndarray, counts: np.ndarray, limit: int | None) -> dict[str, list[int]]:
    """Equal-width bins from 0 to the larger of the maximum and (when close) the model's limit."""
    if not len(values):
        return {"edges": [], "counts": []}
    top = int(values[-1])
    if limit and top >= limit * 0.5:
        top = max(top, limit)
    width = max(1, -(-(top + 1) // HISTOGRAM_BINS))
    bins = np.minimum(HISTOGRAM_BINS - 1, values // width)
    per_bin = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
    np.add.at(per_bin, bins, counts)
    return {"edges": [i * width for i in range(HISTOGRAM_BINS + 1)], "counts": per_bin.tolist()}


def build_stats(*, examples: int, messages: int, tokens: int, capped_tokens: int, context: ContextCounts,
                assistant_tokens: int, facts: ModelFacts | None, method: str | None,
                n_epochs: int | None, size_bytes: int) -> dict[str, Any]:
    """`tokens`: billed tokens of every usable example; `capped_tokens`: the same, each example's counted up
    to the model's limit; `context`: the usable examples' context sizes."""
    values, counts = context.values_counts()
    usable = context.n
    total = tokens
    limit = facts.max_tokens_per_example if facts else None
    stats: dict[str, Any] = {
        "examples": examples,
        "usable_examples": usable,
        "messages": messages,
        "bytes": size_bytes,
        "tokens": {
            "total": total,
            "assistant": assistant_tokens,
            "per_example": {
                "min": int(values[0]) if usable else 0,
                "median": percentile(values, counts, 0.5),
                "p95": percentile(values, counts, 0.95),
                "max": int(values[-1]) if usable else 0,
            },
            "limit": limit,
            "over_limit": int(counts[values > limit].sum()) if limit is not None else 0,
        },
        "histogram": histogram(values, counts, limit),
    }
    epochs = n_epochs or default_epochs(usable)
    # The service truncates long examples, so it cannot bill more than the limit for them.
    if limit is None:
        billed_file = total
    else:
        billed_file = capped_tokens if stats["tokens"]["over_limit"] else total
    cost: dict[str, Any] = {"epochs": epochs, "epochs_rule": "explicit" if n_epochs else "default",
                            "billed_tokens": billed_file * epochs, "estimated_usd": None,
                            "price_per_1m_tokens": None, "estimate": True}
    if facts is not None:
        if method == REINFORCEMENT:
            cost["price_per_hour"] = facts.training_price_per_hour
            cost["note"] = "reinforcement fine-tuning is billed per training hour, not per token"
        elif facts.training_price_per_1m is not None:
            cost["price_per_1m_tokens"] = facts.training_price_per_1m
            cost["estimated_usd"] = round(cost["billed_tokens"] / 1e6 * facts.training_price_per_1m, 2)
        cost["hosting_price_per_hour"] = facts.hosting_price_per_hour
        cost["model"] = facts.name
    stats["cost"] = cost
    return stats
