"""Issue 19 probed again as an outside reviewer would, with cases that are in no other test: small drops at
intake and `ftops validate`, judge failures on one candidate and on both, equal challengers, selection
across checkpoints, reinforcement graders, identical short and non-Latin answers on every text metric,
tool-call references, json_match types, fuzzy_match. Each case states what a user would notice."""
from __future__ import annotations

import argparse
import io
import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ftops_cli import validate as cli
from shared.evaluation.examples import Example
from shared.evaluation.gates import gate_candidates
from shared.evaluation.graders import Grader, NotApplicable, Reply, grade, json_match
from shared.evaluation.metrics import ExampleResult, aggregate
from shared.evaluation.rft import grade as rft_grade
from shared.evaluation.runner import Candidate
from shared.evaluation.similarity import METRICS, similarity
from shared.run.heldout import MIN_HELD_OUT, MIN_TRAIN
from shared.run.settings import RunSettingsError, Thresholds, parse_run_settings
from shared.validation.splitting import spool_split


# --- enough data: small drops at intake and `ftops validate` -------------------------------------------------
def _lines(n: int, tag: str = "q") -> bytes:
    return b"".join(json.dumps({"messages": [{"role": "user", "content": f"Where is {tag} number {i}?"},
                                             {"role": "assistant", "content": f"At shelf {i}."}]}).encode() + b"\n"
                    for i in range(n))


