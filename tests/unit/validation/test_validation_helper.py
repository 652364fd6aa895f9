"""The scan helper process (hashes and privacy scan) and the inlined message checks give the same reports."""

from __future__ import annotations

import logging
import os
import signal
import sys

import pytest
from vhelpers import chat, dpo, jsonl, padded

from shared.validation import Tuning, ValidationOptions, counting, engine, rawscan, validate_file

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


def _report(data: bytes, progress=None, **opts) -> dict:
    report = validate_file([data[i:i + 5000] for i in range(0, len(data), 5000)], name="t",
                           options=ValidationOptions(workers=1, **opts), progress=progress)
    return {"report": report.to_dict(), "hashes": sorted(report.hashes.items())}


def _data() -> bytes:
    return b"\xef\xbb\xbf" + jsonl(_rows()).replace(b"\n", b"\r\n", 50)


HELPER_EARLY = Tuning(scan_helper_after_bytes=-1, block_bytes=20_000)  # a helper from the first block on


def test_the_scan_helper_gives_the_inline_report(caplog) -> None:
    data = _data()
    inline = _report(data)
    with caplog.at_level(logging.DEBUG, logger="shared.validation.engine"):
        assert _report(data, tuning=HELPER_EARLY) == inline
    assert [r.getMessage().split(" after ")[0] for r in caplog.records if "scan helper" in r.getMessage()] == [
        "t: scan helper started"]
    codes = {f["code"] for f in inline["report"]["errors"] + inline["report"]["warnings"]}
    assert {"pii_email", "pii_phone", "pii_card", "pii_iban", "secret", "special_token",
            "blank_line", "duplicate_example", "invalid_json"} <= codes


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile
        return b""


def _helper_processes(name: bytes | None = None) -> list[int]:
    """This process's children whose command line names `name` (default: rawscan.py, the scan helper)."""
    name = rawscan.__file__.encode() if name is None else name
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
        if ppid == me and name in _cmdline(int(entry)):
            found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the helper process through /proc")
def test_a_killed_helper_falls_back_to_inline_scanning() -> None:
    data = _data()
    inline = _report(data)
    killed_at: list[int] = []

    def kill_the_helper(bytes_read: int) -> None:  # called as the file is read
        if not killed_at:
            for pid in _helper_processes():
                os.kill(pid, signal.SIGKILL)
                killed_at.append(bytes_read)

    assert _report(data, progress=kill_the_helper, tuning=HELPER_EARLY) == inline
    assert killed_at, "no scan helper process was running to kill"
    assert len(data) - killed_at[0] > HELPER_EARLY.block_bytes  # blocks were still to come after the kill


def test_scan_block_matches_the_line_rules() -> None:
    data = b'{"a": "x@contoso.com"}\r\n\n  \n\xef\xbb\xbf {"a": 1} \n{"b": 2}'
    hashes, found = rawscan.scan_block(data, 10)
    assert len(hashes) == 3 * 8
    assert found == [(10, "pii_email", "email address x***@c***.com")]


def test_counts_are_the_same_whether_deferred_or_not_on_orjson_only_lines() -> None:
    # No line needs json here, so role counts, names, tool calls and tools all take the fast paths.
    rows = padded(_rows()[:2] * 3 + [chat(system="s" * 30, user="u")], 30)
    rows = [r for r in rows if isinstance(r, dict)]
    data = jsonl(rows)
    for model in ("gpt-4.1-mini", "gpt-35-turbo"):
        fast = _report(data, model=model)
        slow = _report(data, model=model, tuning=Tuning(orjson=False, defer_min_chars=1 << 30))
        assert fast == slow
        assert fast["report"]["stats"]["tokens"]["total"] > 0


