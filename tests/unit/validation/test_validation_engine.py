from __future__ import annotations

import json

import pytest
from vhelpers import at, chat, check, codes, jsonl, padded

from shared.validation import Tuning, ValidationOptions, engine, render_html, validate_dataset, validate_file
from shared.validation.stats import ContextCounts, default_epochs, percentile
from shared.validation.tokens import Counter


def test_empty_file_and_too_few_examples() -> None:
    assert codes(check(b"")) == ["empty_file"]
    assert codes(check(b"\n\n")) == ["empty_file", "blank_line", "blank_line"]
    report = check(jsonl(padded([], 9)))
    assert codes(report) == ["too_few_examples"]
    assert report.examples == 9
    assert check(jsonl(padded([], 10))).valid


def test_utf16_file_is_rejected_on_line_1() -> None:
    data = jsonl(padded([])).decode().encode("utf-16")
    report = check(data)
    assert [(f.line, f.code) for f in report.errors] == [(1, "utf16_encoding")]


def test_invalid_utf8_names_the_line() -> None:
    lines = jsonl(padded([])).split(b"\n")
    lines[6] = lines[6].replace(b"Question", b"Qu\xe9stion")
    report = check(b"\n".join(lines))
    assert at(report, "invalid_utf8") == [7]


def test_duplicates_are_warnings_naming_the_first_line() -> None:
    lines = padded([chat()]) + [chat()]
    report = check(jsonl(lines).replace(b"\n", b"\r\n", 1))  # a CRLF copy is still a duplicate
    dup = [f for f in report.warnings if f.code == "duplicate_example"]
    assert [(f.line, f.message) for f in dup] == [(11, "same example as line 1")]
    assert report.valid


def test_findings_are_capped_per_code_with_a_summary() -> None:
    report = check(jsonl(["{bad"] * 150))
    listed = [f for f in report.errors if f.code == "invalid_json"]
    assert len(listed) == engine.FINDINGS_PER_CODE + 1
    assert listed[0].line is None and "50 more" in listed[0].message
    assert [f.line for f in listed[1:4]] == [1, 2, 3]


def test_a_block_of_bad_lines_holds_only_the_capped_findings() -> None:
    # 16 MiB of blank lines once took the validator past 1 GiB: every finding was kept until merging.
    from shared.validation.lines import Block
    from shared.validation.worker import Context, process_block

    data = b"\n" * 50_000 + b"{}\n" * 50_000 + b'{"messages": "x"}\n' * 1_000
    data = data[:-1]  # a block holds lines without the final newline
    res = process_block(Block(1, data), Context(ValidationOptions()))
    per_code = {code: sum(1 for f in res.findings if f[1] == code) for _, code, _ in res.findings}
    assert per_code == {"blank_line": 100, "unknown_format": 100, "missing_messages": 100}
    assert res.not_listed == {"blank_line": 49_900, "unknown_format": 49_900, "missing_messages": 900}


def test_capped_blocks_still_count_every_finding_in_the_report() -> None:
    report = check(b"\n" * 5_000 + jsonl(padded([])))
    blanks = [f for f in report.warnings if f.code == "blank_line"]
    assert len(blanks) == engine.FINDINGS_PER_CODE + 1
    assert "4900 more" in blanks[0].message


def test_over_limit_is_an_error_or_a_warning() -> None:
    long = chat(answer="word " * 17_000)  # > 16,385 tokens for gpt-35-turbo
    report = check(jsonl(padded([long])), model="gpt-35-turbo")
    assert at(report, "over_token_limit") == [1] and not report.valid
    assert report.stats["tokens"]["over_limit"] == 1
    report = check(jsonl(padded([long])), model="gpt-35-turbo", over_limit="warn")
    assert report.valid and "over_token_limit" in codes(report, "warnings")
    assert check(jsonl(padded([long])), model="gpt-4.1-mini").valid


