"""The fast paths (orjson parsing, batched token counts in a thread) give the reports of the slow ones."""

from __future__ import annotations

import json
import random
from dataclasses import replace

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


# --- plain chat lines (fastpath.py) against the general path (Tuning(plain=False)) on the same bytes

def _msg(role: str, content: object) -> dict:
    return {"role": role, "content": content}


S, U = _msg("system", "You are a support agent."), _msg("user", "Where is my order, please?")
PLAIN_LINES = [  # lines the fast path takes (a short answer is the one finding it words itself)
    json.dumps({"messages": [S, U, _msg("assistant", "It ships tomorrow morning.")]}),
    json.dumps({"messages": [U, _msg("assistant", "positive")]}),                      # short answer
    json.dumps({"messages": [_msg("assistant", "  "), U, _msg("assistant", "one")]}),  # two, the 1st and 3rd
    json.dumps({"messages": [S, _msg("assistant", "Sure, café ✅ 東京 🙂 naïve.")]}, ensure_ascii=False),
    json.dumps({"messages": [S, _msg("assistant", "Sure, café ✅ 東京 🙂 naïve.")]}, ensure_ascii=True),
    '{"messages":[{"content":"a < b","role":"user"},{"content":"x \\u003c y, \\ud83d\\ude00 ok","role":"assistant"}]}',
    ' {"messages" : [ {"role":"user","content":""} , {"role":"assistant","content":"two words"} ] }\r',
    '{"messages":[{"role":"user","content":"\\u0000 nul"},{"role":"assistant","content":"an\\nanswer\\there"}]}',
    json.dumps({"messages": [U, _msg("assistant", "word " * 17_000)]}),               # over the limit
    ('{"messages":[{"role":"user","content":"first"}],"messages":[{"role":"user","content":"q"},'
    '{"role":"assistant","content":"duplicate keys: the last wins, as in json"}]}'),
]


def _call(call_id: str = "call_1", name: str = "lookup_order", arguments: str = '{"order_id": "42"}') -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _tool_chat(*, tools: object = None, calls: list | None = None, content: object = None,
               replies: list | None = None, answer: str = "Your order shipped yesterday.", **extra: object) -> str:
    calls = [_call()] if calls is None else calls
    asked: dict = {"role": "assistant", "tool_calls": calls}
    if content is not None:
        asked["content"] = content
    replies = [{"role": "tool", "tool_call_id": c["id"], "content": '{"status": "shipped"}'} for c in calls
               if isinstance(c, dict)] if replies is None else replies
    obj: dict = {"messages": [S, U, asked, *replies, _msg("assistant", answer)], **extra}
    if tools is not None:
        obj["tools"] = tools
    return json.dumps(obj)


TOOLS = [{"type": "function", "function": {"name": "lookup_order", "description": "Find an order — by id",
                                            "parameters": {"type": "object", "properties": {
                                                "order_id": {"type": "string"}}, "required": ["order_id"]}}}]
