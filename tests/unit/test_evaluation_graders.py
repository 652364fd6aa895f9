"""Graders: each kind scores a right answer above a wrong one, defaults follow the data's shape, run.json
graders are validated, and a reinforcement run's own grader is reused."""
from __future__ import annotations

import json

import pytest

from shared.evaluation import graders as g
from shared.evaluation.examples import Example, parse_example
from shared.evaluation.similarity import METRICS, bleu
from shared.run.graderspec import SpecError, parse_formula, render
from shared.run.settings import RunSettingsError, parse_run_settings

REFERENCE = "Open Settings, choose Billing and press Download invoice."
PARAPHRASE = "In the app, go to Settings, choose Billing and press Download invoice there."
WRONG = "That is a good question; the answer depends on the details of your situation."


def _example(reference: str = REFERENCE, calls: tuple[dict[str, str], ...] = (), **item: str) -> Example:
    return Example(line=1, messages=[{"role": "user", "content": "How do I get my invoice?"}], reference=reference,
                   reference_tool_calls=calls, item=dict(item))


@pytest.mark.parametrize("grader", [
    g.Grader("f1", "token_f1"),
    *[g.Grader(m, "text_similarity", metric=m) for m in METRICS],
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


def test_model_grader_asks_the_hub_deployment_with_the_rubric_and_reads_only_a_score() -> None:
    asked: list[tuple[str, list[dict[str, str]]]] = []

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        asked.append((deployment, messages))
        return "0.9" if "Billing" in messages[-1]["content"].split("Answer to grade:")[1] else "score: 7"

    grader = g.Grader("judge", "score_model", model="gpt-4o-judge", rubric="be strict about the menu path")
    assert g.grade(grader, g.Reply(PARAPHRASE), _example(), judge) == 0.9
    with pytest.raises(g.UnreadableJudge, match="not a score between 0 and 1"):   # "7" once scored a wrong answer 1.0
        g.grade(grader, g.Reply(WRONG), _example(), judge)
    with pytest.raises(g.UnreadableJudge, match="no score"):   # … and no number a 0: both are grader errors
        g.grade(grader, g.Reply(WRONG), _example(), lambda d, m: "no idea")
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


def _rft(grader: dict, said: str = "", calls: tuple[dict[str, str], ...] = (), judge=None, **item: object) -> float:
    [used] = g.from_reinforcement(grader)
    example = Example(line=1, messages=[{"role": "user", "content": "q"}], reference="", item=dict(item))
    return g.grade(used, g.Reply(said, calls), example, judge)


def test_a_reinforcement_runs_own_grader_is_run_as_the_service_runs_it() -> None:
    """Before: the multi's calculate_output was ignored (each sub-grader scored alone) and the python one was
    silently dropped. Now the combined reward, and the python grader is refused at intake."""
    rft = {"type": "multi", "graders": {
        "exact": {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                  "operation": "eq"},
        "close": {"type": "text_similarity", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
                  "evaluation_metric": "fuzzy_match"}}, "calculate_output": "0.25 * exact + 0.75 * close"}
    assert _rft(rft, "4", answer="4") == 1.0
    assert _rft(rft, "5", answer="4") == 0.0
    assert _rft(rft, "four!", answer="FOUR") == pytest.approx(0.75)   # fuzzy: case and punctuation ignored
    with pytest.raises(RunSettingsError, match="python graders"):   # Azure's v1 API refuses them too
        parse_run_settings({"method": "reinforcement", "grader": {
            **rft, "graders": {**rft["graders"], "code": {"type": "python", "source": "def grade(s, i): return 1"}}}})


@pytest.mark.parametrize(("template", "expected"), [
    ("{{item.answer}}", "42"),
    ("{{ item.order.id }}", "A-17"),                          # nested, spaces inside the braces
    ("{{item.order.lines[1].sku}}", "B2"),
    ("{{item.order}}", '{"id": "A-17", "lines": [{"sku": "A1"}, {"sku": "B2"}]}'),   # not text: JSON
    ('{"sku": "{{item.order.lines[0].sku}}"}', '{"sku": "A1"}'),                      # literal text around it
    ("{{sample.output_text}}", "the answer"),
    ("{{sample.output_tools[0].function.name}}", "get_order"),
    ("{{sample.output_json.total}}", ""),                    # the answer is not JSON: nothing
    ("{{item.missing}}", ""),
    ("no template", "no template"),
])
def test_templates_render_as_the_graders_guide_describes(template: str, expected: str) -> None:
    from shared.evaluation.rft import sample_of
    ns = {"item": {"answer": 42, "order": {"id": "A-17", "lines": [{"sku": "A1"}, {"sku": "B2"}]}},
          "sample": sample_of("the answer", ({"name": "get_order", "arguments": "{}"},))}
    assert render(template, ns) == expected


@pytest.mark.parametrize(("formula", "scores", "expected"), [
    ("0.5 * a + 0.5 * b", {"a": 1.0, "b": 0.0}, 0.5),
    ("(a + b) / 2", {"a": 0.4, "b": 0.8}, 0.6),
    ("a ^ 2", {"a": 0.5, "b": 0}, 0.25),
    ("2 ^ 3 ^ 2", {"a": 0, "b": 0}, 512.0),                  # right-associative, as in mathematics
    ("-a ^ 2", {"a": 0.5, "b": 0}, -0.25),                   # the power binds before the sign
    ("min(a, b) + max(a, b) - abs(a - b)", {"a": 0.2, "b": 0.7}, 0.4),
    ("floor(a * 10) / 10 + ceil(b) - 1", {"a": 0.37, "b": 0.2}, 0.3),
    ("sqrt(a) * exp(0) + log(1)", {"a": 0.81, "b": 0}, 0.9),
    ("a - b - 0.1", {"a": 1.0, "b": 0.5}, 0.4),             # left-associative
    ("1e-1 + .5", {"a": 0, "b": 0}, 0.6),
])
def test_calculate_output_computes_the_documented_operators_and_functions(formula: str, scores: dict, expected: float
                                                                        ) -> None:
    assert parse_formula(formula, ["a", "b"])(scores) == pytest.approx(expected)


@pytest.mark.parametrize(("formula", "says"), [
    ("__import__('os').system('x')", "not an operator"), ("open(a)", "not one of min"), ("a +", "ends too early"),
    ("a b", "unexpected"), ("c * 2", "not one of the graders"), ("a.b", "not an operator"), ("(a", "expected"),
])
def test_calculate_output_is_parsed_never_evaluated(formula: str, says: str) -> None:
    with pytest.raises(SpecError, match=says):
        parse_formula(formula, ["a", "b"])


def test_a_score_model_grader_gets_its_own_messages_filled_in_and_its_range_normalised() -> None:
    """A judge answering 7 on 0–10 scored 1.0 (clamped to 0–1) and got '{{…}}' unfilled; now 0.7 and filled."""
    asked: list[list[dict[str, str]]] = []
    grader = {"type": "score_model", "name": "judge", "model": "judge-4o", "range": [0, 10],
              "input": [{"role": "system", "content": "Grade 0 to 10."},
                        {"role": "user", "content": "Reference: {{item.answer}}. Answer: {{sample.output_text}}"}]}

    def judge(deployment: str, messages: list[dict[str, str]]) -> str:
        asked.append(messages)
        return "7"

    assert _rft(grader, "Paris", judge=judge, answer="Paris, France") == pytest.approx(0.7)
    assert asked[0][1]["content"] == "Reference: Paris, France. Answer: Paris" and "{{" not in str(asked)
    assert _rft(grader, "x", judge=lambda d, m: '{"result": 12, "steps": []}', answer="a") == 1.0   # clipped
    assert _rft(grader, "x", judge=lambda d, m: "no idea", answer="a") == 0.0


def test_a_label_model_grader_passes_on_its_passing_labels() -> None:
    grader = {"type": "label_model", "name": "tone", "model": "judge-4o", "labels": ["polite", "rude"],
              "passing_labels": ["polite"], "input": [{"role": "user", "content": "Tone of: {{sample.output_text}}"}]}
    assert _rft(grader, "Thanks!", judge=lambda d, m: "polite") == 1.0
    assert _rft(grader, "Go away", judge=lambda d, m: "rude") == 0.0


_SC = {"type": "string_check", "name": "s", "input": "{{sample.output_text}}", "reference": "{{item.a}}",
       "operation": "eq"}


@pytest.mark.parametrize(("grader", "says"), [   # shapes Azure's v1 API accepts (shared.run.rft_graders) …
    ({"type": "multi", "name": "m", "graders": {"inner": {"type": "multi", "name": "i", "graders": {"s": _SC},
                                                          "calculate_output": "s"}},
      "calculate_output": "inner"}, "cannot hold another multi"),
    ({**_SC, "input": "{{answer}}"}, "a template is"),          # … that the evaluation still cannot grade
    ({"type": "text_similarity", "name": "t", "input": "{{sample.output_text}}", "reference": "b",
      "evaluation_metric": "meteor"}, "meteor WordNet"),
    ({"type": "score_model", "name": "j", "model": "m", "input": [{"role": "user", "content": "x"}],
      "range": [10, 0]}, "two numbers, low then high"),   # Azure's own shape check says it first
    ({"type": "multi", "name": "m", "graders": {"s": _SC}, "calculate_output": "s +"}, "ends too early"),
])
def test_a_grader_the_evaluation_cannot_run_as_the_service_does_is_refused_at_intake(grader: dict, says: str) -> None:
    with pytest.raises(RunSettingsError, match=says):
        parse_run_settings({"method": "reinforcement", "grader": grader})


SCRIPTS = ["yes", "Oslo", "No.", "A B", "東京です", "お元気ですか？", "Привет мир", "Γειά σου κόσμε", "مرحبا بالعالم",
           "नमस्ते दुनिया", "สวัสดีครับ", "안녕하세요 세계", "?", "42"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("text", SCRIPTS)
def test_identical_answers_score_one_on_every_metric_in_every_script(metric: str, text: str) -> None:
    """Before: BLEU 0.18–0.56 on identical 1–3-word answers; ROUGE 0 on identical Japanese, Russian, Greek."""
    assert g.text_similarity(metric, text, text) == pytest.approx(1.0)


BLEU_PAIRS = [("yes", "yes"), ("The cat", "The cat"), ("the cat sat on the mat", "the cat sat on a mat"),
              (PARAPHRASE, REFERENCE), ("It costs 3.50 euros - cheap!", "It costs 3,50 euros, cheap"),
              ("a b c d e", "x y z"), ("a", "b c d e f g h"), ('He said "hi" & left.', "He said hi and left"),
              ("Open the door", "open the door"), ("Berlin, 2024-05-01: ok", "Berlin 2024-05-01 ok")]


@pytest.mark.parametrize(("answer", "reference"), BLEU_PAIRS)
def test_bleu_is_sacrebleus_sentence_bleu(answer: str, reference: str) -> None:
    sacrebleu = pytest.importorskip("sacrebleu")   # requirements-dev.txt: the reference implementation
    assert bleu(answer, reference) == pytest.approx(sacrebleu.sentence_bleu(answer, [reference]).score / 100, abs=1e-9)


@pytest.mark.parametrize(("answer", "reference"), [(PARAPHRASE, REFERENCE), (WRONG, REFERENCE),
                                                   ("the cats were sitting", "a cat sits on the mats")])
@pytest.mark.parametrize("metric", ["rouge_1", "rouge_2", "rouge_l"])
def test_rouge_on_english_is_rouge_scores_own(answer: str, reference: str, metric: str) -> None:
    """Our tokenizer keeps every script; on English it gives what rouge-score's default (with stemming) gives."""
    from rouge_score import rouge_scorer
    kind = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}[metric]
    want = rouge_scorer.RougeScorer([kind], use_stemmer=True).score(reference, answer)[kind].fmeasure
    assert g.text_similarity(metric, answer, reference) == pytest.approx(want)


@pytest.mark.parametrize(("answer", "reference"), [("fuzzy wuzzy was a bear", "fuzzy wuzzy had no hair"),
                                                   ("OSLO", "oslo"), ("Oslo!", "Oslo"), ("New York", "new york city")])
def test_fuzzy_match_is_wratio_with_default_processing_as_the_graders_guide_does(answer: str, reference: str) -> None:
    from rapidfuzz import fuzz, utils
    want = fuzz.WRatio(answer, reference, processor=utils.default_process) / 100
    assert g.text_similarity("fuzzy_match", answer, reference) == pytest.approx(want)
    assert g.text_similarity("fuzzy_match", "OSLO", "oslo") == 1.0   # fuzz.ratio gave 0.0


def test_a_tool_call_reference_is_graded_by_tool_call_match_only() -> None:
    """A wrong call scored 1.0 on token_f1, json_match and string_check (their text was equal)."""
    want = ({"name": "get_weather", "arguments": '{"city": "Oslo"}'},)
    wrong = ({"name": "delete_account", "arguments": '{"city": "Oslo"}'},)
    example = _example("", calls=want)
    for grader in (g.Grader("f", "token_f1"), g.Grader("j", "json_match"), g.Grader("s", "string_check", operation="eq"),
                   g.Grader("r", "text_similarity", metric="rouge_l")):
        with pytest.raises(g.NotApplicable):
            g.grade(grader, g.Reply("", wrong), example)
    assert g.grade(g.Grader("t", "tool_call_match"), g.Reply("", wrong), example) == 0.0
    with pytest.raises(g.NotApplicable):   # and tool_call_match does not grade text references
        g.grade(g.Grader("t", "tool_call_match"), g.Reply("text"), _example())


@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ('{"ok": true}', '{"ok": 1}', 0.0), ('{"ok": 1}', '{"ok": true}', 0.0), ('{"n": "1"}', '{"n": 1}', 0.0),
    ('{"n": 1.0}', '{"n": 1}', 1.0), ('{"v": null}', '{"v": false}', 0.0), ('{"v": false}', '{"v": false}', 1.0),
    ('{"a": [1, true]}', '{"a": [1, 1]}', 0.5),
])
def test_json_match_compares_types_strictly(answer: str, reference: str, expected: float) -> None:
    assert g.json_match(answer, reference) == expected


@pytest.mark.parametrize(("answer", "reference", "expected"), [
    ("Go to STRASSE 5", "straße", 1.0), ("ΣΊΣΥΦΟΣ", "σίσυφος", 1.0), ("Oslo", "OSLO", 1.0), ("Bergen", "oslo", 0.0)])
def test_ilike_folds_case_as_unicode_does(answer: str, reference: str, expected: float) -> None:
    assert g.string_check("ilike", answer, reference) == expected


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
