"""Graders as the service runs them: reinforcement graders' templates, score_model, label_model and multi;
graders refused at intake; identical short and non-Latin answers on every text metric; tool-call references;
json_match types; fuzzy_match; the judge's reply read as a score or a grader error; BLEU against sacrebleu;
token_f1 on answers SQuAD's normalisation empties. Each case states what a user would notice."""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from shared.evaluation.examples import Example
from shared.evaluation.graders import Grader, NotApplicable, Reply, grade, json_match
from shared.evaluation.rft import grade as rft_grade
from shared.evaluation.similarity import METRICS, similarity
from shared.run.settings import RunSettingsError, parse_run_settings

# --- reinforcement graders, as the service runs them -----------------------------------------------------
ITEM = {"order": {"city": {"name": "Zürich"}, "lines": [{"sku": "A-1"}]}, "answer": "7", "q": "How many?"}
EXAMPLE = Example(line=1, messages=[{"role": "user", "content": "?"}], reference="7", item=ITEM)


def _rft(spec: dict[str, Any], text: str, judge: Any = None) -> float:
    return rft_grade(spec, text, (), EXAMPLE, judge)


@pytest.mark.parametrize(("spec", "answer", "expected"), [
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}",
      "reference": "{{ item.order.city.name }}"}, "Zürich", 1.0),
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}",
      "reference": "{{item.order.lines[0].sku}}"}, "A-1", 1.0),
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}", "reference": "Zürich"},
     "Zürich", 1.0),                                                                       # a literal reference
    ({"type": "string_check", "operation": "like", "input": "City: {{sample.output_text}}!",
      "reference": "City: {{item.order.city.name}}"}, "Zürich", 1.0),                  # text around templates
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_json.city}}",
      "reference": "{{item.order.city.name}}"}, '{"city": "Zürich"}', 1.0),
    ({"type": "string_check", "operation": "ilike", "input": "{{sample.output_text}}",
      "reference": "ZÜRICH"}, "zürich", 1.0),
    ({"type": "text_similarity", "evaluation_metric": "fuzzy_match", "input": "{{sample.output_text}}",
      "reference": "{{item.order.city.name}}"}, "zurich", pytest.approx(5 / 6, abs=0.02)),
])
def test_rft_templates_fill_nested_items_literals_and_sample_fields(spec: dict[str, Any], answer: str,
                                                                    expected: Any) -> None:
    assert _rft(spec, answer) == expected


def _judge(reply: str, seen: list[Any]) -> Any:
    def ask(model: str, messages: list[dict[str, str]]) -> str:
        seen.append((model, messages))
        return reply
    return ask


@pytest.mark.parametrize(("reply", "bounds", "expected"), [
    ("7", [0, 10], 0.7), ("7.5", [0, 10], 0.75), ("12", [0, 10], 1.0), ("-1", [0, 10], 0.0),
    ("3", [1, 5], 0.5), ('{"result": 4}', [0, 8], 0.5), ("no idea", [0, 10], 0.0), ("0.9", None, 0.9),
])
def test_score_model_renders_its_input_and_puts_its_range_on_0_to_1(reply: str, bounds: Any, expected: float) -> None:
    seen: list[Any] = []
    spec = {"type": "score_model", "model": "judge-dep", "input": [
        {"role": "system", "content": "Grade {{item.q}} against {{item.answer}}."},
        {"role": "user", "content": "Answer: {{sample.output_text}}"}], **({"range": bounds} if bounds else {})}
    assert _rft(spec, "seven", _judge(reply, seen)) == pytest.approx(expected)
    [(model, messages)] = seen
    assert model == "judge-dep" and "{{" not in json.dumps(messages)
    assert messages[0]["content"] == "Grade How many? against 7." and messages[1]["content"] == "Answer: seven"


