"""Graders: each kind scores a right answer above a wrong one, defaults follow the data's shape, run.json
graders are validated, and a reinforcement run's own grader is reused."""
from __future__ import annotations

import json

import pytest

from shared.evaluation import graders as g
from shared.evaluation.examples import Example, parse_example
from shared.run.settings import RunSettingsError, parse_run_settings

REFERENCE = "Open Settings, choose Billing and press Download invoice."
PARAPHRASE = "In the app, go to Settings, choose Billing and press Download invoice there."
WRONG = "That is a good question; the answer depends on the details of your situation."


def _example(reference: str = REFERENCE, calls: tuple[dict[str, str], ...] = (), **item: str) -> Example:
    return Example(line=1, messages=[{"role": "user", "content": "How do I get my invoice?"}], reference=reference,
                   reference_tool_calls=calls, item=dict(item))


@pytest.mark.parametrize("grader", [
    g.Grader("f1", "token_f1"),
    *[g.Grader(m, "text_similarity", metric=m) for m in g.SIMILARITY_METRICS],
])
def test_every_text_similarity_metric_prefers_a_paraphrase_to_a_generic_answer(grader: g.Grader) -> None:
    good = g.grade(grader, g.Reply(PARAPHRASE), _example())
    bad = g.grade(grader, g.Reply(WRONG), _example())
    assert 0.0 <= bad < good <= 1.0
    assert g.grade(grader, g.Reply(REFERENCE), _example()) == pytest.approx(1.0)


@pytest.mark.parametrize(("operation", "answer", "expected"), [
    ("eq", REFERENCE, 1.0), ("eq", REFERENCE.lower(), 0.0),
    ("ne", WRONG, 1.0), ("ne", REFERENCE, 0.0),
    ("like", f"Sure! {REFERENCE}", 1.0), ("like", f"Sure! {REFERENCE.upper()}", 0.0),
    ("ilike", f"Sure! {REFERENCE.upper()}", 1.0), ("ilike", WRONG, 0.0),
])
def test_string_check_operations_as_azure_defines_them(operation: str, answer: str, expected: float) -> None:
    assert g.grade(g.Grader("s", "string_check", operation=operation), g.Reply(answer), _example()) == expected


def test_json_graders_score_validity_and_each_field() -> None:
    reference = json.dumps({"intent": "refund", "order": {"id": "A-17", "items": 2}})
    match, valid = g.Grader("m", "json_match"), g.Grader("v", "json_valid")
    example = _example(reference)
    assert g.grade(match, g.Reply(json.dumps({"order": {"items": 2, "id": "A-17"}, "intent": "refund"})),
                   example) == 1.0                                  # key order does not matter
    assert g.grade(match, g.Reply('{"intent": "refund", "order": {"id": "B-1", "items": 2}}'),
                   example) == pytest.approx(2 / 3)                 # one field of three wrong
    assert g.grade(match, g.Reply("intent: refund"), example) == 0.0 and g.grade(valid, g.Reply("intent"), example) == 0
    assert g.grade(valid, g.Reply('{"anything": 1}'), example) == 1.0


def test_tool_call_match_needs_the_name_then_the_arguments() -> None:
    want = ({"name": "get_weather", "arguments": '{"city": "Oslo", "unit": "C"}'},)
    grader, example = g.Grader("t", "tool_call_match"), _example("", calls=want)
    assert g.grade(grader, g.Reply("", want), example) == 1.0
    assert g.grade(grader, g.Reply("", ({"name": "get_weather", "arguments": '{"city": "Bergen", "unit": "C"}'},)),
                   example) == pytest.approx(0.75)
    assert g.grade(grader, g.Reply("", ({"name": "get_time", "arguments": '{"city": "Oslo", "unit": "C"}'},)),
                   example) == 0.0
    assert g.grade(grader, g.Reply("It is sunny in Oslo."), example) == 0.0        # answered instead of calling
    assert g.grade(grader, g.Reply("", want * 2), example) == pytest.approx(0.5)   # an extra call costs


