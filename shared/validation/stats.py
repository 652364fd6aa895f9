"""Dataset statistics and the training cost estimate.

Epochs follow OpenAI's cookbook default rule (target 3; at least 100 and at most 25,000 example
passes); billed tokens = sum of min(limit, tokens) per example x epochs (over-long examples are cut
to the limit by the service). Prices come from shared.run.models and are estimates.
"""

from __future__ import annotations

import math
from array import array
from typing import Any

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


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return 0
    rank = max(1, min(len(sorted_values), math.ceil(q * len(sorted_values))))
    return sorted_values[rank - 1]


def histogram(sorted_values: list[int], limit: int | None) -> dict[str, list[int]]:
    """Equal-width bins from 0 to the larger of the maximum and (when close) the model's limit."""
    if not sorted_values:
        return {"edges": [], "counts": []}
    top = sorted_values[-1]
    if limit and top >= limit * 0.5:
        top = max(top, limit)
    width = max(1, -(-(top + 1) // HISTOGRAM_BINS))
    counts = [0] * HISTOGRAM_BINS
    for v in sorted_values:
        counts[min(HISTOGRAM_BINS - 1, v // width)] += 1
    return {"edges": [i * width for i in range(HISTOGRAM_BINS + 1)], "counts": counts}


def build_stats(*, examples: int, usable: int, messages: int, tokens: array[int], context: array[int],
                assistant_tokens: int, facts: ModelFacts | None, method: str | None,
                n_epochs: int | None, size_bytes: int) -> dict[str, Any]:
    ctx_sorted = sorted(context)
    total = sum(tokens)
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
                "min": ctx_sorted[0] if ctx_sorted else 0,
                "median": percentile(ctx_sorted, 0.5),
                "p95": percentile(ctx_sorted, 0.95),
                "max": ctx_sorted[-1] if ctx_sorted else 0,
            },
            "limit": limit,
            "over_limit": sum(1 for c in ctx_sorted if limit is not None and c > limit),
        },
        "histogram": histogram(ctx_sorted, limit),
    }
    epochs = n_epochs or default_epochs(usable)
    # The service truncates long examples, so it cannot bill more than the limit for them.
    if limit is None:
        billed_file = total
    else:
        billed_file = sum(min(t, limit) for t in tokens) if stats["tokens"]["over_limit"] else total
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
