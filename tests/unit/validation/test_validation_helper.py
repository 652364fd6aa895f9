"""The scan helper process (hashes and privacy scan) and the inlined message checks give the same reports."""

from __future__ import annotations

import logging
import os
import signal

from vhelpers import chat, dpo, jsonl, padded

from shared.validation import ValidationOptions, engine, formats, rawscan, validate_file, worker

TOOLS = [{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}]


def _rows() -> list:
    call = {"id": "call_1", "type": "function", "function": {"name": "lookup_order", "arguments": '{"id": "7"}'}}
    rows = [
        chat(user="Mail jane.doe@contoso.com or call +44 20 7946 0958, card 4111 1111 1111 1111", tools=TOOLS),
        {"messages": [{"role": "user", "content": "where?", "name": "bob"},
                      {"role": "assistant", "tool_calls": [call]},
                      {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
                      {"role": "assistant", "content": "It shipped <|im_end|> yesterday.", "weight": 1}],
         "tools": TOOLS},
        "", "   ", "{bad", dpo(), chat(answer="ok"), "[1]",
        chat(user="AKIAIOSFODNN7EXAMPLE is my key, IBAN GB82 WEST 1234 5698 7654 32"),
    ]
    return padded(rows * 40, 400)


def _report(data: bytes, **opts) -> dict:
    report = validate_file([data[i:i + 5000] for i in range(0, len(data), 5000)], name="t",
                           options=ValidationOptions(workers=1, **opts))
    return {"report": report.to_dict(), "hashes": sorted(report.hashes.items())}


def _data() -> bytes:
    return b"\xef\xbb\xbf" + jsonl(_rows()).replace(b"\n", b"\r\n", 50)


def test_the_scan_helper_gives_the_inline_report(monkeypatch, caplog) -> None:
    from shared.validation import lines as lines_mod

    data = _data()
    inline = _report(data)
    monkeypatch.setattr(engine, "SCAN_HELPER_AFTER_BYTES", -1)  # from the first block
    monkeypatch.setattr(lines_mod, "BLOCK_BYTES", 20_000)
    with caplog.at_level(logging.DEBUG, logger="shared.validation.engine"):
        assert _report(data) == inline
    assert [r.getMessage().split(" after ")[0] for r in caplog.records if "scan helper" in r.getMessage()] == [
        "t: scan helper started"]
    codes = {f["code"] for f in inline["report"]["errors"] + inline["report"]["warnings"]}
    assert {"pii_email", "pii_phone", "pii_card", "pii_iban", "secret", "special_token",
            "blank_line", "duplicate_example", "invalid_json"} <= codes


def test_a_failing_helper_falls_back_to_inline_scanning(monkeypatch) -> None:
    from shared.validation import lines as lines_mod

    data = _data()
    inline = _report(data)
    real_result = rawscan.Helper.result
    calls = []

    def dying(self):  # the helper process dies after its first result
        calls.append(1)
        if len(calls) == 2:
            os.kill(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        return real_result(self)

    monkeypatch.setattr(rawscan.Helper, "result", dying)   # the helper process is killed: no port reaches it
    monkeypatch.setattr(engine, "SCAN_HELPER_AFTER_BYTES", -1)
    monkeypatch.setattr(lines_mod, "BLOCK_BYTES", 20_000)
    assert _report(data) == inline
    assert len(calls) >= 2


def test_scan_block_matches_the_line_rules() -> None:
    data = b'{"a": "x@contoso.com"}\r\n\n  \n\xef\xbb\xbf {"a": 1} \n{"b": 2}'
    hashes, found = rawscan.scan_block(data, 10)
    assert len(hashes) == 3 * 8
    assert found == [(10, "pii_email", "email address x***@c***.com")]


def test_counts_are_the_same_whether_deferred_or_not_on_orjson_only_lines(monkeypatch) -> None:
    # No line needs json here, so role counts, names, tool calls and tools all take the fast paths.
    rows = padded(_rows()[:2] * 3 + [chat(system="s" * 30, user="u")], 30)
    rows = [r for r in rows if isinstance(r, dict)]
    data = jsonl(rows)
    for model in ("gpt-4.1-mini", "gpt-35-turbo"):
        fast = _report(data, model=model)
        monkeypatch.setattr(worker, "_orjson_loads", None)
        monkeypatch.setattr(formats, "DEFER_MIN_CHARS", 1 << 30)
        slow = _report(data, model=model)
        monkeypatch.undo()
        assert fast == slow
        assert fast["report"]["stats"]["tokens"]["total"] > 0
