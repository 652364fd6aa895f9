"""Metrics with values checked by hand (SQuAD normalisation, F1, percentiles, aggregates)."""
from __future__ import annotations

import pytest

from shared.evaluation.examples import load_examples, parse_example
from shared.evaluation.metrics import (
    ExampleResult,
    aggregate,
    exact_match,
    normalize_answer,
    percentile,
    score,
    token_f1,
)


def test_normalisation_drops_case_punctuation_articles_and_spaces() -> None:
    assert normalize_answer("  The Eiffel   Tower, in PARIS! ") == "eiffel tower in paris"


@pytest.mark.parametrize(("prediction", "reference", "expected"), [
    ("Paris", "paris.", 1.0),
    ("the cat sat on the mat", "a cat sat", 2 * (2 / 4) * 1 / (2 / 4 + 1)),   # "cat sat on mat" vs "cat sat": 2/3
    ("blue green", "green red yellow", 2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3)),    # 0.4
    ("nothing shared", "totally different", 0.0),
    ("a the", "", 0.0),          # both normalise to empty: compared as written (SQuAD's script says 1.0)
    ("The", "the", 1.0),
    ("", "Paris", 0.0),
    ("paris paris", "paris", 2 * 0.5 * 1 / 1.5),  # repeated tokens count once per match
])
def test_token_f1_known_values(prediction: str, reference: str, expected: float) -> None:
    assert token_f1(prediction, reference) == pytest.approx(expected)


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The answer is 42.", "answer is 42") == 1.0
    assert exact_match("42", "forty-two") == 0.0


def test_percentile_interpolates_like_numpy() -> None:
    values = [10.0, 20.0, 30.0, 40.0]
    assert percentile(values, 50) == pytest.approx(25.0)
    assert percentile(values, 95) == pytest.approx(38.5)
    assert percentile([7.0], 95) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_aggregate_counts_errors_as_zero_and_ignores_them_for_latency() -> None:
    rows = [score(0, "paris", "Paris", latency_ms=100, prompt_tokens=10, completion_tokens=2),
            score(1, "london", "Berlin", latency_ms=300, prompt_tokens=20, completion_tokens=4),
            ExampleResult(index=2, answer=None, latency_ms=None, error="APIError 500")]
    m = aggregate(rows)
    assert (m.n, m.n_errors) == (3, 1)
    assert m.error_rate == pytest.approx(1 / 3)
    assert m.mean_f1 == pytest.approx(1 / 3)
    assert m.exact_match == pytest.approx(1 / 3)
    assert m.latency_p50_ms == pytest.approx(200)
    assert m.mean_prompt_tokens == 15 and m.mean_completion_tokens == 3


def test_aggregate_of_nothing_is_a_failure_not_a_success() -> None:
    m = aggregate([])
    assert m.error_rate == 1.0 and m.mean_f1 == 0.0 and m.latency_p95_ms is None


def test_examples_prompt_is_everything_before_the_last_answer() -> None:
    record = {"messages": [{"role": "system", "content": "Be brief."},
                           {"role": "user", "content": "Capital of France?"},
                           {"role": "assistant", "content": "Paris", "weight": 1}]}
    example = parse_example(record, 3)
    assert not isinstance(example, str)
    assert example.reference == "Paris" and example.line == 3
    assert [m["role"] for m in example.messages] == ["system", "user"]
    assert parse_example({"messages": [{"role": "user", "content": "hi"}]}, 1) == \
        "the last message is not an assistant answer (nothing to compare with)"


def test_examples_accept_dpo_and_sample_deterministically() -> None:
    dpo = {"input": {"messages": [{"role": "user", "content": "q"}]},
           "preferred_output": [{"role": "assistant", "content": "good"}],
           "non_preferred_output": [{"role": "assistant", "content": "bad"}]}
    assert parse_example(dpo, 1).reference == "good"  # type: ignore[union-attr]
    lines = [f'{{"messages":[{{"role":"user","content":"q{i}"}},{{"role":"assistant","content":"a{i}"}}]}}'
             for i in range(50)] + ["not json", ""]
    a = load_examples(lines, seed="s", limit=10)
    b = load_examples(lines, seed="s", limit=10)
    assert a.total == 50 and len(a.examples) == 10
    assert [e.line for e in a.examples] == [e.line for e in b.examples]
    assert [e.line for e in a.examples] == sorted(e.line for e in a.examples)
    assert a.skipped and a.skipped[0].startswith("line 51: not JSON")


def test_examples_are_sampled_in_one_pass_from_a_stream_with_line_numbers_kept() -> None:
    from shared.evaluation.examples import stream_lines

    answer = '{{"messages":[{{"role":"user","content":"q{0}"}},{{"role":"assistant","content":"a{0}"}}]}}'
    body = "\n".join([answer.format(i) if i % 3 else "" for i in range(3_000)]).encode()
    chunks = (body[i:i + 1000] for i in range(0, len(body), 1000))  # lines cut across chunks
    loaded = load_examples(stream_lines(chunks), seed="s", limit=50)
    assert loaded.total == 2_000 and len(loaded.examples) == 50
    assert all(e.messages[0]["content"] == f"q{e.line - 1}" for e in loaded.examples)
    # uniform over the file, not the first 50 usable lines
    assert max(e.line for e in loaded.examples) > 1_500
    deep = load_examples(["[" * 20_000 + "]" * 20_000], seed="s")
    assert deep.skipped == ["line 1: not JSON (nested too deeply to parse)"]