def test_digests_name_exact_duplicates_whichever_way_a_block_is_hashed() -> None:
    import random

    import numpy as np

    rng = random.Random(3)
    pieces = [b"", b" ", b"\r", b"\t", b"\xef\xbb\xbf", b"{}", b'{"a": 1}', b'{"a": 2}', b"\x0c", b"\xa0"]
    for _ in range(2000):
        lines = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 3))) for _ in range(rng.randint(1, 9))]
        data = b"\n".join(lines)
        hashes, _ = rawscan.scan_block(data, 1)
        assert hashes == rawscan._digests_line_by_line(data).tobytes()  # the path of blocks of huge lines
        keys = [k for k in (line.strip() for line in lines) if k]  # blank lines have no digest
        keys = [k[3:].strip() if k.startswith(b"\xef\xbb\xbf") else k for k in keys]
        digests = np.frombuffer(hashes, np.uint64).tolist()
        assert len(digests) == len(keys)
        assert all((digests[i] == digests[j]) == (keys[i] == keys[j])
                   for i in range(len(keys)) for j in range(len(keys)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipe sizes are Linux's")
def test_blocks_cross_to_the_helper_through_a_wide_pipe() -> None:
    import fcntl
    from pathlib import Path

    if int(Path("/proc/sys/fs/pipe-max-size").read_text()) < 1 << 20:
        pytest.skip("this machine caps pipes below 1 MiB")
    helper = rawscan.Helper()
    try:
        assert helper._side._proc.stdin is not None
        assert fcntl.fcntl(helper._side._proc.stdin.fileno(), getattr(fcntl, "F_GETPIPE_SZ", 1032)) == 1 << 20
    finally:
        helper.close()


COUNTING_EARLY = Tuning(count_helper_after_bytes=-1, block_bytes=20_000)  # counted in a helper from the first block


@pytest.fixture
def cold_process():
    """As a fresh process: no tokenizer built yet (a process that has one counts in a thread)."""
    from shared.validation import tokens

    tokens.fast_counter.cache_clear()
    tokens._BUILT.clear()
    return tokens


def test_the_counting_helper_gives_the_inline_report(caplog, cold_process) -> None:
    data = _data()
    with caplog.at_level(logging.DEBUG, logger="shared.validation.engine"):
        helped = [_report(data, tuning=COUNTING_EARLY), _report(data, model="gpt-35-turbo", tuning=COUNTING_EARLY)]
    inline = _report(data)  # after: this builds the tokenizers here
    assert helped == [inline, _report(data, model="gpt-35-turbo")]
    assert [r.getMessage().split(" after ")[0] for r in caplog.records
            if "counting helper" in r.getMessage()] == ["t: counting helper chosen"] * 2
    cold_process.Counter("o200k_base").count("warm")  # a warm Functions worker: its tokenizer is built
    with caplog.at_level(logging.DEBUG, logger="shared.validation.engine"):
        caplog.clear()
        assert _report(data, tuning=COUNTING_EARLY) == inline
    assert not [r for r in caplog.records if "counting helper" in r.getMessage()]
    assert inline["report"]["stats"]["tokens"]["total"] > 0


def test_texts_cross_to_the_counting_helper_whole_and_in_order() -> None:
    from shared.validation import counting

    for texts in ([], [""], ["", ""], ["a\x00b", "", "东京 🙂", "\u2028", "x" * 70_000]):
        assert counting._texts(counting._request(texts)) == [t.encode() for t in texts]
    with pytest.raises(ValueError, match="2 texts announced, 3 received"):
        counting._texts(counting._COUNT.pack(2) + b"a\xffb\xffc")


def test_a_file_counted_in_the_helper_builds_no_tokenizer_here(cold_process) -> None:
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Peru?"},
                         {"role": "assistant", "content": "Lima is the capital of Peru."}]}
    weighted = {"messages": [{"role": "system", "content": "Answer in French."},
                             {"role": "user", "content": "Hello"},
                             {"role": "assistant", "content": "Bonjour à vous.", "weight": 1}]}  # the general path
    rows = [{**chat, "messages": [*chat["messages"][:2], {"role": "assistant", "content": f"Lima, {i}."}]}
            for i in range(400)] + [weighted] * 3
    report = _report(jsonl(rows), tuning=COUNTING_EARLY)["report"]
    assert report["stats"]["tokens"]["total"] > 0
    # Every text, role names too (tokens.ROLE_TOKENS), counted by the helper: no ~64 MB tokenizer built here.
    assert not cold_process.built("o200k_base")


def test_a_killed_counting_helper_is_counted_in_this_process(caplog, cold_process) -> None:
    from shared.validation import counting

    data = _data()
    killed: list[int] = []

    def kill_the_counting_helper(bytes_read: int) -> None:
        if not killed and bytes_read > 3 * COUNTING_EARLY.block_bytes:
            for pid in _helper_processes(counting.__file__.encode()):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with caplog.at_level(logging.WARNING, logger="shared.validation.engine"):
        helped = _report(data, progress=kill_the_counting_helper, tuning=COUNTING_EARLY)
    assert helped == _report(data)
    assert killed, "no counting helper process was running to kill"
    assert "the counting helper process failed; counting in this process" in caplog.text


