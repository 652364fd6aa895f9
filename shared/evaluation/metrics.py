"""Answer quality and speed figures: SQuAD-style token F1 and exact match, percentiles, per-candidate aggregates.

Pure functions only (no I/O), so the numbers a gate decides on can be checked by hand in unit tests.
"""
from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _bare(text: str) -> str:
    """What is left of an answer that normalisation empties ("A", "The", "?"): lower case, trimmed."""
    return " ".join(text.lower().split())


def exact_match(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(reference)
    if not pred and not ref:   # both only articles or punctuation: compare what was written
        return float(_bare(prediction) == _bare(reference))
    return 1.0 if pred == ref else 0.0


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall after normalisation (bag of words, SQuAD style).

    One empty answer shares nothing with the other (0.0). Two that normalisation empties agree only when
    they were written alike: SQuAD's normalisation drops articles and punctuation, so "A" (a multiple-choice
    answer), "The", "?" and an empty answer all normalise to nothing and scored 1.0 against each other.
    """
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(reference).split()
    if not pred and not ref:
        return float(_bare(prediction) == _bare(reference))
    if not pred or not ref:
        return 0.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method) without numpy; None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, not {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class ExampleResult:
    """One candidate's answer to one held-out example."""
    index: int                      # position of the example in the evaluated sample
    answer: str | None              # None when the call failed
    latency_ms: float | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None
    f1: float = 0.0
    em: float = 0.0
    scores: dict[str, float] = field(default_factory=dict)   # grader name → 0..1 (a failed call: 0)
    flagged: bool = False        # the content filter annotated or filtered the answer (not "safe")
    grading_failed: tuple[str, ...] = ()   # graders that could not score this answer (a judge that failed)
    not_applicable: tuple[str, ...] = ()   # graders that do not grade this kind of reference (text vs tool calls)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class CandidateMetrics:
    n: int
    n_errors: int
    error_rate: float
    mean_f1: float              # failed calls score 0: an answer that never came helps nobody
    exact_match: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    mean_prompt_tokens: float | None
    mean_completion_tokens: float | None
    graders: dict[str, dict[str, Any]] = field(default_factory=dict)   # name → mean, low, high, level, method
    content_filter_rate: float = 0.0      # flagged answers / successful calls
    grader_errors: dict[str, int] = field(default_factory=dict)   # answers a grader could not score (left out)
    cost_per_1k_requests_usd: float | None = None

    def score(self, grader: str) -> float:
        """Mean score of one grader; token F1 is always known (older reports and unit figures)."""
        if grader in self.graders:
            return float(self.graders[grader]["mean"])
        if grader == "token_f1":
            return self.mean_f1
        raise KeyError(f"grader {grader!r} was not run")

    def interval(self, grader: str) -> tuple[float, float]:
        stats = self.graders.get(grader)
        return (float(stats["low"]), float(stats["high"])) if stats else (self.score(grader), self.score(grader))

    def to_dict(self) -> dict[str, Any]:
        return {k: _rounded(v) for k, v in asdict(self).items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return value


def score(index: int, answer: str, reference: str, *, latency_ms: float, prompt_tokens: int = 0,
          completion_tokens: int = 0) -> ExampleResult:
    return ExampleResult(index=index, answer=answer, latency_ms=latency_ms, prompt_tokens=prompt_tokens,
                         completion_tokens=completion_tokens, f1=token_f1(answer, reference),
                         em=exact_match(answer, reference))


def aggregate(results: Iterable[ExampleResult], *, graders: Sequence[str] = (),
              price_per_1m: tuple[float, float] | None = None) -> CandidateMetrics:
    """Figures for one candidate; each grader's mean with its interval over the answers it could score (a
    grader failure is no evidence, not a 0); the estimated cost of 1,000 requests like these from the
    measured tokens and (input, output) USD per 1M tokens."""
    from shared.evaluation.confidence import mean_interval
    rows = list(results)
    n = len(rows)
    ok = [r for r in rows if r.ok]
    latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
    prompt = sum(r.prompt_tokens for r in ok) / len(ok) if ok else None
    completion = sum(r.completion_tokens for r in ok) / len(ok) if ok else None
    cost = None
    if price_per_1m is not None and prompt is not None and completion is not None:
        cost = 1000 * (prompt * price_per_1m[0] + completion * price_per_1m[1]) / 1e6
    return CandidateMetrics(
        graders={g: mean_interval([r.scores.get(g, 0.0) for r in rows
                                   if g not in r.grading_failed and g not in r.not_applicable]).to_dict()
                 for g in graders},
        content_filter_rate=sum(r.flagged for r in ok) / len(ok) if ok else 0.0,
        grader_errors={g: failed for g in graders if (failed := sum(g in r.grading_failed for r in rows))},
        cost_per_1k_requests_usd=cost,
        n=n,
        n_errors=n - len(ok),
        error_rate=(n - len(ok)) / n if n else 1.0,   # nothing evaluated must never look like success
        mean_f1=sum(r.f1 for r in rows) / n if n else 0.0,
        exact_match=sum(r.em for r in rows) / n if n else 0.0,
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        mean_prompt_tokens=prompt,
        mean_completion_tokens=completion,
    )