def _validate(path: Path) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = cli.run(parser.parse_args(["validate", str(path)]), stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


@pytest.mark.parametrize("n", [1, 2, 33, 41])
def test_a_small_single_file_is_refused_by_ftops_validate_with_the_numbers(tmp_path: Path, n: int) -> None:
    path = tmp_path / "small.jsonl"
    path.write_bytes(_lines(n))
    code, out = _validate(path)
    assert code == 1 and "too_few_to_split" in out and f"{n} in train.jsonl" in out


def test_a_run_folder_with_a_short_eval_file_is_refused_by_ftops_validate(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_lines(50))
    (folder / "eval.jsonl").write_bytes(_lines(MIN_HELD_OUT - 1, "held"))
    (folder / "run.json").write_text("{}")
    code, out = _validate(folder)
    assert code == 1 and f"eval.jsonl has {MIN_HELD_OUT - 1}" in out and "add 1" in out


def test_the_size_the_refusal_asks_for_is_accepted_whatever_the_seed() -> None:
    """The refusal says "about N in all": a drop of N examples must then pass, for any seed (the hash split
    can put more than its share on the validation side)."""
    problem = spool_split({"train": lambda: [_lines(20)]}, parse_run_settings(None)).problem
    assert problem is not None
    asked = int(problem.split("about ")[1].split(" in all")[0])
    for seed in range(40):
        prepared = spool_split({"train": lambda: [_lines(asked)]}, parse_run_settings({"seed": seed}))
        assert prepared.problem is None, (seed, prepared.counts)
        assert prepared.counts["eval"] >= MIN_HELD_OUT and prepared.counts["train"] >= MIN_TRAIN


# --- failures are not zeros: judge failures on one candidate and on both ----------------------------------
def _rows(scores: list[float | None], grader: str = "judge") -> list[ExampleResult]:
    return [ExampleResult(index=i, answer="x", latency_ms=10.0,
                          scores={} if s is None else {grader: s},
                          grading_failed=(grader,) if s is None else ()) for i, s in enumerate(scores)]


def _gate(results: dict[str, list[ExampleResult]], **thresholds: Any) -> dict[str, Any]:
    cands = [Candidate(n, n if n in ("final", "base", "champion") else "checkpoint", f"m-{n}", f"d-{n}",
                       step=int(n.split("-")[1]) if n.startswith("ckpt") else None) for n in results]
    metrics = {n: aggregate(r, graders=["judge"]) for n, r in results.items()}
    chosen, verdicts = gate_candidates(cands, results, metrics, Thresholds(**thresholds), grader="judge")
    return {"chosen": chosen.name, "gates": {g.name: g for g in verdicts[chosen.name].gates},
            "passed": verdicts[chosen.name].passed}


def test_a_judge_failing_on_a_third_of_the_base_answers_only_cannot_promote_an_equal_model() -> None:
    rng = random.Random(3)
    truth = [float(rng.random() < 0.7) for _ in range(90)]
    base = [None if i % 3 == 0 else s for i, s in enumerate(truth)]   # the judge fails on the base's answers only
    out = _gate({"final": _rows(truth), "base": _rows(base)}, min_score=0.0)
    assert not out["gates"]["min_improvement"].passed                # equally right: no improvement
    lost = out["gates"]["max_grader_error_rate"]
    assert not lost.passed and "30" in lost.detail and "base" in lost.detail   # the comparison lost a third


def test_a_judge_failing_on_the_candidate_fails_its_gate_with_the_reason() -> None:
    final = [1.0] * 36 + [None] * 4
    out = _gate({"final": _rows(final), "base": _rows([0.0] * 40)}, min_score=0.0)
    gate = out["gates"]["max_grader_error_rate"]
    assert not gate.passed and "4 of 40" in gate.detail and "judge" in gate.detail


def test_a_judge_failing_on_both_on_the_same_few_examples_is_counted_not_scored() -> None:
    final = [1.0] * 98 + [None] * 2
    base = [0.0] * 98 + [None] * 2
    out = _gate({"final": _rows(final), "base": _rows(base)}, min_score=0.0)
    assert out["passed"] and out["gates"]["min_improvement"].interval["mean"] == 1.0   # the 2 left out, not 0
    assert "2 of 100" in out["gates"]["max_grader_error_rate"].detail


# --- equal challengers: non-inferior passes, superior does not ------------------------------------------
def test_an_identical_retrain_is_non_inferior_but_not_superior() -> None:
    rng = random.Random(11)
    served = [round(rng.random(), 2) for _ in range(200)]
    runs = {"final": _rows(served), "base": _rows([0.0] * 200), "champion": _rows(served)}
    assert _gate(runs, min_score=0.0)["gates"]["min_improvement_over_champion"].passed
    superior = _gate(runs, min_score=0.0, champion_rule="superior")["gates"]["min_improvement_over_champion"]
    assert not superior.passed and "better than the champion" in superior.detail


@pytest.mark.parametrize("differ", [0.09, 0.32])
def test_an_equally_good_challenger_passes_non_inferiority_as_often_as_the_docs_say(differ: float) -> None:
    """docs/evaluation.md: an equally good challenger with different answers passes with probability
    ≈ Φ(margin·√n/σ_d − z). Equal accuracy, the two models' 0/1 answers differing on `differ` of the 200
    examples (half each way): σ_d = √differ."""
    from statistics import NormalDist
    rng = random.Random(12)
    runs, passes = 300, 0
    for _ in range(runs):
        champion, final = [], []
        for _ in range(200):
            u = rng.random()
            both = float(rng.random() < 0.8)
            champion.append(1.0 if u < differ / 2 else 0.0 if u < differ else both)
            final.append(0.0 if u < differ / 2 else 1.0 if u < differ else both)
        out = _gate({"final": _rows(final), "base": _rows([0.0] * 200), "champion": _rows(champion)}, min_score=0.0)
        passes += out["gates"]["min_improvement_over_champion"].passed
    expected = NormalDist().cdf(0.1 * 200 ** 0.5 / differ ** 0.5 - 1.96)
    assert abs(passes / runs - expected) <= 0.08, (passes / runs, expected)


# --- selection across checkpoints -----------------------------------------------------------------------
def test_picking_the_best_of_four_at_the_threshold_does_not_raise_false_passes() -> None:
    """Four fine-tuned candidates (final and three checkpoints) whose true gain over base is exactly the
    threshold, continuous scores: the chosen one passes min_improvement at most about 2.5 % of the time."""
    rng = random.Random(21)
    runs, passes = 600, 0
    for _ in range(runs):
        base = [rng.random() * 0.8 for _ in range(60)]
        results = {"base": _rows(base)}
        for name in ("final", "ckpt-10", "ckpt-20", "ckpt-30"):
            results[name] = _rows([min(1.0, max(0.0, b + 0.05 + rng.gauss(0, 0.2))) for b in base])
        passes += _gate(results, min_score=0.0)["gates"]["min_improvement"].passed
    assert passes / runs <= 0.045


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


# --- the report: worst examples that are actually bad, figures that are not invented ------------------------
def _report_of(final: list[ExampleResult], base: list[ExampleResult]) -> dict[str, Any]:
    from shared.evaluation.gates import Gate
    from shared.evaluation.report import build_report
    n = len(final)
    examples = [Example(line=i + 1, messages=[{"role": "user", "content": f"q{i}"}], reference=f"a{i}")
                for i in range(n)]
    cands = [Candidate("final", "final", "ft", "d1"), Candidate("base", "base", "gpt-4.1-mini", "d2")]
    results = {"final": final, "base": base}
    return build_report(run_id="r", base_model="gpt-4.1-mini", fine_tuned_model="ft", eval_path="e",
                        examples=examples, available=n, skipped_lines=[], candidates=cands, results=results,
                        metrics={k: aggregate(v, graders=["judge"]) for k, v in results.items()},
                        skipped_candidates=[], chosen=cands[0], gates=[Gate("min_score", 1.0, 0.5, True, "ok")],
                        training_metrics=None, gate_grader="judge")


def test_the_worst_examples_are_the_lowest_scores_and_a_failed_grading_is_never_shown_as_a_zero() -> None:
    final = _rows([1.0, 0.2, None, 0.9, 0.0, 1.0])
    base = _rows([0.5, None, 0.0, 0.4, None, 0.1])
    worst = _report_of(final, base)["worst_examples"]
    assert [w["line"] for w in worst] == [5, 2, 4]                     # 0.0, 0.2, 0.9; never a 1.0 or an unscored
    by_line = {w["line"]: w for w in worst}
    assert by_line[5]["base_score"] is None and by_line[2]["base_score"] is None   # the judge failed there
    assert by_line[4]["base_score"] == 0.4


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


def test_grader_failures_that_leave_fewer_than_the_minimum_fail_the_held_out_gate() -> None:
    final = [1.0] * 30 + [None] * 10
    out = _gate({"final": _rows(final), "base": _rows([0.0] * 40)}, min_score=0.0, max_grader_error_rate=0.5)
    assert not out["gates"]["min_held_out"].passed and "30 held-out examples" in out["gates"]["min_held_out"].detail


def test_a_better_scoring_checkpoint_with_flagged_answers_is_not_chosen_over_a_final_model_that_passes() -> None:
    base = _rows([0.0] * 60)
    final = _rows([1.0] * 50 + [0.0] * 10)
    checkpoint = [replace(r, flagged=i < 6) for i, r in enumerate(_rows([1.0] * 58 + [0.0] * 2))]
    out = _gate({"final": final, "base": base, "ckpt-10": checkpoint}, min_score=0.5)
    assert out["chosen"] == "final" and out["passed"]


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


def test_judge_failures_on_different_examples_of_each_model_add_up() -> None:
    final = [None if i < 4 else 1.0 for i in range(100)]            # 4 % on the candidate's answers
    base = [None if 4 <= i < 8 else 0.0 for i in range(100)]        # 4 % on the base's, other examples
    gate = _gate({"final": _rows(final), "base": _rows(base)}, min_score=0.0)["gates"]["max_grader_error_rate"]
    assert not gate.passed and gate.value == pytest.approx(0.08) and "lost 8 of 100" in gate.detail


# --- token_f1 / exact match on answers SQuAD's normalisation empties -----------------------------------------
@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("", "A", 0.0), ("The", "A", 0.0), ("an", "a", 0.0), ("?", "!", 0.0), ("A", "A", 1.0), ("a", "A", 1.0),
    ("B", "A", 0.0), ("", "", 1.0), ("The cat", "a cat", 1.0),
])
def test_token_f1_and_exact_match_on_multiple_choice_letters(answer: str, reference: str, expected: float) -> None:
    from shared.evaluation.metrics import exact_match, token_f1
    assert token_f1(answer, reference) == expected and exact_match(answer, reference) == expected


