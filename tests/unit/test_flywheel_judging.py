"""The flywheel's judge, with a scripted one: the harvest's grader filter keeps only what the judge scored high
enough (a judge that fails passes nothing), and the drift watch's production leg scrubs before judging,
never counts a judge failure as a score, and calls drift only when the production answers are below the
held-out ones beyond both samples' noise."""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import pytest
from fakes import ScriptedChat, make_deps

from shared.run import privacy
from shared.run.topology import HarvestPolicy
from shared.stages import drift_production
from shared.stages.drift import warning
from shared.stages.harvest import judged
from shared.validation.curation import Curated, Exchange

JUDGE = HarvestPolicy(judge="judge", min_judge_score=0.5, drift_examples=10)


def example(question: str, answer: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def scripted(scores: dict[str, Any]) -> Any:
    """A judge answering the score given for the answer it is shown (an exception is raised)."""
    def judge(model: str, messages: list[dict[str, str]]) -> str:
        assert model == "judge" and "no reference answer" in messages[0]["content"]
        answer = re.search(r"Answer to grade:\n(.*)", messages[1]["content"], re.DOTALL)
        said = scores[answer.group(1) if answer else ""]
        if isinstance(said, Exception):
            raise said
        return str(said)
    return judge


def deps_with(judge: Any) -> Any:
    return make_deps(chat=ScriptedChat(None, judge))


def test_the_grader_filter_keeps_what_the_judge_scored_high_enough_and_nothing_it_could_not_score() -> None:
    examples = [example("q1", "good"), example("q2", "poor"), example("q3", "mute"), example("q4", "down"),
                example("q5", "edge")]
    deps = deps_with(scripted({"good": "0.9", "poor": "0.2", "mute": "I cannot grade this",
                               "down": TimeoutError("judge unreachable"), "edge": "0.5"}))
    curated = Curated()
    kept = judged(deps, JUDGE, examples, curated)
    assert kept == [examples[0], examples[4]]
    assert curated.dropped == Counter({"judged below min_judge_score": 1, "judge could not score it": 2})


def test_a_grader_filter_needs_a_judge() -> None:
    with pytest.raises(ValueError, match="name the judge"):
        HarvestPolicy(min_judge_score=0.5)


def test_production_is_scrubbed_before_anything_is_graded_and_ratings_do_not_filter_it() -> None:
    def ex(question: str, reference: str | None = None, rating: float | None = None) -> Exchange:
        return Exchange(id=question, messages=({"role": "user", "content": question},
                                               {"role": "assistant", "content": "an answer"}),
                        rating=rating, reference=reference)
    sample = [ex("Send it to maria.lopez@fabrikam.com"), ex("plain question", rating=1.0),
              ex("plain question", rating=1.0), ex("with a reference", "the right answer"),
              ex("referenced", "call +1 425 555 0147 for it"), ex("no answer at all")][:-1]
    sample.append(Exchange(id="m", messages=({"role": "user", "content": "no answer at all"},)))
    kept, dropped = drift_production.scrub(sample, HarvestPolicy(min_rating=3))
    assert [(e["messages"][0]["content"], r) for e, r in kept] == [("plain question", None),
                                                                   ("with a reference", "the right answer")]
    assert dropped == {"duplicate": 1, "malformed: no answer": 1, "personal data or secret": 1,
                       "personal data or secret (reference)": 1}
    masked, _ = drift_production.scrub(sample, HarvestPolicy(privacy="mask"))
    assert not privacy.scan_decoded(json.dumps(masked).encode()) and len(masked) == 4


def _judged(production: dict[str, Any], held_out: dict[str, Any]) -> dict[str, Any]:
    deps = deps_with(scripted({**production, **held_out}))
    examples = [example(f"production {i}", answer) for i, answer in enumerate(production)]
    return drift_production.judged(deps, "judge", JUDGE, examples, [(f"held out {i}", a) for i, a in
                                                                    enumerate(held_out)])


def test_production_answers_judged_below_the_held_out_ones_are_drift() -> None:
    leg = _judged({f"p{i}": "0.1" if i % 2 else "0.2" for i in range(12)},
                  {f"h{i}": "0.9" if i % 2 else "0.8" for i in range(12)})
    assert leg["drifted"] and leg["examples"] == 12 and leg["baseline_examples"] == 12 and leg["shortfall"][1] < 0


def test_a_judge_that_fails_is_no_evidence_of_drift() -> None:
    """Failing on every production answer is not a score of 0 for each: nothing was measured."""
    leg = _judged({f"p{i}": RuntimeError("429") for i in range(12)}, {f"h{i}": "0.9" for i in range(12)})
    assert not leg["drifted"] and leg["examples"] == 0 and leg["failed"] == 12
    leg = _judged({f"p{i}": "0.1" for i in range(12)}, {f"h{i}": "no number" for i in range(12)})
    assert not leg["drifted"] and leg["judge_failed_on_held_out"] == 12 and "none of the served" in leg["skipped"]


def test_a_small_difference_on_few_answers_is_not_drift() -> None:
    leg = _judged({"p0": "0.6", "p1": "0.8", "p2": "0.7"}, {f"h{i}": "0.8" if i % 2 else "0.9" for i in range(10)})
    assert not leg["drifted"] and leg["shortfall"][0] < 0 < leg["shortfall"][1]


def test_the_warning_says_which_leg_drifted_and_against_what() -> None:
    check = {"environment": "prod", "deployment": "support-bot", "run_id": "champ", "grader": "token_f1",
             "mean": 0.91, "floor": 0.9, "examples": 5, "drifted": True, "held_out_drifted": False,
             "checked_at": "2026-12-07T12:00:00+00:00",
             "production": {"judged": {"judge": "judge", "examples": 10, "drifted": True, "baseline_examples": 5,
                                       "interval": {"mean": 0.1, "low": 0.0, "high": 0.3},
                                       "baseline": {"mean": 0.9, "low": 0.7, "high": 1.0}}}}
    said = warning(check)
    assert said == ("drift: prod/support-bot (run champ) the judge judge scored 10 production answers 0.100 "
                    "[0.000, 0.300], below 0.900 [0.700, 1.000] for its answers to 5 held-out examples "
                    "(checked 2026-12-07T12:00)")
    older = {k: v for k, v in check.items() if k not in ("held_out_drifted", "production")}   # before this leg
    assert "scored token_f1 0.910 on 5 of its held-out examples, below the 0.900" in warning(older)


def _reply(finish: str, content: str | None, **message: Any) -> Any:
    from openai.types.chat import ChatCompletion
    return ChatCompletion.model_validate({
        "id": "c", "object": "chat.completion", "created": 0, "model": "teacher",
        "choices": [{"index": 0, "finish_reason": finish,
                     "message": {"role": "assistant", "content": content, **message}}]})


@pytest.mark.parametrize(("reply", "reason"), [
    (_reply("content_filter", "Here is how to"), "teacher refused: content filter"),   # a part is no answer
    (_reply("length", "The first step is"), "teacher's answer cut off at its token limit"),
    (_reply("stop", None, refusal="I can't help with that."), "teacher refused to answer"),
    (_reply("stop", ""), "teacher answered nothing"),
])
def test_a_teacher_reply_that_is_not_a_whole_answer_is_no_answer(reply: Any, reason: str) -> None:
    from shared.stages.harvest import _teacher_answer
    assert _teacher_answer(reply) == (reason, None)


def test_a_teacher_answer_with_text_or_tool_calls_is_kept_as_the_assistant_message() -> None:
    from shared.stages.harvest import _teacher_answer
    assert _teacher_answer(_reply("stop", "Open Settings.")) == (None, {"role": "assistant",
                                                                       "content": "Open Settings."})
    call = {"id": "call_1", "type": "function", "function": {"name": "reset", "arguments": "{}"}}
    assert _teacher_answer(_reply("tool_calls", None, tool_calls=[call])) == (
        None, {"role": "assistant", "tool_calls": [call]})


def test_a_judge_that_cannot_be_reached_at_all_stops_the_tick_rather_than_drop_everything() -> None:
    from shared.stages.harvest import JudgeUnavailable
    examples = [example("q1", "good"), example("q2", "poor")]
    deps = deps_with(scripted({"good": ConnectionError("down"), "poor": ConnectionError("down")}))
    with pytest.raises(JudgeUnavailable, match="none of 2 answers"):
        judged(deps, JUDGE, examples, Curated())


def test_a_judge_deployment_not_serving_yet_is_asked_again() -> None:
    """Azure answers 404 DeploymentNotFound for a while after a deployment's ARM Succeeded."""
    import httpx2 as httpx
    import openai

    from shared.azure.chat import openai_judge_fn
    not_ready = openai.NotFoundError("The API deployment for this resource does not exist.", body=None,
                                     response=httpx.Response(404, request=httpx.Request("POST", "https://hub/x")))

    class Client:
        def __init__(self, failures: int) -> None:
            self.failures, self.calls = failures, 0
            self.chat = self
            self.completions = self

        def create(self, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls <= self.failures:
                raise not_ready
            return _reply("stop", "0.75")

    waited: list[float] = []
    soon = Client(failures=2)
    assert openai_judge_fn(soon, sleep=waited.append)("judge", []) == "0.75"
    assert soon.calls == 3 and waited == [0.5, 1.0]
    with pytest.raises(openai.NotFoundError):   # still not there after its tries: the caller counts it
        openai_judge_fn(Client(failures=3), sleep=waited.append)("judge", [])