def test_plain_lines_are_never_counted_by_the_main_process(cold_process) -> None:
    # A tokenizer costs ~0.5 s of the main thread and ~64 MB: with the helper, a file of plain lines needs none.
    tokens = cold_process
    rows = padded([chat(user=f"question {i}?", answer=f"answer number {i}.") for i in range(3000)], 3000)
    report = validate_file([jsonl(rows)], name="t", options=ValidationOptions(tuning=COUNTING_EARLY))
    assert report.valid and report.stats["tokens"]["total"] > 3000 * 10
    assert tokens.fast_counter.cache_info().misses == 0
    # Lines the general path checks (a name, an empty system message) need no tokenizer here either.
    named = [chat(system="", user=f"question {i}?", answer=f"answer number {i}.") for i in range(3000)]
    for row in named:
        row["messages"][1]["name"] = "customer"
    validate_file([jsonl(named)], name="t", options=ValidationOptions(tuning=COUNTING_EARLY))
    assert tokens.fast_counter.cache_info().misses == 0
    validate_file([jsonl(rows)], name="t", options=ValidationOptions())  # one block: counted in a thread
    assert tokens.fast_counter.cache_info().misses == 1


def test_a_counting_helper_that_cannot_start_is_counted_in_this_process(caplog, cold_process, monkeypatch) -> None:
    from shared.validation import counting

    def no_process(*_args, **_kwargs):
        raise OSError(24, "Too many open files")

    data = _data()
    monkeypatch.setattr(counting.sidecar, "Sidecar", no_process)  # as when no process or pipe is left
    with caplog.at_level(logging.WARNING):
        helped = _report(data, tuning=COUNTING_EARLY)
    monkeypatch.undo()
    assert helped == _report(data)
    assert "counting helper process not started" in caplog.text


def test_closing_a_helper_that_does_not_answer_kills_it(tmp_path) -> None:
    import time

    from shared.validation import sidecar

    slow = tmp_path / "slow_helper.py"
    slow.write_text("import sys, time\n"
                    "def serve():\n"
                    "    sys.modules['_ftops_sidecar'].serve(lambda request: (time.sleep(60), request)[1])\n")
    side = sidecar.Sidecar(str(slow), "_slow_helper")
    asked = side.submit(b"x")
    time.sleep(0.5)  # it has read the request and sleeps on it
    t0 = time.monotonic()
    side.close(timeout=0.5)
    assert time.monotonic() - t0 < 5
    with pytest.raises(sidecar.HelperFailed):
        asked.result(timeout=1)
    assert side._proc.poll() is not None


class _HeldHelper(counting.InHelper):
    """A counting helper's stand-in: it counts at once (in this process) but answers nothing until the engine first
    waits for an answer, as the real one answers nothing while it builds its tokenizer. `waited_after`: how many
    batches (here one a block) the engine had handed it by then."""

    def __init__(self, counter, *, building: bool) -> None:
        super().__init__(counter)
        self._building, self.handed, self.waited_after, self.answering = building, 0, None, False

    def building(self) -> bool:
        return self._building and not self.answering

    def submit(self, texts):
        self.handed += 1
        return _Held(self, self.counter.count_array(texts))

    def close(self) -> None:
        pass


class _Held:
    def __init__(self, helper: _HeldHelper, counts) -> None:
        self._helper, self._counts = helper, counts

    def done(self) -> bool:
        return self._helper.answering

    def result(self):
        if not self._helper.answering:
            self._helper.waited_after, self._helper.answering = self._helper.handed, True
        return self._counts


@pytest.mark.parametrize("building", [True, False])
def test_more_blocks_wait_for_their_counts_only_while_the_helper_builds_its_tokenizer(building: bool) -> None:
    """The main thread checks blocks_ahead_building blocks ahead while the counting helper builds its tokenizer
    (it would wait ~0.5 s with a core idle), blocks_ahead once it answers: what waits is bounded either way."""
    # Blocks of 50 lines (the line cap; far under block_bytes): the engine waits once more than `ahead` blocks' lines do.
    tuning = Tuning(block_lines=50, blocks_ahead=2, blocks_ahead_building=6, scan_helper_after_bytes=1 << 30)
    helpers = []

    class Run(engine._Run):   # the counting helper handed in
        def _counting(self, counter):
            helpers.append(_HeldHelper(counter, building=building))
            return helpers[0]

    data = jsonl([chat(user=f"question {i}?", answer=f"answer number {i} is here.") for i in range(2000)])
    report = Run("t", ValidationOptions(tuning=tuning), None).run([data])
    assert report.valid and report.examples == 2000
    [held] = helpers
    assert held.waited_after == (tuning.blocks_ahead_building if building else tuning.blocks_ahead) + 1
    assert report.stats == validate_file([data], name="t", options=ValidationOptions()).stats


def test_a_counting_helper_is_building_until_its_first_answer() -> None:
    from shared.validation.tokens import Counter

    helper = counting.InHelper(Counter("o200k_base"))
    try:
        assert not helper.building()   # not started: nothing to wait for
        first = helper.submit(["Hello there.", "Où est la gare ?"])
        assert helper.building()       # its tokenizer takes ~0.5 s to build: no answer yet
        assert first.result().tolist() == [3, 6]   # tiktoken o200k_base
        assert not helper.building()
    finally:
        helper.close()
