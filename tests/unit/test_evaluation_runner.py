"""The runner: calls in flight adapt per deployment (grow until 429, halve and pause on it), content-filter flags read."""
from __future__ import annotations

import threading
import time

from shared.azure.chat import ChatReply, RateLimited, content_flagged, retry_after_seconds
from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader
from shared.evaluation.runner import MAX_PER_DEPLOYMENT, Candidate, run_candidates

EXAMPLES = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}") for i in range(30)]
CANDIDATES = [Candidate(n, "final" if n == "final" else "checkpoint", n, f"dep-{n}") for n in ("final", "c1", "c2")]


def test_a_429_pauses_that_deployment_for_its_retry_after_then_every_call_is_answered() -> None:
    lock = threading.Lock()
    starts: list[tuple[float, str]] = []
    limited_at: list[float] = []

    def chat(deployment: str, example: Example) -> ChatReply:
        with lock:
            starts.append((time.monotonic(), deployment))
            first_429 = deployment == "dep-final" and example.line == 5 and not limited_at
            if first_429:
                limited_at.append(time.monotonic())
        if first_429:
            raise RateLimited(0.4)
        time.sleep(0.005 if deployment == "dep-final" else 0.06)
        return ChatReply(f"a{example.line - 1}")

    limits: dict = {}
    results = run_candidates(CANDIDATES, EXAMPLES, chat, max_workers=4, graders=[Grader("f1", "token_f1")],
                             limits=limits)
    assert all(r.ok and r.scores["f1"] == 1.0 for rows in results.values() for r in rows)   # retried, answered
    resumed = limited_at[0] + 0.4
    later = [(t, d) for t, d in starts if t > limited_at[0] + 0.02]
    # after the 429, no call to that deployment starts until its pause is over; the others go on
    assert all(t >= resumed - 0.01 for t, d in later if d == "dep-final")
    assert any(t < resumed - 0.05 for t, d in later if d != "dep-final")   # the others were not paused
    assert limits["dep-final"].throttled == 1 and limits["dep-c1"].throttled == 0


def _capacity_chat(capacity: dict[str, int], seen: dict[str, int]) -> object:
    """A deployment answers 429 (Retry-After 50 ms) while more than `capacity` of its calls are in flight."""
    lock = threading.Lock()
    in_flight = dict.fromkeys(capacity, 0)

    def chat(deployment: str, example: Example) -> ChatReply:
        with lock:
            in_flight[deployment] += 1
            seen[deployment] = max(seen.get(deployment, 0), in_flight[deployment])
            over = in_flight[deployment] > capacity[deployment]
        try:
            if over:
                raise RateLimited(0.05)
            time.sleep(0.03)
            return ChatReply(f"a{example.line - 1}")
        finally:
            with lock:
                in_flight[deployment] -= 1
    return chat


def test_concurrency_grows_until_the_deployment_says_429_and_settles_near_its_limit() -> None:
    """Before: a fixed 8 calls in flight for every candidate together, whatever the deployments could take."""
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}")
                for i in range(400)]
    candidates = [Candidate("final", "final", "f", "dep-fast"), Candidate("base", "base", "b", "dep-small")]
    seen: dict[str, int] = {}
    limits: dict = {}
    results = run_candidates(candidates, examples, _capacity_chat({"dep-fast": 1000, "dep-small": 6}, seen),
                             max_workers=4, limits=limits)
    assert all(r.ok for rows in results.values() for r in rows)
    assert limits["dep-fast"].peak == MAX_PER_DEPLOYMENT and seen["dep-fast"] >= 12   # 4 at the start
    assert limits["dep-small"].throttled >= 1 and limits["dep-small"].limit <= 12   # backed off to near 6
    assert limits["dep-fast"].throttled == 0


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