def test_model_grader_asks_the_hub_deployment_with_the_rubric_and_clamps_its_number() -> None:
    asked: list[tuple[str, list[dict[str, str]]]] = []

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        asked.append((deployment, messages))
        return "0.9" if "Billing" in messages[-1]["content"].split("Answer to grade:")[1] else "score: 7"

    grader = g.Grader("judge", "score_model", model="gpt-4o-judge", rubric="be strict about the menu path")
    assert g.grade(grader, g.Reply(PARAPHRASE), _example(), judge) == 0.9
    assert g.grade(grader, g.Reply(WRONG), _example(), judge) == 1.0   # "7" is clamped to 1 …
    assert g.grade(grader, g.Reply(WRONG), _example(), lambda d, m: "no idea") == 0.0   # … no number is 0
    deployment, messages = asked[0]
    assert deployment == "gpt-4o-judge" and "be strict about the menu path" in messages[0]["content"]
    assert REFERENCE in messages[1]["content"] and "How do I get my invoice?" in messages[1]["content"]
    assert grader.describe()["prompt"].startswith("You grade an assistant's answer")


def test_defaults_follow_the_shape_of_the_references() -> None:
    text = [_example()]
    as_json = [_example('{"a": 1}'), _example('{"a": 2}')]
    tools = [_example("", calls=({"name": "f", "arguments": "{}"},))]
    assert [x.name for x in g.defaults_for(text)] == ["token_f1", "rouge_l", "fuzzy_match", "string_check_eq"]
    assert [x.kind for x in g.defaults_for(as_json)][:2] == ["json_match", "json_valid"]
    assert g.defaults_for(tools)[0].kind == "tool_call_match"


def test_reference_tool_calls_and_reinforcement_fields_are_read_from_the_eval_file() -> None:
    line = {"messages": [{"role": "user", "content": "Weather in Oslo?"},
                         {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
                             "name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]}
    example = parse_example(line, 3)
    assert isinstance(example, Example)
    assert example.reference_tool_calls == ({"name": "get_weather", "arguments": '{"city": "Oslo"}'},)
    rft = parse_example({"messages": [{"role": "user", "content": "2+2?"}], "answer": "4"}, 4)
    assert isinstance(rft, Example) and rft.item == {"answer": "4"} and rft.reference == "4"


def test_a_reinforcement_runs_own_grader_is_reused_with_its_item_reference() -> None:
    rft = {"type": "multi", "graders": {
        "exact": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                  "operation": "eq"},
        "close": {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                  "evaluation_metric": "fuzzy_match"},
        "code": {"type": "python", "source": "def grade(s, i): return 1"}}, "calculate_output": "exact"}
    used = g.from_reinforcement(rft)
    assert [(x.name, x.kind) for x in used] == [("exact", "string_check"), ("close", "text_similarity")]
    example = _example("ignored", answer="4")
    assert g.grade(used[0], g.Reply("4"), example) == 1.0 and g.grade(used[0], g.Reply("5"), example) == 0.0


def test_run_json_graders_are_validated_and_named() -> None:
    settings = parse_run_settings({"evaluation": {"graders": [
        {"type": "text_similarity", "evaluation_metric": "rouge_l"},
        {"type": "score_model", "name": "judge", "model": "gpt-4o-judge", "rubric": "strict"}]},
        "thresholds": {"grader": "judge"}})
    assert [x.effective_name() for x in settings.evaluation.graders or []] == ["text_similarity_rouge_l", "judge"]
    for bad, says in [
        ({"graders": [{"type": "string_check"}]}, "needs 'operation'"),
        ({"graders": [{"type": "text_similarity", "evaluation_metric": "cosine"}]}, "evaluation_metric"),
        ({"graders": [{"type": "token_f1", "model": "x"}]}, "applies only to a score_model"),
        ({"graders": [{"type": "token_f1"}, {"type": "token_f1"}]}, "names must differ"),
        ({"graders": []}, "evaluation.graders"),
    ]:
        with pytest.raises(RunSettingsError, match=says):
            parse_run_settings({"evaluation": bad})
    with pytest.raises(RunSettingsError, match="thresholds.grader 'judge' is not one of"):
        parse_run_settings({"evaluation": {"graders": [{"type": "token_f1"}]}, "thresholds": {"grader": "judge"}})