TOOL_LINES = [  # tool-calling lines the fast path takes, line by line
    _tool_chat(tools=TOOLS),
    _tool_chat(tools=TOOLS, answer="Done."),                                            # short answer, [5]
    _tool_chat(calls=[_call("a"), _call("b", arguments="NaN")], content="Looking both up."),  # json takes NaN
    _tool_chat(tools=[]),
    _tool_chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"max": 18446744073709551616,
                                                                                   "f": 1.5e300, "g": -0.0}}}]),
    json.dumps({"messages": [U, _msg("assistant", "yes")], "tools": TOOLS}),             # short answer, [2]
]
GENERAL_LINES = [  # lines the fast path leaves to the general path, each for its own reason
    json.dumps({"messages": [U, _msg("assistant", "")]}),                             # empty answer
    json.dumps({"messages": [U, _msg("assistant", "one"), _msg("assistant", "two")]}),  # in a row
    json.dumps({"messages": [S, U]}),                                                  # no assistant
    json.dumps({"messages": [_msg("assistant", "only an answer here")]}),              # no prompt
    json.dumps({"messages": []}),
    json.dumps({"messages": [U, _msg("assistant", "see <|endoftext|> here")]}),
    '{"messages":[{"role":"user","content":"\\u003c|im_start|> escaped"},{"role":"assistant","content":"ok then"}]}',
    json.dumps({"messages": [U, _msg("assistant", None)]}),
    json.dumps({"messages": [U, _msg("assistant", ["a list"])]}),
    json.dumps({"messages": [U, _msg("assistant", 5)]}),
    json.dumps({"messages": [U, {"role": "assistant"}]}),
    json.dumps({"messages": [_msg("developer", "be brief"), U, _msg("assistant", "fine, brief")]}),
    json.dumps({"messages": [_msg("tool", "x"), U, _msg("assistant", "fine, brief")]}),
    json.dumps({"messages": [U, {**_msg("assistant", "yes"), "weight": 0}]}),
    json.dumps({"messages": [{**U, "name": "jane"}, _msg("assistant", "yes")]}),
    _tool_chat(replies=[{"role": "tool", "tool_call_id": "nobody", "content": "x"}]),     # an orphan reply
    _tool_chat(calls=[_call(arguments="{not json")]),
    _tool_chat(calls=[_call(call_id="")]),
    _tool_chat(calls=[{**_call(), "type": "code"}]),
    _tool_chat(calls=[]),
    _tool_chat(calls=[_call(arguments="see <|endoftext|>")]),
    _tool_chat(content=""),
    _tool_chat(tools=[{"type": "function"}]),
    _tool_chat(tools={"not": "a list"}),
    _tool_chat(tools=TOOLS, parallel_tool_calls=False),
    _tool_chat(replies=[{"role": "tool", "tool_call_id": "call_1", "content": None}]),
    _tool_chat(replies=[{"role": "user", "tool_call_id": "call_1", "content": "x"}]),
    _tool_chat(replies=[{"role": "user", "tool_calls": [_call()], "content": "x"}]),
    _tool_chat(replies=[{"role": "tool", "tool_call_id": "call_1", "content": "x"},
                        {"role": "assistant", "content": "first", "tool_call_id": "call_1"}]),
    _tool_chat(tools=[{"type": "function", "function": {"name": "f", "description": "\ud800"}}]),  # a lone surrogate
    _tool_chat(tools=TOOLS).replace('"tool_calls": [', '"tool_calls": null, "x": ['),
    json.dumps({"messages": [U, _msg("assistant", "yes")], "reference": "4"}),
    json.dumps({"messages": [U, _msg("assistant", "yes")], "messages2": 1}),
    '{"messages":[{"role":"user","content":"lone \\ud800"},{"role":"assistant","content":"a lone surrogate"}]}',
    '{"messages":[{"role":"user","role":"assistant","content":"q"}]}',
    '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]} x',
    '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}],}',
    '\ufeff{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}',
    '{"messages":[{"role":"user","content":"tab\tinside"},{"role":"assistant","content":"a b"}]}',
    '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a b"}],"n":NaN}',
    '{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a b"}],"n":123456789012345678901}',
    "[" * 5000 + "]" * 5000, '{"messages": "x"}', "{}", "[1, 2]", "null", '"a string"', "{bad", "", "   ",
    json.dumps({"input": {"messages": [U]}, "preferred_output": [_msg("assistant", "a b")],
                "non_preferred_output": [_msg("assistant", "c d")]}),
]


def _both(data: bytes, **opts) -> tuple[dict, dict]:
    return _report(data, **opts), _report(data, tuning=Tuning(plain=False), **opts)


