from __future__ import annotations

import json
from typing import Any

import pytest
from vhelpers import at, chat, check, codes, dpo, jsonl, padded, rft

TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def one(example: Any, **opts: Any) -> list[str]:
    """Codes found on line 1 when it is followed by nine valid examples of the same method."""
    filler = {"dpo": dpo(), "reinforcement": rft()}.get(opts.get("method") or "", None)
    if filler is not None:
        lines = [example] + [dict(filler, _n=i) if opts["method"] == "reinforcement" else
                             {**filler, "input": {"messages": [{"role": "user", "content": f"Prompt {i} here"}]}}
                             for i in range(9)]
    else:
        lines = padded([example])
    report = check(jsonl(lines), **opts)
    return sorted({f.code for f in report.errors + report.warnings if f.line == 1})


def msgs(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"messages": list(messages), **extra}


U = {"role": "user", "content": "Please look up order 42 for me."}
A = {"role": "assistant", "content": "Your order ships tomorrow."}


@pytest.mark.parametrize("example", [
    chat(),
    chat(system=None),
    msgs(U, {"role": "assistant", "content": "Weighted answer here.", "weight": 1},
         {"role": "user", "content": "And again?"}, {"role": "assistant", "content": "Sure, same.", "weight": 0}),
    msgs(U, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"id\": 42}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "{\"status\": \"shipped\"}"}, A, tools=TOOLS,
        parallel_tool_calls=False),
    msgs(U, {"role": "assistant", "function_call": {"name": "lookup", "arguments": "{}"}},
         {"role": "function", "name": "lookup", "content": "ok"}, A, functions=[{"name": "lookup"}]),
    msgs({"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                      {"type": "image_url", "image_url": {"url": "https://x.test/a.png",
                                                                          "detail": "high"}}]}, A),
    msgs({"role": "user", "name": "alice", "content": "Hello there friend"}, A),
])
def test_valid_chat_examples_have_no_findings(example: dict[str, Any]) -> None:
    assert one(example, model="gpt-4o") == []


@pytest.mark.parametrize("example, code", [
    ({"prompt": "a", "completion": "b"}, "legacy_format"),
    ({"text": "hello"}, "unknown_format"),
    ([1, 2], "not_an_object"),
    ({"messages": []}, "missing_messages"),
    ({"messages": "hi"}, "missing_messages"),
    (msgs("hi", A), "invalid_message"),
    (msgs({"role": "robot", "content": "x"}, A), "invalid_role"),
    (msgs({"content": "x"}, A), "invalid_role"),
    (msgs({"role": ["user"], "content": "x"}, A), "invalid_role"),                 # unhashable: no crash
    (msgs({"role": "user", "content": 5}, A), "invalid_content"),
    (msgs({"role": "user"}, A), "invalid_content"),
    (msgs({"role": "user", "content": [{"type": "audio", "x": 1}]}, A), "invalid_content"),
    (msgs(U, {"role": "assistant", "content": "Answer with weight.", "weight": 2}), "invalid_weight"),
    (msgs(U, {"role": "assistant", "content": "Answer with weight.", "weight": True}), "invalid_weight"),
    (msgs({"role": "user", "content": "hello there", "weight": 1}, A), "invalid_weight"),
    (msgs(U), "no_assistant_message"),
    (msgs(U, {"role": "assistant"}), "empty_assistant_message"),
    (msgs(U, {"role": "assistant", "content": ""}), "empty_assistant_message"),
    (msgs(U, A, A), "consecutive_assistant"),
    (msgs(U, A, tools=[{"type": "function"}]), "invalid_tools"),
    (msgs(U, A, tools={"lookup": 1}), "invalid_tools"),
    (msgs(U, A, parallel_tool_calls="yes"), "invalid_tools"),
    (msgs(U, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "lookup", "arguments": {"id": 1}}}]},
          {"role": "tool", "tool_call_id": "c1", "content": "x"}, A), "invalid_tool_calls"),
    (msgs(U, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "lookup", "arguments": "{bad"}}]},
          {"role": "tool", "tool_call_id": "c1", "content": "x"}, A), "invalid_tool_calls"),
    (msgs(U, {"role": "assistant", "tool_calls": []}), "invalid_tool_calls"),
    (msgs(U, {"role": "tool", "tool_call_id": "nope", "content": "x"}, A), "orphan_tool_message"),
    (msgs(U, {"role": "tool", "tool_call_id": {"id": "c1"}, "content": "x"}, A), "orphan_tool_message"),
    (msgs(U, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]},
          {"role": "tool", "tool_call_id": "c2", "content": "x"}, A), "orphan_tool_message"),
    (msgs(U, {"role": "assistant", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}),
     "image_in_assistant"),
    (msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}]}, A),
     "invalid_image"),
    (msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/gif;base64,AAAA"}}]},
          A), "invalid_image"),
    (msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png",
                                                                          "detail": "max"}}]}, A), "invalid_image"),
    (msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}] * 65},
          A), "too_many_images"),
    (chat(user="Tell me <|endoftext|> now"), "special_token"),
    (chat(answer="Sure <|im_end|> done"), "special_token"),
    (chat(answer="Yes"), "short_assistant_answer"),
    (msgs(A), "no_prompt_message"),
])
def test_each_chat_rule(example: Any, code: str) -> None:
    assert code in one(example, model="gpt-4o")


