"""The fast paths (orjson parsing, batched token counts in a thread) give the reports of the slow ones."""

from __future__ import annotations

import json

import pytest
from vhelpers import chat, dpo, jsonl, padded, rft

from shared.validation import Tuning, ValidationOptions, validate_file, worker

AWKWARD_LINES = [
    ('{"messages":[{"role":"user","content":"lone \\ud800 surrogate in a long enough user text"},'
     '{"role":"assistant","content":"an answer with <|endoftext|> inside it, long enough"}]}'),
    ('{"messages":[{"role":"user","content":"\\u003c|im_start|> escaped special token, long text"},'
     '{"role":"assistant","content":"fine"}]}'),
    '{"messages":[{"role":12345678901234567890123,"content":"x"},{"role":"assistant","content":"y"}]}',
    '{"messages":[{"role":"tool","tool_call_id":-9223372036854775809,"content":"x"}]}',
    ('{"messages":[{"role":"user","content":"t"},{"role":"assistant","content":"a"}],"tools":[{"type":"function",'
     '"function":{"name":"f","parameters":{"type":"object","max":18446744073709551616,"f":1e400,"g":-0.0}}}]}'),
    '{"messages":[{"role":"user","content":"t"}],"x":NaN}',
    ('{"messages":[{"role":"user","content":"first"}],"messages":[{"role":"user","content":"the last one wins here"},'
     '{"role":"assistant","content":"duplicate keys: json keeps the last value"}]}'),
    '\ufeff{"messages":[]}', '{"messages":[]} \x0c', '[1, 2]', '{bad', "  ",
]


def _report(data: bytes, **opts) -> dict:
    report = validate_file([data[i:i + 1000] for i in range(0, len(data), 1000)], name="t",
                           options=ValidationOptions(workers=1, **opts))
    return {"report": report.to_dict(), "hashes": sorted(report.hashes.items())}


@pytest.mark.parametrize("model", ["gpt-4.1-mini", "gpt-35-turbo"])
def test_orjson_and_deferred_counts_match_json_and_eager_counts(model: str) -> None:
    rows = padded(AWKWARD_LINES + [dpo(), rft(), chat(user="x" * 70_000), chat(answer="word " * 20_000)])
    data = jsonl(rows).replace(b"caf", b"\xe9caf") + b"\r\n"
    fast = _report(data, model=model, over_limit="warn")
    # json parses every line, and every text is counted at once
    slow = _report(data, model=model, over_limit="warn", tuning=Tuning(orjson=False, defer_min_chars=1 << 30))
    assert fast == slow
    codes = {f["code"] for f in fast["report"]["errors"] + fast["report"]["warnings"]}
    assert {"lone_surrogate", "special_token", "invalid_json", "invalid_role"} <= codes


def test_lines_with_19_digit_runs_are_left_to_json() -> None:
    data = b'{"a": 1}\n{"n": 12345678901234567890}\n{"s": "123456789012345678"}\n\n{"t": "0000000000000000000"}'
    assert worker._long_number_lines(data) == {1, 4}
    assert worker._long_number_lines(b"") == set()


def test_blocks_are_the_same_inline_and_through_the_counting_thread() -> None:
    from shared.validation import lines as lines_mod

    tuning = Tuning(block_bytes=3000, batch_texts=3)
    rows = padded([chat(user="jane@contoso.com is my long address, thanks"), "{bad", chat()], 200)
    data = jsonl(rows)
    threaded = _report(data, tuning=tuning)
    assert threaded == _report(data)  # small blocks and batches: the report of the default ones
    ctx = worker.Context(ValidationOptions(tuning=tuning))
    blocks = list(lines_mod.split_blocks([data], max_line_bytes=1 << 20, block_bytes=tuning.block_bytes))
    inline = [worker.process_block(b, ctx) for b in blocks]
    assert sum(r.examples for r in inline) == threaded["report"]["examples"]
    assert sum(r.tokens for r in inline) == threaded["report"]["stats"]["tokens"]["total"]
    assert json.dumps(threaded["report"])


def test_blocks_of_huge_lines_checked_alone_give_the_same_report() -> None:
    rows = padded([chat(user="jane@contoso.com is my long address, thanks"), "{bad", chat(), chat()], 150)
    data = jsonl(rows)
    assert _report(data, tuning=Tuning(block_bytes=3000, big_block_bytes=1)) == _report(data)