def test_a_reference_from_the_item_on_chat_data_is_refused_not_graded_against_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_lines(60))
    (folder / "run.json").write_text(json.dumps({"evaluation": {"graders": [
        {"type": "string_check", "operation": "eq", "reference": "{{item.answer}}"}]}}))
    code, out = _validate(folder)
    assert code == 1 and "'reference' reads a field of a reinforcement line's item" in out
    with pytest.raises(RunSettingsError, match="remove 'reference'"):
        parse_run_settings({"method": "dpo", "evaluation": {"graders": [
            {"type": "token_f1", "reference": "{{item.answer}}"}]}})


def test_an_equally_good_challenger_passes_the_superior_rule_no_more_than_its_level() -> None:
    rng = random.Random(31)
    runs, passes = 400, 0
    for _ in range(runs):
        champion = [round(min(1.0, max(0.0, rng.gauss(0.7, 0.2))), 2) for _ in range(120)]
        final = [round(min(1.0, max(0.0, rng.gauss(0.7, 0.2))), 2) for _ in range(120)]
        out = _gate({"final": _rows(final), "base": _rows([0.0] * 120), "champion": _rows(champion)},
                    min_score=0.0, champion_rule="superior")
        passes += out["gates"]["min_improvement_over_champion"].passed
    assert passes / runs <= 0.04                                   # one-sided 2.5 %, with simulation noise