def test_score_model_input_given_as_content_parts_reaches_the_judge_as_text() -> None:
    seen: list[Any] = []
    spec = {"type": "score_model", "model": "j", "range": [0, 1], "input": [
        {"role": "user", "content": [{"type": "input_text", "text": 'Is "{{sample.output_text}}" {{item.answer}}?'}]}]}
    _rft(spec, 'say "7"', _judge("1", seen))
    assert seen[0][1][0]["content"] == 'Is "say "7"" 7?'


def test_label_model_passes_only_on_a_passing_label() -> None:
    spec = {"type": "label_model", "model": "j", "labels": ["correct", "incorrect"], "passing_labels": ["correct"],
            "input": [{"role": "user", "content": "{{sample.output_text}} vs {{item.answer}}"}]}
    assert _rft(spec, "7", _judge("correct", [])) == 1.0
    assert _rft(spec, "8", _judge("incorrect", [])) == 0.0


@pytest.mark.parametrize(("formula", "expected"), [
    ("0.25 * exact + 0.75 * close", 0.25 * 1 + 0.75 * 0.5), ("min(exact, close)", 0.5), ("close ^ 2", 0.25),
    ("(exact + close) / 2", 0.75), ("exact - 2 * close - 1", 0.0), ("max(exact, close) * 3", 1.0),
])
def test_multi_computes_calculate_output_from_its_graders(formula: str, expected: float) -> None:
    spec = {"type": "multi", "calculate_output": formula, "graders": {
        "exact": {"type": "string_check", "operation": "eq", "input": "{{sample.output_text}}",
                  "reference": "{{item.answer}}"},
        "close": {"type": "score_model", "model": "j", "range": [0, 10],
                  "input": [{"role": "user", "content": "{{sample.output_text}}"}]}}}
    assert _rft(spec, "7", _judge("5", [])) == pytest.approx(expected)


@pytest.mark.parametrize(("grader", "said"), [
    ({"type": "python", "name": "p", "source": "def grade(sample, item): return 1.0"},
     "python graders are not accepted by Azure's v1 fine-tuning API"),
    ({"type": "multi", "name": "m", "calculate_output": "p", "graders": {
        "p": {"type": "python", "name": "p", "source": "def grade(s, i): return 1"}}},
     "python graders are not accepted"),
    ({"type": "label_model", "name": "l", "model": "j", "labels": ["a", "b"], "passing_labels": ["a"],
      "input": [{"role": "user", "content": "{{sample.output_text}}"}]},
     "label_model graders are not accepted by Azure's v1 fine-tuning API"),
    ({"type": "multi", "name": "m", "calculate_output": "__import__('os')", "graders": {
        "a": {"type": "string_check", "name": "a", "input": "{{sample.output_text}}", "reference": "x",
              "operation": "eq"}}}, "calculate_output"),
    ({"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{answer}}",
      "operation": "eq"}, "a template is {{item.<field>}} or {{sample.<field>}}"),
])
def test_graders_the_evaluation_cannot_run_are_refused_at_intake_with_the_reason(grader: dict[str, Any],
                                                                                 said: str) -> None:
    with pytest.raises(RunSettingsError) as refused:
        parse_run_settings({"method": "reinforcement", "base_model": "o4-mini-2025-04-16", "grader": grader})
    assert said in str(refused.value)


# --- text_similarity: identical short and non-Latin answers score 1.0 on every metric ---------------------
IDENTICAL = ["Yes", "42", "No.", "I", "a", "OK!", "3.14", "Paris", "New York", "東京", "北京大学", "はい",
             "Москва", "Да", "Αθήνα", "नमस्ते दुनिया", "مرحبا بالعالم", "שלום", "안녕하세요", "สวัสดีครับ", "ကျေးဇူး",
             "¿Qué?", "Straße", "👍", "C++", "e.g.", "$5", "Tiếng Việt", "ሰላም", "ជំរាបសួរ"]


