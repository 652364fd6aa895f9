"""The runner: one bounded pool for every candidate, a 429 pauses all of it, content-filter flags read."""
from __future__ import annotations

import threading
import time

from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader
from shared.evaluation.runner import (
    Candidate,
    ChatReply,
    RateLimited,
    content_flagged,
    retry_after_seconds,
    run_candidates,
)

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