def test_the_fast_path_takes_plain_lines_and_leaves_the_rest() -> None:
    ctx = worker.Context(ValidationOptions())
    assert ctx.plain is not None
    fast = PLAIN_LINES + TOOL_LINES
    raws = [line.encode() for line in fast + GENERAL_LINES]
    block = ctx.plain.check(raws, 1, special=True)
    assert block.rest == list(range(len(fast), len(raws)))
    assert sorted(block.lines) == list(range(1, len(fast) + 1))
    tool = len(PLAIN_LINES)
    assert [(line, message) for line, _, message in block.findings] == [
        (2, "messages[2]: answer is empty or one word"), (3, "messages[1]: answer is empty or one word"),
        (3, "messages[3]: answer is empty or one word"), (tool + 2, "messages[5]: answer is empty or one word"),
        (tool + 6, "messages[2]: answer is empty or one word")]
    # what takes no fast path at all: an unknown model counts nothing; a forced method reads lines its way
    assert worker.Context(ValidationOptions(model="no-such-model")).plain is None
    assert worker.Context(ValidationOptions(method="dpo")).plain is None
    assert worker.Context(ValidationOptions(method="supervised")).plain is not None
    assert worker.Context(ValidationOptions(tuning=Tuning(plain=False))).plain is None


@pytest.mark.parametrize("opts", [{}, {"model": "gpt-35-turbo"}, {"method": "supervised"}, {"method": "dpo"},
                                  {"method": "reinforcement"}, {"model": "no-such-model"}])
def test_plain_and_general_lines_give_the_general_paths_report(opts: dict) -> None:
    rows = PLAIN_LINES + TOOL_LINES + GENERAL_LINES + PLAIN_LINES[:3] + TOOL_LINES[:2]  # duplicates too
    data = jsonl(rows) + b"\xff{}\n" + b"\n".join(line.encode() for line in reversed(PLAIN_LINES + TOOL_LINES))
    fast, slow = _both(data, **opts)
    assert fast == slow
    found = {f["code"] for f in fast["report"]["errors"] + fast["report"]["warnings"]}
    if opts.get("model") == "gpt-35-turbo":
        assert {"short_assistant_answer", "over_token_limit", "duplicate_example", "consecutive_assistant",
                "empty_assistant_message", "special_token", "lone_surrogate", "invalid_json", "orphan_tool_message",
                "invalid_tool_calls", "invalid_tools", "invalid_content"} <= found


def test_capped_findings_merge_in_line_order_across_both_paths() -> None:
    # Short answers from both paths, interleaved, past the per-code cap in one block and across blocks;
    # over-limit examples from both.
    plain = json.dumps({"messages": [U, _msg("assistant", "yes")]})
    general = json.dumps({"messages": [{**U, "name": "jane"}, _msg("assistant", "no")]})
    over_plain = json.dumps({"messages": [U, _msg("assistant", "word " * 17_000)]})
    over_general = json.dumps({"messages": [{**U, "name": "bob"}, _msg("assistant", "word " * 17_000)]})
    rows = []
    for i in range(700):
        rows.append(plain.replace("yes", f"yes{i}") if i % 3 else general.replace("no", f"no{i}"))
        if i % 97 == 0:
            rows += [over_plain.replace("word", f"w{i}", 1), over_general.replace("word", f"w{i}", 1)]
    data = jsonl(rows)
    for tuning in (Tuning(), Tuning(block_bytes=20_000), Tuning(block_lines=150)):
        fast = _report(data, model="gpt-35-turbo", tuning=tuning)
        assert fast == _report(data, model="gpt-35-turbo", tuning=replace(tuning, plain=False))
    shorts = [f for f in fast["report"]["warnings"] if f["code"] == "short_assistant_answer"]
    assert shorts[0]["line"] is None and shorts[0]["message"].startswith(f"{len(rows) - 100 - 16} more")
    assert [f["line"] for f in shorts[1:4]] == [1, 4, 5]