@pytest.mark.parametrize("metric", METRICS)
def test_an_identical_answer_scores_one_on_every_metric_in_every_script(metric: str) -> None:
    wrong = {text: similarity(metric, text, text) for text in IDENTICAL if similarity(metric, text, text) != 1.0}
    assert wrong == {}


@pytest.mark.parametrize("metric", METRICS)
def test_a_different_answer_in_a_non_latin_script_scores_below_one(metric: str) -> None:
    for answer, reference in [("Москва", "Киев"), ("東京", "大阪"), ("Αθήνα", "Σπάρτη"), ("नमस्ते", "धन्यवाद")]:
        assert similarity(metric, answer, reference) < 1.0, (answer, reference)


# --- tool-call references ---------------------------------------------------------------------------------
CALL = {"name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "c"})}
TOOL_EXAMPLE = Example(line=1, messages=[{"role": "user", "content": "Weather in Paris?"}], reference="",
                       reference_tool_calls=(CALL,))


@pytest.mark.parametrize(("calls", "expected"), [
    ((CALL,), 1.0),
    (({"name": "get_weather", "arguments": '{"unit": "c", "city": "Paris"}'},), 1.0),      # key order
    (({"name": "delete_account", "arguments": CALL["arguments"]},), 0.0),                  # wrong function
    (({"name": "get_weather", "arguments": '{"city": "Rome", "unit": "c"}'},), 0.75),
    (({"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c", "notify": true}'},), "below 1"),
    (({"name": "get_weather", "arguments": "{not json"},), 0.5),
    ((CALL, CALL), 0.5),                                                                    # an extra call
    ((), 0.0),
])
def test_a_tool_call_reference_is_graded_by_tool_call_match(calls: tuple[dict[str, str], ...], expected: Any) -> None:
    score = grade(Grader("t", "tool_call_match"), Reply("", calls), TOOL_EXAMPLE)
    assert score < 1.0 if expected == "below 1" else score == pytest.approx(expected)


@pytest.mark.parametrize("grader", [Grader("f1", "token_f1"), Grader("j", "json_match"),
                                    Grader("s", "string_check", operation="eq"),
                                    Grader("r", "text_similarity", metric="rouge_l")])
def test_no_text_grader_scores_a_wrong_tool_call(grader: Grader) -> None:
    wrong = Reply("get_weather(...)", ({"name": "delete_account", "arguments": "{}"},))
    with pytest.raises(NotApplicable):
        grade(grader, wrong, TOOL_EXAMPLE)


def test_parallel_calls_in_another_order_are_the_same_calls() -> None:
    other = {"name": "get_time", "arguments": '{"tz": "CET"}'}
    example = replace(TOOL_EXAMPLE, reference_tool_calls=(CALL, other))
    assert grade(Grader("t", "tool_call_match"), Reply("", (other, CALL)), example) == 1.0


# --- json_match compares JSON types strictly ---------------------------------------------------------------
@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ('{"ok": true}', '{"ok": 1}', 0.0), ('{"ok": 1}', '{"ok": true}', 0.0), ('{"ok": false}', '{"ok": 0}', 0.0),
    ('{"n": 1.0}', '{"n": 1}', 1.0), ('{"n": "1"}', '{"n": 1}', 0.0), ('{"n": null}', '{"n": 0}', 0.0),
    ('{"n": null}', '{"n": null}', 1.0), ("{}", '{"n": null}', 0.0), ('{"a": []}', '{"a": {}}', 0.0),
    ('{"a": [1, 2]}', '{"a": [2, 1]}', 0.0), ('{"a": {"b": "x", "c": 2}}', '{"a": {"b": "x", "c": 3}}', 0.5),
    ('[true, "1"]', '[true, 1]', 0.5), ("not json", '{"a": 1}', 0.0), ('{"a": 1e2}', '{"a": 100}', 1.0),
])
def test_json_match_types(answer: str, reference: str, expected: float) -> None:
    assert json_match(answer, reference) == expected


# --- fuzzy_match: rapidfuzz WRatio with default_process (OpenAI's graders guide example) --------------------
@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("PARIS", "paris", 1.0), ("Paris!", "paris", 1.0), ("  paris ", "Paris", 1.0), ("Lyon", "Paris", "below 0.5"),
])
def test_fuzzy_match_ignores_case_and_punctuation(answer: str, reference: str, expected: Any) -> None:
    value = similarity("fuzzy_match", answer, reference)
    assert value < 0.5 if expected == "below 0.5" else value == expected


