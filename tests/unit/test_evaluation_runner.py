"""The runner: one bounded pool for every candidate, a 429 pauses all of it, content-filter flags read."""
from __future__ import annotations

import threading
import time

from shared.azure.chat import ChatReply, RateLimited, content_flagged, retry_after_seconds
from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader
from shared.evaluation.runner import Candidate, run_candidates

EXAMPLES = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}") for i in range(30)]
CANDIDATES = [Candidate(n, "final" if n == "final" else "checkpoint", n, f"dep-{n}") for n in ("final", "c1", "c2")]


def test_a_429_pauses_the_whole_pool_for_its_retry_after_then_every_call_is_answered() -> None:
    lock = threading.Lock()
    starts: list[tuple[float, str]] = []
    limited_at: list[float] = []
    in_flight = peak = 0

    def chat(deployment: str, example: Example) -> ChatReply:
        nonlocal in_flight, peak
        with lock:
            starts.append((time.monotonic(), deployment))
            in_flight += 1
            peak = max(peak, in_flight)
            first_429 = deployment == "dep-final" and example.line == 5 and not limited_at
            if first_429:
                limited_at.append(time.monotonic())
        try:
            if first_429:
                raise RateLimited(0.4)
            time.sleep(0.005)
            return ChatReply(f"a{example.line - 1}")
        finally:
            with lock:
                in_flight -= 1

    results = run_candidates(CANDIDATES, EXAMPLES, chat, max_workers=4, graders=[Grader("f1", "token_f1")])
    assert all(r.ok and r.scores["f1"] == 1.0 for rows in results.values() for r in rows)   # retried, answered
    assert peak <= 4                                                      # bounded across candidates
    resumed = limited_at[0] + 0.4
    # after the 429, no call of any candidate starts until the pause is over (in-flight ones finish)
    later = [(t, d) for t, d in starts if t > limited_at[0] + 0.02]
    assert later and all(t >= resumed - 0.01 for t, _ in later)
    assert {d for _, d in later} == {"dep-final", "dep-c1", "dep-c2"}


def test_retry_after_headers_in_the_order_azure_sends_them() -> None:
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({}) is None


def test_content_filter_annotations_above_safe_or_filtered_are_flagged() -> None:
    safe = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}
    body = {"choices": [{"finish_reason": "stop", "content_filter_results": safe}],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": safe}]}
    assert not content_flagged(body)
    low = {**safe, "violence": {"filtered": False, "severity": "low"}}
    assert content_flagged({"choices": [{"finish_reason": "stop", "content_filter_results": low}]})
    assert content_flagged({"choices": [{"finish_reason": "content_filter", "content_filter_results": {}}]})
    jailbreak = {"jailbreak": {"filtered": False, "detected": True}}
    assert content_flagged({"choices": [], "prompt_filter_results": [{"content_filter_results": jailbreak}]})


class _FlakyClient:
    """An AzureOpenAI stand-in: answers from a script of exceptions and completions."""

    def __init__(self, script: list[object]) -> None:
        self.script, self.calls = script, 0
        self.chat = self
        self.completions = self

    def with_options(self, **_: object) -> _FlakyClient:
        return self

    def create(self, **_: object) -> object:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def test_the_sdk_call_retries_5xx_itself_and_turns_429_into_a_pool_pause() -> None:
    import httpx2 as httpx
    import openai
    from openai.types.chat import ChatCompletion

    from shared.azure.chat import openai_chat_fn
    request = httpx.Request("POST", "https://hub/openai/deployments/d/chat/completions")
    server = openai.InternalServerError("boom", response=httpx.Response(500, request=request), body=None)
    limited = openai.RateLimitError("slow", body=None, response=httpx.Response(
        429, request=request, headers={"retry-after-ms": "250", "retry-after": "1"}))
    safe = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "low"}}
    completion = ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "content_filter_results": safe,
                     "message": {"role": "assistant", "content": None, "tool_calls": [
                         {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
    client = _FlakyClient([server, completion, limited])
    chat = openai_chat_fn(client, "gpt-4.1-mini")
    reply = chat("d", EXAMPLES[0])
    assert client.calls == 2 and reply.tool_calls == ({"name": "f", "arguments": '{"a": 1}'},)
    assert reply.flagged and (reply.prompt_tokens, reply.completion_tokens) == (7, 3)
    try:
        chat("d", EXAMPLES[0])
    except RateLimited as exc:
        assert exc.retry_after == 0.25
    else:
        raise AssertionError("a 429 must reach the pool")


def test_a_deployment_not_found_or_failing_is_infrastructure_not_an_answer() -> None:
    import httpx2 as httpx
    import openai

    from shared.azure.chat import InfrastructureError, openai_chat_fn
    request = httpx.Request("POST", "https://hub/openai/deployments/d/chat/completions")
    gone = openai.NotFoundError("The API deployment for this resource does not exist. If you created the deployment "
                                "within the last 5 minutes, please wait a moment and try again.",
                                response=httpx.Response(404, request=request), body={"code": "DeploymentNotFound"})
    server = openai.InternalServerError("boom", response=httpx.Response(503, request=request), body=None)
    waits: list[float] = []
    for failure in (gone, server):
        client = _FlakyClient([failure] * 3)
        chat = openai_chat_fn(client, "gpt-4.1-mini", sleep=waits.append)
        try:
            chat("d", EXAMPLES[0])
        except InfrastructureError as exc:
            assert "deployment d" in str(exc) and client.calls == 3
        else:
            raise AssertionError("a deployment that cannot be asked must not become an answer")
    assert waits == [0.5, 1.0, 0.5, 1.0]


def test_a_prompt_the_content_filter_refused_is_a_flagged_answer() -> None:
    import httpx2 as httpx
    import openai

    from shared.azure.chat import openai_chat_fn
    request = httpx.Request("POST", "https://hub/openai/deployments/d/chat/completions")
    refused = openai.BadRequestError("filtered", response=httpx.Response(400, request=request),
                                     body={"code": "content_filter", "message": "filtered"})
    reply = openai_chat_fn(_FlakyClient([refused]), "gpt-4.1-mini")("d", EXAMPLES[0])
    assert reply.flagged and reply.text == ""


def test_one_deployment_that_cannot_be_asked_stops_the_pass_instead_of_scoring_zeros() -> None:
    from shared.azure.chat import InfrastructureError
    asked: list[str] = []

    def chat(deployment: str, example: Example) -> ChatReply:
        asked.append(deployment)
        if deployment == "final" and len(asked) > 1:
            raise InfrastructureError("deployment final: 404 gone")
        return ChatReply("x")

    candidates = [Candidate("final", "final", "m", "final"), Candidate("base", "base", "b", "base")]
    try:
        run_candidates(candidates, EXAMPLES * 10, chat, max_workers=1)
    except InfrastructureError:
        pass
    else:
        raise AssertionError("the pass went on and scored a missing deployment as wrong answers")
    assert len(asked) < 2 * len(EXAMPLES * 10)   # the rest of the pass was not asked
