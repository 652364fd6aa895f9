"""Chat with a deployment through the openai SDK: the evaluation's candidates and its model grader (judge).

A `ChatFn` answers one held-out example from one deployment; a 429 becomes `RateLimited` (with the wait the
deployment asked for) so the caller can back off the whole pool; 5xx, dropped connections and a 404 (the
deployment is gone, or Azure's "created within the last 5 minutes, please wait") get a few tries here, the
SDK's own retries being off, then become `InfrastructureError`: the deployment could not be asked, which says
nothing about the model, so the evaluation stops and is tried again later rather than scoring it. A prompt
the content filter refused (400 `content_filter`) is the model's deployment answering: a flagged, empty reply.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.evaluation.examples import Example

MAX_TOKENS = 512         # answers longer than this are not what a held-out reference looks like
CALL_TIMEOUT_S = 60.0
SERVER_ERROR_TRIES = 3   # 5xx or a dropped connection: as the SDK's default (2 retries)


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


class InfrastructureError(Exception):
    """The deployment could not be asked (404: gone or not ready yet; 5xx or no connection after the tries):
    not an answer of the model. Transient for the evaluation as a whole."""


# (deployment name, example) → reply; raises on failure (RateLimited for a 429, InfrastructureError).
ChatFn = Callable[[str, "Example"], ChatReply]


# (judge deployment, messages) → the judge's answer text.
JudgeFn = Callable[[str, list[dict[str, str]]], str]


def openai_chat_fn(client: Any, base_model: str, *, max_tokens: int = MAX_TOKENS,
                   sleep: Callable[[float], None] = time.sleep) -> ChatFn:
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
            except openai.BadRequestError as exc:
                if error_code(exc) != "content_filter":
                    raise
                return ChatReply(text="", flagged=True)   # the filter refused the prompt: the deployment answered
            except (openai.InternalServerError, openai.APIConnectionError, openai.NotFoundError) as exc:
                # the SDK's own retries are off (they would retry 429 call by call): 5xx, dropped connections
                # and a deployment not found get the same few tries with a short backoff here
                if attempt < SERVER_ERROR_TRIES - 1:
                    sleep(0.5 * 2 ** attempt)
                elif isinstance(exc, openai.APITimeoutError):
                    raise   # this call took too long: an error of this example, as a slow model's answer is
                else:
                    raise InfrastructureError(f"deployment {deployment}: {_status(exc)}{str(exc)[:300]}") from exc
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


def error_code(exc: Any) -> str | None:
    body = getattr(exc, "body", None)
    error = body.get("error", body) if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else getattr(exc, "code", None)


def _status(exc: Any) -> str:
    status = getattr(exc, "status_code", None)
    return f"{status} " if status else ""


def openai_judge_fn(client: Any, *, sleep: Callable[[float], None] = time.sleep) -> JudgeFn:
    """The model grader's call: deterministic, short (a number is all it should say). The SDK retries 429
    and 5xx; a 404 (a judge deployment just created answers DeploymentNotFound for a while after ARM's
    Succeeded) gets the same few tries as a candidate's call, then propagates: the caller counts it."""
    import openai

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        for attempt in range(SERVER_ERROR_TRIES):
            try:
                response = client.chat.completions.create(model=deployment, messages=messages, temperature=0,
                                                          max_tokens=8, timeout=CALL_TIMEOUT_S)
            except openai.NotFoundError:
                if attempt == SERVER_ERROR_TRIES - 1:
                    raise
                sleep(0.5 * 2 ** attempt)
                continue
            choice = response.choices[0] if response.choices else None
            return (choice.message.content or "") if choice is not None and choice.message is not None else ""
        raise AssertionError("unreachable")
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