def _cookbook(messages: list[dict], enc) -> int:
    """OpenAI cookbook num_tokens_from_messages (3 per message, 1 per name, 3 reply priming)."""
    n = 0
    for m in messages:
        n += 3
        for k, v in m.items():
            n += len(enc.encode(v))
            if k == "name":
                n += 1
    return n + 3


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-35-turbo"])
def test_token_counts_follow_the_cookbook(model: str) -> None:
    lines = padded([chat(user="Héllo wörld, 東京 🙂 can't  stop\r\n now", answer="Fine; thanks!")])
    report = check(jsonl(lines), model=model)
    enc = Counter("cl100k_base" if model == "gpt-35-turbo" else "o200k_base", fast=False)
    from shared.validation.tokens import get_encoding
    tk = get_encoding(enc.name)
    expected = [_cookbook(o["messages"], tk) for o in lines]
    assert report.stats["tokens"]["total"] == sum(expected)
    assert report.stats["tokens"]["per_example"]["max"] == max(expected)
    answers = sum(len(tk.encode(m["content"])) for o in lines for m in o["messages"] if m["role"] == "assistant")
    assert report.stats["tokens"]["assistant"] == answers


def test_stats_percentiles_epochs_and_cost() -> None:
    assert percentile(*ContextCounts.of([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).values_counts(), 0.5) == 5
    assert percentile(*ContextCounts.of(list(range(1, 101))).values_counts(), 0.95) == 95
    assert default_epochs(10) == 10 and default_epochs(20) == 5 and default_epochs(1000) == 3
    assert default_epochs(20_000) == 1 and default_epochs(5) == 20 and default_epochs(2) == 25
    report = check(jsonl(padded([])), n_epochs=2)
    cost = report.stats["cost"]
    assert cost["epochs"] == 2 and cost["billed_tokens"] == 2 * report.stats["tokens"]["total"]
    assert cost["estimated_usd"] == round(cost["billed_tokens"] / 1e6 * 5.50, 2)
    assert sum(report.stats["histogram"]["counts"]) == 10


def test_unknown_model_is_reported() -> None:
    report = check(jsonl(padded([])), model="gpt-9")
    assert codes(report, "errors") == ["unknown_model"]


def test_parallel_workers_give_the_same_report() -> None:
    lines = padded([chat(user="jane@contoso.com"), "{bad", chat()], 400) + [chat()]
    data = jsonl(lines)
    chunks = [data[i:i + 5000] for i in range(0, len(data), 5000)]
    tuning = Tuning(parallel_after_bytes=0, block_bytes=4000)  # a worker from the first block, many blocks
    a = validate_file(chunks, name="t", options=ValidationOptions(workers=1, tuning=tuning))
    b = validate_file(chunks, name="t", options=ValidationOptions(workers=2, tuning=tuning))
    assert a.to_dict() == b.to_dict()
    assert at(b, "duplicate_example") == [401]


def test_dataset_leakage_names_and_json_shape() -> None:
    train = jsonl(padded([chat(user="shared question here?")], 12))
    val = jsonl([chat(user="shared question here?"), chat(user="only in validation?")])
    evl = jsonl([chat(user="only in validation?"), chat(user="only in eval?")])
    report = validate_dataset({"train": lambda: [train], "validation": lambda: [val], "eval": lambda: [evl]},
                              options=ValidationOptions(workers=1))
    leaks = [(f.file, f.line, f.message) for f in report.warnings if f.code == "leakage"]
    assert leaks == [("validation.jsonl", 1, "same example as train.jsonl line 1"),
                     ("eval.jsonl", 1, "same example as validation.jsonl line 2")]
    out = report.to_dict()
    assert set(out) >= {"valid", "method", "examples", "errors", "warnings", "stats"}
    assert out["examples"] == 16 and out["valid"] is True
    assert all("file" in f for f in out["warnings"])
    json.dumps(out)  # serializable


def test_single_file_json_has_no_file_key_and_reinforcement_wants_validation() -> None:
    rows = [{"messages": [{"role": "user", "content": f"What is {i}+{i}?"}], "answer": str(2 * i)}
            for i in range(10)]
    report = validate_dataset({"train": lambda: [jsonl(rows)]}, options=ValidationOptions(model="o4-mini"))
    out = report.to_dict()
    assert "file" not in out["warnings"][0]
    assert [w["code"] for w in out["warnings"]] == ["missing_validation_file"]


def test_html_report_is_self_contained_and_escaped() -> None:
    lines = padded([chat(user="<script>alert(1)</script> jane@contoso.com"), "{<b>bad"])
    report = validate_dataset({"train": lambda: [jsonl(lines)]}, options=ValidationOptions(workers=1))
    html = render_html(report, title="Run <x> & co")
    assert "<script>" not in html and "Run &lt;x&gt; &amp; co" in html
    assert "<svg" in html and "jane@contoso.com" not in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html


def test_repeated_bad_lines_and_blank_lines_get_the_findings_of_one_line_at_a_time() -> None:
    # Blank lines are reported in bulk and a bad line seen before in its block replays its findings: files of
    # millions of them would otherwise take minutes. A block of one line at a time does neither.
    import random

    rng = random.Random(7)
    pieces = ["", " ", "\r", "\t \r", "{}", '{"messages": []}', '{"messages": "x"}', "[1]", "{bad", '{"input": 0}',
              '{"prompt": "a", "completion": "b"}', json.dumps(chat(answer="ok")), json.dumps(chat()),
              json.dumps({"messages": [{"role": "user", "content": "<|im_end|> hi"}]}), "\xe9t\xe9".encode(
                  "latin-1").decode("latin-1")]
    lines = padded([], 10) + [rng.choice(pieces) for _ in range(3000)]
    # Mostly blank: blocks of under 4 bytes a line find their blank lines over arrays.
    sparse = padded([], 10) + [rng.choice(pieces) if rng.random() < 0.03 else rng.choice(pieces[:4])
                               for _ in range(20_000)]
    for data in (jsonl(lines), jsonl(sparse)):
        for plain in (True, False):
            whole = check(data, tuning=Tuning(block_bytes=1 << 20, plain=plain))
            one_by_one = check(data, tuning=Tuning(block_lines=1, plain=plain))
            assert whole.to_dict() == one_by_one.to_dict()
    assert {"blank_line", "unknown_format", "invalid_json", "legacy_format", "not_an_object",
            "special_token", "short_assistant_answer", "duplicate_example"} <= set(codes(whole))


def test_the_collector_runs_less_often_only_while_a_validation_runs() -> None:
    import gc

    before = gc.get_threshold()
    during: list[tuple[int, ...]] = []
    validate_file([jsonl(padded([]))], name="t", options=ValidationOptions(),
                  progress=lambda _n: during.append(gc.get_threshold()))
    assert during and all(t[0] > before[0] for t in during)
    assert gc.get_threshold() == before  # the process's own setting, back


@pytest.mark.parametrize("plain", [True, False])  # plain lines over columns, or every line by the general path
def test_an_example_of_exactly_the_models_limit_is_not_over_it(plain: bool) -> None:
    def example(answer_tokens: int) -> dict:  # "a a a ...": one token each in cl100k
        return {"messages": [{"role": "user", "content": "Say a."},
                             {"role": "assistant", "content": "a" + " a" * (answer_tokens - 1)}]}

    assert Counter("cl100k_base").count("a" + " a" * 999) == 1000
    options = ValidationOptions(model="gpt-35-turbo", tuning=Tuning(plain=plain))  # 16,385 tokens an example
    small = validate_file([jsonl([example(5)] * 10)], name="t", options=options)
    overhead = small.stats["tokens"]["per_example"]["max"] - 5
    at_limit = 16_385 - overhead
    rows = [example(at_limit - 1), example(at_limit), example(at_limit + 1)] + [example(5)] * 10
    report = validate_file([jsonl(rows)], name="t", options=options)
    over = [f for f in report.errors if f.code == "over_token_limit"]
    assert [f.line for f in over] == [3]
    assert over[0].message.startswith("16386 tokens > 16385 for gpt-35-turbo")
    assert report.stats["tokens"]["per_example"]["max"] == 16_386
    assert report.stats["tokens"]["over_limit"] == 1