def test_images_need_a_vision_model() -> None:
    ex = msgs({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}]}, A)
    assert "images_not_supported" in one(ex, model="gpt-4.1-mini")
    assert "images_not_supported" not in one(ex, model="gpt-4.1")


def test_lone_surrogate_escape_is_an_error_and_a_valid_pair_is_not() -> None:
    assert one('{"messages": [{"role": "user", "content": "bad \\ud800 here"}, '
               '{"role": "assistant", "content": "Fine, thanks."}]}') == ["lone_surrogate"]
    assert one('{"messages": [{"role": "user", "content": "emoji \\ud83d\\ude00 here"}, '
               '{"role": "assistant", "content": "Fine, thanks."}]}') == []


def test_dpo_rules() -> None:
    assert one(dpo(), method="dpo") == []
    bad_input = {**dpo(), "input": {"messages": []}}
    assert "invalid_dpo_input" in one(bad_input, method="dpo")
    user_output = {**dpo(), "preferred_output": [{"role": "user", "content": "hi there"}]}
    assert "invalid_dpo_output" in one(user_output, method="dpo")
    missing = {k: v for k, v in dpo().items() if k != "non_preferred_output"}
    assert "invalid_dpo_output" in one(missing, method="dpo")


def test_reinforcement_rules() -> None:
    assert one(rft(), method="reinforcement", model="o4-mini") == []
    ends_with_assistant = msgs(U, A, reference_answer="x")
    assert "rft_last_message_not_user" in one(ends_with_assistant, method="reinforcement", model="o4-mini")
    no_reference = msgs(U)
    assert "rft_missing_reference" in one(no_reference, method="reinforcement", model="o4-mini")
    system = msgs({"role": "system", "content": "Be terse."}, U, reference_answer="4")
    assert "rft_system_message" in one(system, method="reinforcement", model="o4-mini")


def test_the_developer_role_is_taken_where_reasoning_models_train_and_only_there() -> None:
    developer = {"role": "developer", "content": "Answer with a number only."}
    assert one(msgs(developer, U, reference_answer="4"), method="reinforcement", model="o4-mini") == []
    assert "invalid_role" in one(msgs(developer, U, A), model="gpt-4.1-mini")


def test_method_support_depends_on_the_model() -> None:
    dpo_file = jsonl([{**dpo(), "input": {"messages": [{"role": "user", "content": f"Prompt {i}"}]}}
                      for i in range(10)])
    assert check(dpo_file, model="gpt-4.1-mini").valid
    report = check(dpo_file, model="gpt-4o-mini")
    assert "method_not_supported" in codes(report, "errors")
    assert "method_not_supported" in codes(check(jsonl(padded([])), model="o4-mini"), "errors")


def test_detected_method_and_a_line_in_another_format() -> None:
    lines = padded([]) + [dpo()]
    report = check(jsonl(lines))
    assert report.method == "supervised"
    assert at(report, "format_mismatch") == [11]
    assert not report.valid


def test_majority_format_wins_when_the_odd_line_comes_first() -> None:
    lines = [chat()] + [{**dpo(), "input": {"messages": [{"role": "user", "content": f"P {i}"}]}} for i in range(10)]
    report = check(jsonl(lines), model="gpt-4.1")
    assert report.method == "dpo"
    assert at(report, "format_mismatch") == [1]


def test_explicit_method_flags_every_other_format() -> None:
    report = check(jsonl(padded([])), method="dpo")
    assert at(report, "format_mismatch") == list(range(1, 11))


def test_reinforcement_is_detected_from_the_data() -> None:
    lines = [rft(question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(10)]
    report = check(jsonl(lines), model="o4-mini")
    assert report.method == "reinforcement"
    assert report.valid, report.errors
    assert report.stats["cost"]["estimated_usd"] is None  # billed per hour, not per token


def test_messages_json_is_parsed_strictly() -> None:
    assert "invalid_json" in one('{"messages": [}')
    assert "invalid_json" in one('{"messages": NaN}')
    data = jsonl(padded([])).replace(b"\n", b"\n", 1)
    assert check(data).valid
    assert json  # keep the import used for readers of this module


def test_deeply_nested_json_is_an_invalid_json_line_not_a_crash() -> None:
    report = check(jsonl(padded(["[" * 20_000 + "]" * 20_000])))
    assert [(f.line, f.code) for f in report.errors] == [(1, "invalid_json")]
    assert "nested too deeply" in report.errors[0].message


def test_hostile_keys_and_roles_are_echoed_short_and_masked() -> None:
    key = "k" * 200_000 + " AccountKey=" + "Ab1+" * 20 + " password=hunter2hunter2"
    role = "password=hunter2hunter2"
    report = check(jsonl(padded([{key: 1}, {"messages": [{"role": role, "content": "x"}]}])))
    shown = " ".join(f.message for f in report.errors)
    assert {f.code for f in report.errors} >= {"unknown_format", "invalid_role"}
    assert len(shown) < 600 and "hunter2" not in shown and "AccountKey=Ab1" not in shown


def test_one_word_is_str_split_on_every_character_and_on_labels() -> None:
    import sys

    from shared.validation.formats import one_word

    texts = ["", " ", "positive", " positive ", "not_spam", "follow-up", "two words", "a\u00a0b", "x\u3000y",
             "東京", "caf\u00e9", "\u0663", "a\u2028b", "label\t", "\x1cx", "x\x1fy"]
    texts += [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    texts += ["a" + chr(c) + "b" for c in range(0x3000)]
    assert [one_word(t) for t in texts] == [len(t.split()) <= 1 for t in texts]