# --- the evaluation's own score_model: a reply that is no score is a grader error, never a 0 or a 1 ----------
@pytest.mark.parametrize(("reply", "expected"), [
    ("0.8", 0.8), ("8/10", 0.8), ("80%", 0.8), ("Score: 1", 1.0), ("1.0 (fully correct)", 1.0), (".5", 0.5),
    ("0", 0.0), ("7", None), ("-0.5", None), ("no idea", None), ("", None), ("3/0", None),
])
def test_a_judge_reply_is_read_as_a_score_or_counted_as_a_grader_error(reply: str, expected: float | None) -> None:
    from shared.evaluation.runner import _grade
    example = Example(line=1, messages=[{"role": "user", "content": "q"}], reference="r")
    got = _grade(Grader("judge", "score_model", model="j"), Reply("a"), example, lambda model, messages: reply, "final")
    assert got == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("spec", "expected"), [
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_tools[0].function.name}}",
      "reference": "{{item.tool}}"}, 1.0),
    ({"type": "string_check", "operation": "eq", "input": "{{sample.output_tools[0].function.name}}",
      "reference": "delete_account"}, 0.0),
])
def test_rft_templates_read_the_answers_tool_calls(spec: dict[str, Any], expected: float) -> None:
    example = replace(EXAMPLE, item={"tool": "get_weather"})
    assert rft_grade(spec, "", (CALL,), example, None) == expected


@pytest.mark.parametrize(("answer", "reference"), [
    ("Yes", "Yes"), ("42", "42"), ("東京", "東京"), ("Москва", "Москва"), ("No, it is not.", "No, it's not."),
    ("Москва столица России", "Москва — столица России"), ("The cat sat.", "A cat sat on the mat."),
    ("Αθήνα είναι η πρωτεύουσα", "Η Αθήνα είναι πρωτεύουσα"), ("3.14", "3.14159"), ("I", "I am"),
])
def test_bleu_agrees_with_sacrebleu_on_short_and_non_latin_answers(answer: str, reference: str) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    assert similarity("bleu", answer, reference) == pytest.approx(
        sacrebleu.sentence_bleu(answer, [reference]).score / 100, abs=1e-9)


@pytest.mark.parametrize(("answer", "reference"), [
    ("Москва столица России", "Москва — столица"), ("東京は日本の首都です", "日本の首都は東京"),
    ("Η Αθήνα είναι πρωτεύουσα", "Αθήνα πρωτεύουσα"), ("नमस्ते दुनिया", "नमस्ते"),
])
def test_rouge_sees_the_overlap_of_non_latin_answers(answer: str, reference: str) -> None:
    for metric in ("rouge_1", "rouge_l"):
        assert 0.0 < similarity(metric, answer, reference) < 1.0, metric


# --- token_f1 / exact match on answers SQuAD's normalisation empties -----------------------------------------
@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("", "A", 0.0), ("The", "A", 0.0), ("an", "a", 0.0), ("?", "!", 0.0), ("A", "A", 1.0), ("a", "A", 1.0),
    ("B", "A", 0.0), ("", "", 1.0), ("The cat", "a cat", 1.0),
])
def test_token_f1_and_exact_match_on_multiple_choice_letters(answer: str, reference: str, expected: float) -> None:
    from shared.evaluation.metrics import exact_match, token_f1
    assert token_f1(answer, reference) == expected and exact_match(answer, reference) == expected
