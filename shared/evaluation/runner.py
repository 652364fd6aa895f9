"""Ask every candidate every held-out question, with bounded concurrency, timing and grading each call.

The model call is a `ChatFn` so unit tests pass a fake; the stage passes one built on the openai SDK
(`openai_chat_fn`) with the SDK's own retries off for 429: a rate limit backs off the whole pool (every
worker waits out the Retry-After, not just the call that met it), then the call is tried again, a bounded
number of times. Other failures (the SDK retries 5xx) are an error for that example: they count against the
error-rate gate, not against the whole evaluation.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader, JudgeFn, Reply, grade
from shared.evaluation.metrics import ExampleResult, score

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 8      # default calls in flight for all candidates together (run.json evaluation.concurrency)
MAX_TOKENS = 512         # answers longer than this are not what a held-out reference looks like
CALL_TIMEOUT_S = 60.0
RATE_LIMIT_TRIES = 8     # a call met by 429 this many times is an error for its example
SERVER_ERROR_TRIES = 3   # 5xx or a dropped connection: as the SDK's default (2 retries)
DEFAULT_RETRY_AFTER_S = 1.0
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tool_calls: tuple[dict[str, str], ...] = ()
    flagged: bool = False          # content filter: a category above "safe", or the answer was filtered


class RateLimited(Exception):
    """429 from the deployment; `retry_after` seconds from its Retry-After (or retry-after-ms) header."""

    def __init__(self, retry_after: float | None, message: str = "429 Too Many Requests") -> None:
        super().__init__(message)
        self.retry_after = retry_after


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


# (deployment name, example) → reply; raises on failure (RateLimited for a 429).
ChatFn = Callable[[str, Example], ChatReply]


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

    def call(deployment: str, example: Example) -> ChatReply:
        for attempt in range(1, RATE_LIMIT_TRIES + 1):
            backoff.wait()
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
        except Exception as exc:  # noqa: BLE001 — any failure of one call is an error for that example
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


def openai_chat_fn(client: Any, base_model: str, *, max_tokens: int = MAX_TOKENS) -> ChatFn:
    """A ChatFn on an AzureOpenAI client: deterministic decoding, the example's tools if it has any."""
    # Reasoning models (o-series) reject temperature and take max_completion_tokens instead.
    reasoning = base_model.lower().startswith("o")
    import openai
    client = client.with_options(max_retries=0) if hasattr(client, "with_options") else client

    def chat(deployment: str, example: Example) -> ChatReply:
        for attempt in range(SERVER_ERROR_TRIES):
            try:
                return _ask(deployment, example)
            except openai.RateLimitError as exc:   # the pool waits (run_candidates), not this call alone
                raise RateLimited(retry_after_seconds(exc.response.headers), str(exc)[:200]) from exc
            except (openai.InternalServerError, openai.APIConnectionError):
                # the SDK's own retries are off (they would retry 429 call by call): 5xx and dropped
                # connections get the same few tries with a short backoff here
                if attempt == SERVER_ERROR_TRIES - 1:
                    raise
                time.sleep(0.5 * 2 ** attempt)
        raise AssertionError("unreachable")

    def _ask(deployment: str, example: Example) -> ChatReply:
        kwargs: dict[str, Any] = {"model": deployment, "messages": example.messages, "timeout": CALL_TIMEOUT_S}
        if reasoning:
            kwargs["max_completion_tokens"] = max_tokens
        else:
            kwargs.update(temperature=0, max_tokens=max_tokens)
        if example.tools:
            kwargs["tools"] = example.tools
        response = client.chat.completions.create(**kwargs)
        choice = response.choices[0] if response.choices else None
        message = choice.message if choice is not None else None
        text = (message.content or "") if message is not None else ""
        calls = tuple({"name": c.function.name, "arguments": c.function.arguments or ""}
                      for c in (getattr(message, "tool_calls", None) or []) if getattr(c, "function", None))
        usage = response.usage
        return ChatReply(text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                         completion_tokens=getattr(usage, "completion_tokens", 0) or 0, tool_calls=calls,
                         flagged=content_flagged(response.model_dump()))

    return chat


def openai_judge_fn(client: Any) -> JudgeFn:
    """The model grader's call: deterministic, short (a number is all it should say)."""
    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        response = client.chat.completions.create(model=deployment, messages=messages, temperature=0,
                                                  max_tokens=8, timeout=CALL_TIMEOUT_S)
        choice = response.choices[0] if response.choices else None
        return (choice.message.content or "") if choice is not None and choice.message is not None else ""
    return judge


def content_flagged(body: dict[str, Any]) -> bool:
    """Azure's content filter annotations on a chat completion (Learn, "Content filtering": every choice's
    `content_filter_results` and the request's `prompt_filter_results`, per category `filtered` and
    `severity` safe/low/medium/high, or `detected` for the binary classifiers): flagged when any category
    was filtered, detected, or rated above safe, or the choice finished with `content_filter`."""
    results = [c.get("content_filter_results") for c in body.get("choices") or [] if isinstance(c, dict)]
    results += [p.get("content_filter_results") for p in body.get("prompt_filter_results") or []
                if isinstance(p, dict)]
    if any(isinstance(c, dict) and c.get("finish_reason") == "content_filter" for c in body.get("choices") or []):
        return True
    for result in results:
        for category in (result or {}).values() if isinstance(result, dict) else ():
            if isinstance(category, dict) and (category.get("filtered") or category.get("detected")
                                               or category.get("severity") not in (None, "safe")):
                return True
    return False


def retry_after_seconds(headers: Any) -> float | None:
    """Azure sends `retry-after-ms` (and `x-ms-retry-after-ms`) beside `Retry-After` (seconds)."""
    for name, scale in (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name) if headers is not None else None
        try:
            if value is not None:
                return float(value) / scale
        except (TypeError, ValueError):
            continue
    return None


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).replace("\n", " ")[:200]
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"