def _random_line(rng: random.Random) -> str:
    """A chat line near the plain shape: each part now and then off it (role, content, keys, text)."""
    texts = ["Where is my order #123456?", "It ships on 2025-04-14, tracking #9934.", "", " ", "yes", "two words",
             "<|endoftext|>", "a < b", "café 東京 🙂", "line\nbreak", "x" * 60, "word " * 30]
    msgs = []
    for k in range(rng.choice((0, 1, 2, 2, 3, 3, 4, 6))):
        role = "user" if k % 2 == 0 else "assistant"
        if rng.random() < 0.15:
            role = rng.choice(["system", "user", "assistant", "tool", "developer", "Assistant"])
        msg: dict = {"role": role, "content": rng.choice(texts[:2] * 5 + texts)}
        r = rng.random()
        if r < 0.04:
            msg["content"] = rng.choice([None, 7, ["part"], {"a": 1}])
        elif r < 0.07:
            del msg["content"]
        elif r < 0.09:
            msg[rng.choice(["name", "weight", "tool_calls", "extra"])] = rng.choice([0, 1, "n", []])
        msgs.append(msg)
        if role == "assistant" and rng.random() < 0.3:  # a tool call and its replies, each part now and then off
            ids = [f"call_{len(msgs)}_{j}" if rng.random() < 0.9 else rng.choice(["", 5, "call_1_0"])
                   for j in range(rng.choice((0, 1, 1, 1, 2)))]
            msg["tool_calls"] = [{"id": i, "type": "function" if rng.random() < 0.95 else "x", "function": {
                "name": "lookup" if rng.random() < 0.95 else "",
                "arguments": '{"id": 1}' if rng.random() < 0.85 else rng.choice(["{bad", "<|endoftext|>", '"a"'])}}
                for i in ids]
            if rng.random() < 0.5:
                msg["content"] = rng.choice([None, None, "Checking.", "Checking.", "", "<|endoftext|>"])
            for i in ids + ([] if rng.random() < 0.9 else ["nobody"]):
                msgs.append({"role": "tool", "tool_call_id": i, "content": rng.choice(texts[:2] * 5 + [None])})
    obj: dict = {"messages": msgs}
    if rng.random() < 0.2:
        obj["tools"] = rng.choice([[], [{"type": "function"}], "x", [{"type": "function", "function": {
            "name": "lookup", "parameters": {"type": "object", "n": rng.choice([1, 1.5, 2**70, -0.0])}}}]])
    if rng.random() < 0.05:
        obj[rng.choice(["reference", "parallel_tool_calls"])] = rng.choice([[], "x", True])
    line = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    r = rng.random()
    if r < 0.05:  # a byte-level change: truncation, an escape, a stray character
        k = rng.randrange(len(line))
        line = rng.choice([line[:k], line[:k] + "\\u003c|" + line[k:], line[:k] + rng.choice('{}[],:"\\') + line[k:]])
    elif r < 0.08:
        line = rng.choice(["", "  ", line + " ", " " + line + "\r"])
    return line


@pytest.mark.parametrize("seed", range(4))
def test_random_near_plain_lines_give_the_general_paths_report(seed: int) -> None:
    rng = random.Random(seed)
    rows = [_random_line(rng) for _ in range(1500)]
    data = jsonl(rows)
    fast, slow = _both(data)
    assert fast == slow
    ctx = worker.Context(ValidationOptions())
    assert ctx.plain is not None
    taken = ctx.plain.check(data.split(b"\n"), 1, special=True).lines
    assert 200 < len(taken) < 1200  # both paths had work to do, both tiers of the fast one too
    assert sum(b"tool_calls" in rows[line - 1].encode() for line in taken) > 50


def test_a_block_of_refused_lines_stops_being_tried_and_reports_the_same() -> None:
    from shared.validation import fastpath

    odd = ['{"messages": "x"}'] * (fastpath.GIVE_UP_AFTER + 10)
    rows = PLAIN_LINES[:2] + odd + PLAIN_LINES + TOOL_LINES + ["", "{}"] * 50
    ctx = worker.Context(ValidationOptions())
    assert ctx.plain is not None
    block = ctx.plain.check([row.encode() for row in rows], 1, special=True)
    # the plain lines after the odd ones are left to the general path (tool-calling ones are still tried)
    assert [line for line in block.lines if line <= 2 + len(odd) + len(PLAIN_LINES)] == [1, 2]
    fast, slow = _both(jsonl(rows))
    assert fast == slow
    assert {f["code"] for f in fast["report"]["errors"]} >= {"missing_messages", "unknown_format"}
