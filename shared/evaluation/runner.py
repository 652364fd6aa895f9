"""Ask every candidate every held-out question, with bounded concurrency, timing and grading each call.

The model call is a `ChatFn` so unit tests pass a fake; the stage passes one built on the openai SDK
(`shared.azure.chat.openai_chat_fn`) with the SDK's own retries off for 429: a rate limit backs off the whole pool (every
worker waits out the Retry-After, not just the call that met it), then the call is tried again, a bounded
number of times. A deployment that could not be asked (`InfrastructureError`: gone, not ready, 5xx after
the tries) stops the whole pass: it says nothing about the model, so nothing is scored and the caller tries
again later. Other failures (a call timing out) are an error for that example: they count against the
error-rate gate, not against the whole evaluation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from shared.azure.chat import ChatFn, ChatReply, InfrastructureError, JudgeFn, RateLimited
from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader, Reply, grade
from shared.evaluation.metrics import ExampleResult, score

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 8      # default calls in flight for all candidates together (run.json evaluation.concurrency)
RATE_LIMIT_TRIES = 8     # a call met by 429 this many times is an error for its example
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0


class PoolBackoff:
    """One pause for every worker of the pool: a 429 pushes the time calls may start again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._resume_at = 0.0
        self.waits = 0

    def wait(self) -> None:
        while True:
            with self._lock:
                delay = self._resume_at - time.monotonic()
            if delay <= 0:
                return
            time.sleep(min(delay, 1.0))

    def pause(self, seconds: float | None) -> None:
        seconds = min(MAX_RETRY_AFTER_S, seconds if seconds and seconds > 0 else DEFAULT_RETRY_AFTER_S)
        with self._lock:
            self._resume_at = max(self._resume_at, time.monotonic() + seconds)
            self.waits += 1


@dataclass(frozen=True)
class Candidate:
    name: str                 # label in reports: "final", "base", "checkpoint step 20", "champion"
    kind: str                 # "final" | "checkpoint" | "base" | "champion"
    model: str                # the model id deployed (fine-tuned model, checkpoint id or base model)
    deployment: str           # the temporary deployment name on the hub
    sku: str = "standard"
    capacity: int = 1
    step: int | None = None   # checkpoints: training step
    environment: str | None = None   # champion: the environment that serves it today


def run_candidates(candidates: Sequence[Candidate], examples: Sequence[Example], chat: ChatFn, *,
                   max_workers: int = MAX_CONCURRENCY, graders: Sequence[Grader] = (),
                   judge: JudgeFn | None = None, backoff: PoolBackoff | None = None
                   ) -> dict[str, list[ExampleResult]]:
    """Results per candidate name, in example order. One pool for all calls keeps the total concurrency
    bounded no matter how many candidates there are; one backoff makes a 429 slow the whole pool."""
    backoff = backoff or PoolBackoff()
    broken: list[InfrastructureError] = []   # the first deployment that could not be asked stops every call

    def call(deployment: str, example: Example) -> ChatReply:
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            backoff.wait()
            if broken:
                raise broken[0]
            try:
                return chat(deployment, example)
            except RateLimited as exc:
                if attempt == RATE_LIMIT_TRIES:
                    raise
                backoff.pause(exc.retry_after)
        raise AssertionError("unreachable")

    def one(candidate: Candidate, index: int, example: Example) -> ExampleResult:
        started = time.perf_counter()
        try:
            reply = call(candidate.deployment, example)
        except InfrastructureError as exc:
            broken.append(exc)
            raise
        except Exception as exc:  # noqa: BLE001 — any other failure of one call is an error for that example
            log.warning("%s: example line %d failed: %s", candidate.name, example.line, _describe(exc))
            return ExampleResult(index=index, answer=None, latency_ms=None, error=_describe(exc),
                                 scores={g.name: 0.0 for g in graders})
        latency_ms = (time.perf_counter() - started) * 1000
        shown = reply.text or _calls_text(reply.tool_calls)
        result = score(index, shown, example.reference, latency_ms=latency_ms,
                       prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
        answer = Reply(reply.text, reply.tool_calls)
        scores = {g.name: _grade(g, answer, example, judge, candidate.name) for g in graders}
        return replace(result, flagged=reply.flagged, scores={k: v for k, v in scores.items() if v is not None},
                       grading_failed=tuple(k for k, v in scores.items() if v is None))

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="eval") as pool:
        futures = {c.name: [pool.submit(one, c, i, ex) for i, ex in enumerate(examples)] for c in candidates}
        return {name: [f.result() for f in fs] for name, fs in futures.items()}


def _grade(grader: Grader, answer: Reply, example: Example, judge: JudgeFn | None, who: str) -> float | None:
    """The grader's score; None when it could not score (a judge call that failed): the answer then counts
    0 for that grader and the report counts it under `grader_errors`, so a broken judge is seen."""
    try:
        return grade(grader, answer, example, judge)
    except Exception as exc:  # noqa: BLE001 — one grading failure must not stop the evaluation
        log.warning("%s: grader %s failed on line %d: %s", who, grader.name, example.line, _describe(exc))
        return None


def _calls_text(calls: Sequence[dict[str, str]]) -> str:
    return "; ".join(f"{c.get('name')}({c.get('arguments', '')})" for c in calls)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).replace("\n", " ")[:200]
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"
