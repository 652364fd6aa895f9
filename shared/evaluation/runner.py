"""Ask every candidate every held-out question, with bounded concurrency, timing each call.

The model call is a `ChatFn` so unit tests pass a fake; the stage passes one built on the openai SDK
(`openai_chat_fn`), whose own retries handle 429/5xx with Retry-After. A call that still fails is an
error for that example (it counts against the error-rate gate), not a failure of the whole evaluation.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from shared.evaluation.examples import Example
from shared.evaluation.metrics import ExampleResult, score

log = logging.getLogger(__name__)

MAX_CONCURRENCY = 8      # enough to finish 200 × 4 calls in minutes without tripping every rate limit
MAX_TOKENS = 512         # answers longer than this are not what a held-out reference looks like
CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ChatReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


# (deployment name, example) → reply; raises on failure.
ChatFn = Callable[[str, Example], ChatReply]


@dataclass(frozen=True)
class Candidate:
    name: str                 # label in reports: "final", "base", "checkpoint step 20"
    kind: str                 # "final" | "checkpoint" | "base"
    model: str                # the model id deployed (fine-tuned model, checkpoint id or base model)
    deployment: str           # the temporary deployment name on the hub
    sku: str = "standard"
    capacity: int = 1
    step: int | None = None   # checkpoints: training step


def run_candidates(candidates: Sequence[Candidate], examples: Sequence[Example], chat: ChatFn, *,
                   max_workers: int = MAX_CONCURRENCY) -> dict[str, list[ExampleResult]]:
    """Results per candidate name, in example order. One pool for all calls keeps the total concurrency
    bounded no matter how many candidates there are."""
    def one(candidate: Candidate, index: int, example: Example) -> ExampleResult:
        started = time.perf_counter()
        try:
            reply = chat(candidate.deployment, example)
        except Exception as exc:  # noqa: BLE001 — any failure of one call is an error for that example
            log.warning("%s: example line %d failed: %s", candidate.name, example.line, _describe(exc))
            return ExampleResult(index=index, answer=None, latency_ms=None, error=_describe(exc))
        latency_ms = (time.perf_counter() - started) * 1000
        return score(index, reply.text, example.reference, latency_ms=latency_ms,
                     prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="eval") as pool:
        futures = {c.name: [pool.submit(one, c, i, ex) for i, ex in enumerate(examples)] for c in candidates}
        return {name: [f.result() for f in fs] for name, fs in futures.items()}


def openai_chat_fn(client: Any, base_model: str, *, max_tokens: int = MAX_TOKENS) -> ChatFn:
    """A ChatFn on an AzureOpenAI client: deterministic decoding, the example's tools if it has any."""
    # Reasoning models (o-series) reject temperature and take max_completion_tokens instead.
    reasoning = base_model.lower().startswith("o")

    def chat(deployment: str, example: Example) -> ChatReply:
        kwargs: dict[str, Any] = {"model": deployment, "messages": example.messages, "timeout": CALL_TIMEOUT_S}
        if reasoning:
            kwargs["max_completion_tokens"] = max_tokens
        else:
            kwargs.update(temperature=0, max_tokens=max_tokens)
        if example.tools:
            kwargs["tools"] = example.tools
        response = client.chat.completions.create(**kwargs)
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice is not None and choice.message is not None else ""
        usage = response.usage
        return ChatReply(text=text, prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                         completion_tokens=getattr(usage, "completion_tokens", 0) or 0)

    return chat


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(exc).replace("\n", " ")[:200]
    return f"{type(exc).__name__}{f' {status}' if status else ''}: {text}"
