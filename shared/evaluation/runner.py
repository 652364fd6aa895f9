"""Ask every candidate every held-out question, as fast as each deployment allows, timing and grading each call.

The model call is a `ChatFn` so unit tests pass a fake; the stage passes one built on the openai SDK
(`shared.azure.chat.openai_chat_fn`) with the SDK's own retries off for 429. Each deployment has its own
limit of calls in flight (`DeploymentLimit`): it starts at run.json `evaluation.concurrency`, doubles after
every window of answered calls until the deployment first answers 429, then grows by one per window; a 429
halves it and pauses that deployment (every call to it, not just the one that met it) for its Retry-After,
then the call is tried again, a bounded number of times — additive increase, multiplicative decrease, as
TCP's congestion control (Jacobson, "Congestion Avoidance and Control", SIGCOMM 1988). Real deployments are
limited by their tokens per minute, not by a constant. Each deployment has its own pool of
`MAX_PER_DEPLOYMENT` threads, so one that is throttled never holds another's threads.
A deployment that could not be asked (`InfrastructureError`: gone, not ready, 5xx after the tries) stops the
whole pass: it says nothing about the model, so nothing is scored and the caller tries again later. Other
failures (a call timing out) are an error for that example: they count against the error-rate gate, not
against the whole evaluation.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from shared.azure.chat import ChatFn, ChatReply, InfrastructureError, JudgeFn, RateLimited
from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader, NotApplicable, Reply, grade
from shared.evaluation.metrics import ExampleResult, score

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 8      # calls in flight per deployment to start with (run.json evaluation.concurrency)
MAX_PER_DEPLOYMENT = 16  # the most calls in flight one deployment is given (and its pool's threads)
RATE_LIMIT_TRIES = 8     # a call met by 429 this many times is an error for its example
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0


def _pause_seconds(retry_after: float | None) -> float:
    return min(MAX_RETRY_AFTER_S, retry_after if retry_after and retry_after > 0 else DEFAULT_RETRY_AFTER_S)


class DeploymentLimit:
    """Calls in flight to one deployment, adapted to what it answers (module docstring)."""

    def __init__(self, start: int = MAX_CONCURRENCY, ceiling: int = MAX_PER_DEPLOYMENT) -> None:
        self._cond = threading.Condition()
        self.limit = max(1, min(start, ceiling))
        self.ceiling = ceiling
        self.in_flight = 0
        self.peak = self.limit
        self.throttled = 0       # 429s met
        self._answered = 0       # in the current window
        self._growing_fast = True
        self._resume_at = 0.0

    def acquire(self) -> None:
        with self._cond:
            while True:
                wait = self._resume_at - time.monotonic()
                if wait <= 0 and self.in_flight < self.limit:
                    self.in_flight += 1
                    return
                self._cond.wait(timeout=min(1.0, wait) if wait > 0 else 1.0)

    def release(self, outcome: str, retry_after: float | None = None) -> None:
        """`outcome`: "answered" (counts toward growth), "throttled" (a 429) or "failed" (neither)."""
        with self._cond:
            self.in_flight -= 1
            if outcome == "throttled":
                self.throttled += 1
                self.limit = max(1, self.limit // 2)
                self._growing_fast, self._answered = False, 0
                self._resume_at = max(self._resume_at, time.monotonic() + _pause_seconds(retry_after))
            elif outcome == "answered":
                self._answered += 1
                if self._answered >= self.limit:
                    self._answered = 0
                    self.limit = min(self.ceiling, self.limit * 2 if self._growing_fast else self.limit + 1)
                    self.peak = max(self.peak, self.limit)
            self._cond.notify_all()


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
                   judge: JudgeFn | None = None, limits: dict[str, DeploymentLimit] | None = None
                   ) -> dict[str, list[ExampleResult]]:
    """Results per candidate name, in example order. `max_workers`: each deployment's starting limit of calls
    in flight (`limits`, one per deployment, may be handed in to read afterwards)."""
    limits = limits if limits is not None else {}
    for c in candidates:
        limits.setdefault(c.deployment, DeploymentLimit(max_workers))
    broken: list[InfrastructureError] = []   # the first deployment that could not be asked stops every call

    def call(deployment: str, example: Example) -> ChatReply:
        limit = limits[deployment]
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            limit.acquire()
            if broken:
                limit.release("failed")
                raise broken[0]
            try:
                reply = chat(deployment, example)
            except RateLimited as exc:
                limit.release("throttled", exc.retry_after)
                if attempt == RATE_LIMIT_TRIES:
                    raise
                continue
            except BaseException:
                limit.release("failed")
                raise
            limit.release("answered")
            return reply
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
        return replace(result, flagged=reply.flagged,
                       scores={k: v for k, v in scores.items() if isinstance(v, float)},
                       grading_failed=tuple(k for k, v in scores.items() if v is None),
                       not_applicable=tuple(k for k, v in scores.items() if v is NotApplicable))

    # a pool per deployment, as large as its ceiling: a throttled deployment's waiting calls hold its own
    # threads, never another deployment's
    with contextlib.ExitStack() as stack:
        pools = {d: stack.enter_context(ThreadPoolExecutor(max_workers=limits[d].ceiling, thread_name_prefix="eval"))
                 for d in dict.fromkeys(c.deployment for c in candidates)}
        futures: dict[str, list[Future[ExampleResult]]] = {c.name: [] for c in candidates}
        for i, ex in enumerate(examples):
            for c in candidates:
                futures[c.name].append(pools[c.deployment].submit(one, c, i, ex))
        return {name: [f.result() for f in fs] for name, fs in futures.items()}


def _grade(grader: Grader, answer: Reply, example: Example, judge: JudgeFn | None, who: str
           ) -> float | type[NotApplicable] | None:
    """The grader's score; None when it could not score (a judge call that failed): the example then leaves
    every candidate's comparison for that grader and the report counts it under `grader_errors`;
    NotApplicable when the grader does not grade this kind of reference."""
    try:
        return float(grade(grader, answer, example, judge))
    except NotApplicable:
        return NotApplicable
    except Exception as exc:  # noqa: BLE001 — one grading failure must not stop the evaluation
        log.warning("%s: grader %s failed on line %d: %s", who, grader.name, example.line, _describe(exc))
        return None


def _calls_text(calls: Sequence[dict[str, str]]) -> str:
    return "; ".join(f"{c.get('name')}({c.get('arguments', '')})" for c in calls)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).replace("\n", " ")[:200]
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"
