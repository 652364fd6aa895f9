"""The per-block pipeline: decode, parse, check, count, scan. Runs inline or in worker processes.

A block's result is small and picklable (findings plus packed per-example arrays), so moving it
between processes costs little next to the work.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import compress
from operator import itemgetter, not_
from typing import Any

import numpy as np

from shared.run.models import SUPERVISED, ModelFacts, UnknownModelError, model_facts

from . import counting
from .counting import Counts
from .fastpath import PlainBlock, PlainChecker, plain_totals
from .formats import DECODE_JSON, SLOTS, Checker, Example
from .lines import Block
from .options import FINDINGS_PER_CODE, MIB, ValidationOptions
from .rawscan import Helper, scan_block
from .tokens import Counter

try:  # google-re2: linear time (see privacy.py); the same pattern works in `re`
    import re2 as _re
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    import re as _re

_orjson_loads: Callable[[bytes], Any] | None
try:  # orjson: a faster parser; every line it refuses is parsed again by json, which decides.
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - exercised only where the wheel is missing
    _orjson_loads = None

METHOD_CODES = {"supervised": "S", "dpo": "D", "reinforcement": "R"}
_METHOD_BYTES = {method: ord(code) for method, code in METHOD_CODES.items()}
_UNPARSED = object()
_LINE = itemgetter(0)


@dataclass
class BlockResult:
    first_line: int
    findings: list[tuple[int, str, str]] = field(default_factory=list)
    examples: int = 0  # non-blank lines
    lines: array[int] = field(default_factory=lambda: array("I"))  # per usable example: its line
    methods: bytearray = field(default_factory=bytearray)  # per usable example: S, D or R
    hashes: array[int] = field(default_factory=lambda: array("Q"))  # per non-blank line (with hash_lines)
    hash_lines: array[int] = field(default_factory=lambda: array("I"))
    not_listed: dict[str, int] = field(default_factory=dict)  # per code: findings past the cap, counted
    tokens: int = 0  # billed tokens of the block's usable examples
    capped_tokens: int = 0  # the same, each example's counted up to the model's limit (the service cuts it)
    context: array[int] = field(default_factory=lambda: array("I"))  # per usable example: longest sequence
    assistant_tokens: int = 0
    messages: int = 0


class Context:
    """What a process needs to check lines: options, model facts and its token counter."""

    def __init__(self, options: ValidationOptions) -> None:
        self.options = options
        self.tuning = options.tuning
        # None: json parses every line (no orjson installed, or the tuning asks for json only).
        self.orjson_loads = _orjson_loads if options.tuning.orjson else None
        self.facts: ModelFacts | None
        try:
            self.facts = model_facts(options.model)
        except UnknownModelError:
            self.facts = None
        self.counter = Counter(self.facts.encoding) if self.facts else None
        # Plain chat lines are checked over columns (fastpath.py) unless the tuning says no, nothing is counted
        # (an unknown model) or the method forced on the file reads a messages line otherwise.
        self.plain = (PlainChecker(self.counter) if options.tuning.plain and self.counter is not None
                      and options.method in (None, SUPERVISED) else None)


# A decoded string can hold "<|" only if its raw line holds "<", or "<" escaped as \u003c or \u003C.
# One RE2 pass per block (bytes.find is slow on \u00XX-heavy text), then `in` per line if needed.
_ESCAPED_LT = _re.compile(rb"\\u003[cC]")  # RE2: ~7x faster than `<|...` here
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", bytes(10))
_LONG_NUMBER = bytes(19)  # 19 digits in a row: maybe an integer beyond 64 bits


def _long_number_lines(data: bytes) -> set[int]:
    """Indexes of the lines of `data` holding a run of 19+ digits (as a number or inside a string).

    orjson reads integers outside [-2**63, 2**64) as floats where json keeps exact ints, which could
    change a message or a token count: such lines are parsed with json instead.
    """
    nul = data.translate(_DIGITS_TO_NUL)
    found: set[int] = set()
    pos = nul.find(_LONG_NUMBER)
    line, counted = 0, 0
    while pos != -1:
        line += data.count(b"\n", counted, pos)
        found.add(line)
        counted = data.find(b"\n", pos)
        if counted == -1:
            break
        pos = nul.find(_LONG_NUMBER, counted)
    return found


@dataclass
class PendingBlock:
    """A checked block whose texts are still being counted (see finish_block)."""

    res: BlockResult
    usable: list[tuple[int, Example]]  # (line, example) per usable example, in order
    batches: list[tuple[list[int], Counts]]  # slots of a batch of texts, their counts
    n_slots: int
    # Content hashes of the non-blank lines and privacy findings (added after the other findings:
    # their order in the report), or None while the scan helper computes them from `data`.
    hashes: bytes | None
    privacy: list[tuple[int, str, str]] | None
    data: bytes = b""
    helper: Helper | None = None
    plain: PlainBlock | None = None  # the block's plain lines, checked over columns
    plain_counts: list[Counts] = field(default_factory=list)  # their texts' counts

    def counted(self) -> bool:
        """Whether every count it waits for is in (finish_block would not wait for them)."""
        return all(counts.done() for _, counts in self.batches) and all(c.done() for c in self.plain_counts)


def prepare_block(block: Block, ctx: Context, counts: counting.Inline | None = None,
                  helper: Helper | None = None) -> PendingBlock:
    """Everything but the token counts of the texts, in the calling thread. Those are handed to `counts` in batches
    (counting.py: a thread or a helper process counts them meanwhile; by default they are counted at once).
    With a `helper` (rawscan.Helper), hashes and the privacy scan are computed there meanwhile."""
    counter = ctx.counter
    if counts is None and counter is not None:
        counts = counting.Inline(counter, ctx.tuning.batch_texts)
    count = counts.submit if counts is not None else _no_counts
    data = block.data
    first = block.first_line
    if helper is not None and not helper.broken:
        helper.submit(data, first)  # first: it works while this thread parses
    else:
        helper = None
    res = BlockResult(first)
    found = res.findings
    listed: dict[str, int] = {}
    not_listed = res.not_listed
    line_no = 0

    this_line: list[tuple[str, str]] = []  # the findings of the line being checked (while lines are remembered)
    remember = False

    def report(code: str, message: str) -> None:
        if remember:
            this_line.append((code, message))
        n = listed.get(code, 0)
        if n < FINDINGS_PER_CODE:
            listed[code] = n + 1
            found.append((line_no, code, message))
        else:
            not_listed[code] = not_listed.get(code, 0) + 1

    checker = Checker(ctx.facts, counter, report, defer_min_chars=ctx.tuning.defer_min_chars)
    check = checker.check
    forced = ctx.options.method
    orjson_loads = ctx.orjson_loads
    batch_texts = counts.batch_texts if counts is not None else 1 << 30  # none deferred without a counter
    usable: list[tuple[int, Example]] = []
    usable_append = usable.append
    hash_lines_append = res.hash_lines.append
    batches: list[tuple[list[int], Counts]] = []
    # Lines that cannot hold "<|" in a string (see _ESCAPED_LT) skip the special-token check.
    special = b"<" in data or _ESCAPED_LT.search(data) is not None
    checker.special = special
    examples = 0
    plain: PlainBlock | None = None
    n_lines = _newlines(data) + 1
    if len(data) < _SPARSE_BYTES_PER_LINE * n_lines:  # mostly blank or tiny lines: the blank ones found in bulk
        lines, blanks = _sparse_lines(data)
        _report_blank(blanks[:FINDINGS_PER_CODE].tolist(), len(blanks), first, found, listed, not_listed)
        todo: Iterator[tuple[int, bytes]] = iter(lines)
        sample = [raw for _, raw in lines[:_SAMPLE_LINES]]
    elif len(data) < ctx.tuning.big_block_bytes:
        raws = data.split(b"\n")  # a copy of the block in lines: it is not one of a few huge lines
        if ctx.plain is not None:
            plain = ctx.plain.check(raws, first, special)
            rest = plain.rest
        else:
            rest = list(range(len(raws)))
        blank = [not raws[i].strip() for i in rest]  # bytes.strip() removes a CR too
        if any(blank):  # in bulk: a file may hold millions of blank lines
            blank_lines = list(compress(rest, blank))
            _report_blank(blank_lines[:FINDINGS_PER_CODE], len(blank_lines), first, found, listed, not_listed)
            rest = list(compress(rest, map(not_, blank)))
        todo = ((i, raws[i]) for i in rest)
        sample = [raws[i] for i in rest[:_SAMPLE_LINES]]
    else:
        todo = _lines(data)
        sample = []
    # Only where some line is left to orjson: none is, in a block of plain lines.
    long_numbers = (_long_number_lines(data) if orjson_loads is not None and (plain is None or plain.rest)
                    else set())
    # Lines seen before in this block, by their bytes: their findings, and their example if it waits for no count.
    # A file may repeat one bad line millions of times ("{}"), and what a line gives depends on its bytes alone.
    # Only in a block whose first lines repeat: remembering costs distinct lines ~0.2 µs each.
    seen_lines: dict[bytes, tuple[tuple[tuple[str, str], ...], Example | None]] = {}
    remember = len(set(sample)) < len(sample)
    for i, raw in todo:
        line_no = first + i
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw or raw.isspace():  # bytes.strip() would leave nothing
            report("blank_line", "blank line")
            continue
        examples += 1
        hash_lines_append(line_no)
        if remember:
            seen = seen_lines.get(raw)
            if seen is not None:
                for code, message in seen[0]:
                    report(code, message)
                if seen[1] is not None:
                    usable_append((line_no, seen[1]))
                continue
            this_line.clear()
            deferred = len(checker.texts)
        if special:
            checker.special = b"<" in raw or b"\\u003" in raw
        obj = _UNPARSED
        if orjson_loads is not None and not (long_numbers and i in long_numbers):
            try:
                obj = orjson_loads(raw)  # valid UTF-8 and valid JSON (json would agree), or an error
            except ValueError:
                pass  # json parses it again below: it decides, and words the error
        if obj is _UNPARSED:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                report("invalid_utf8", f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}")
                continue
            try:
                obj = DECODE_JSON(text)
            except RecursionError:  # arrays or objects nested ~1,000 deep: no chat example is
                report("invalid_json", "nested too deeply to parse (more than 1,000 levels)")
                continue
            except ValueError as exc:
                where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
                msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                report("invalid_json", f"{msg}{where}")
                continue
            checker.defer = False  # json keeps lone surrogates: count now, flag them in order
        else:
            checker.defer = True  # orjson refuses lone surrogates: nothing to flag while counting
        ex = check(obj, forced)
        if ex.method is not None and forced and ex.method != forced:
            report("format_mismatch", f"{ex.method} example in a {forced} dataset")
        if (remember and len(raw) <= _REMEMBERED_BYTES and len(seen_lines) < _REMEMBERED_LINES
                and (ex.method is None or len(checker.texts) == deferred)):
            seen_lines[raw] = (tuple(this_line), ex if ex.method is not None else None)
        if ex.method is None:
            continue
        usable_append((line_no, ex))
        if len(checker.texts) >= batch_texts:
            batches.append((checker.slots, count(checker.texts)))
            checker.texts, checker.slots = [], []
    res.examples = examples
    if checker.texts:
        batches.append((checker.slots, count(checker.texts)))
        checker.texts, checker.slots = [], []
    n_slots = checker.n_examples * SLOTS
    if helper is not None:
        pending = PendingBlock(res, usable, batches, n_slots, None, None, data, helper)
    else:
        # Hashed here: in the counting thread, a Python loop re-taking the GIL per line stalls both threads.
        hashes, scanned = scan_block(data, first)
        pending = PendingBlock(res, usable, batches, n_slots, hashes, scanned)
    if plain is not None and len(plain.lines):
        _add_plain(pending, plain, count, batch_texts)
    return pending


_SAMPLE_LINES = 64  # the lines a block's general path looks at to decide whether it remembers lines
_REMEMBERED_BYTES = 256  # lines are remembered (per block) up to this long...
_REMEMBERED_LINES = 4096  # ... and this many of them


def _newlines(data: bytes) -> int:
    """The newlines in `data`: numpy compares ~4x faster than bytes.count walks (one comparison array per MiB)."""
    view = np.frombuffer(data, np.uint8)
    return sum(int(np.count_nonzero(view[k:k + MIB] == 10)) for k in range(0, len(view), MIB))


_SPARSE_BYTES_PER_LINE = 4  # a block with fewer bytes than this per line is mostly blank or tiny lines
_WHITESPACE = np.zeros(256, bool)
_WHITESPACE[list(b" \t\n\r\x0b\x0c")] = True  # what bytes.strip() removes, and the line break


def _sparse_lines(data: bytes) -> tuple[list[tuple[int, bytes]], np.ndarray]:
    """(index, bytes) of the non-blank lines of `data`, and the indexes of its blank lines, over arrays: a block
    of 16,384 blank lines costs what a few of its examples do."""
    byte = np.frombuffer(data, np.uint8)
    breaks = np.flatnonzero(byte == 0x0A)
    n_lines = len(breaks) + 1
    used = np.zeros(n_lines, bool)
    used[np.searchsorted(breaks, np.flatnonzero(~_WHITESPACE[byte]))] = True  # the line of each other byte
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(data)]))
    kept = np.flatnonzero(used)
    lines = [(i, data[a:b]) for i, a, b in zip(kept.tolist(), starts[kept].tolist(), ends[kept].tolist(), strict=True)]
    return lines, np.flatnonzero(~used)


def _report_blank(first_ones: list[int], n: int, first_line: int, found: list[tuple[int, str, str]],
                  listed: dict[str, int], not_listed: dict[str, int]) -> None:
    """A block's `n` blank lines, of which `first_ones` are the first (indexes in the block, in order; prepare_block's
    report() never sees them): as many as the cap allows listed, the rest counted."""
    room = FINDINGS_PER_CODE - listed.get("blank_line", 0)
    found += [(first_line + i, "blank_line", "blank line") for i in first_ones[:room]]
    listed["blank_line"] = listed.get("blank_line", 0) + min(room, n)
    if n > room:
        not_listed["blank_line"] = not_listed.get("blank_line", 0) + n - room


def _no_counts(texts: list[str]) -> Counts:
    raise AssertionError("texts deferred without a counter")  # Checker defers only with one


def _lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(index, bytes) of each line of `data`, one at a time: never a second copy of the whole block (memory)."""
    find = data.find
    pos, end = 0, len(data)
    i = -1
    while pos <= end:
        i += 1
        nl = find(b"\n", pos)
        if nl == -1:
            nl = end
        yield i, data[pos:nl]
        pos = nl + 1


def _add_plain(pending: PendingBlock, plain: PlainBlock, count: Callable[[list[str]], Counts],
               batch_texts: int) -> None:
    """The plain lines join the block: their findings, lines and texts (counted in batches, as the others)."""
    res = pending.res
    res.examples += len(plain.lines)
    for code, n in plain.not_listed.items():
        res.not_listed[code] = res.not_listed.get(code, 0) + n
    if plain.findings:  # both sides are capped per code in line order: so is their union, capped again
        res.findings[:] = _capped(sorted(res.findings + plain.findings, key=_LINE), res.not_listed)
    lines = np.concatenate((np.frombuffer(res.hash_lines, np.uint32), np.asarray(plain.lines, np.uint32)))
    res.hash_lines = array("I", np.sort(lines, kind="stable").tobytes())
    texts = plain.texts
    pending.plain_counts = [count(texts[k:k + batch_texts])
                            for k in range(0, len(texts), batch_texts)]
    plain.texts = []
    pending.plain = plain


def finish_block(pending: PendingBlock, ctx: Context) -> BlockResult:
    """Add the deferred counts and check the limit (waiting for the counts): the block's result."""
    res, found = pending.res, pending.res.findings
    if pending.hashes is None or pending.privacy is None:  # from the helper, or inline if it failed
        scanned = pending.helper.result() if pending.helper is not None else None
        if scanned is None:
            scanned = scan_block(pending.data, res.first_line)
        pending.hashes, pending.privacy = scanned
        pending.data = b""
    res.hashes.frombytes(pending.hashes)  # native order: the helper runs on this machine
    limit, model = (ctx.facts.max_tokens_per_example, ctx.facts.name) if ctx.facts else (None, "")
    over_limit = _usable_finish(pending, limit, model) if pending.usable else []
    if pending.plain is not None:
        assert ctx.plain is not None  # the plain lines were picked with it
        over_limit = sorted(over_limit + _plain_finish(pending, ctx.plain.message_tokens(), limit, model), key=_LINE)
    found += _capped(over_limit, res.not_listed)
    found += _capped(pending.privacy, res.not_listed)
    found.sort(key=_LINE)  # stable: per line, structure findings before privacy ones
    return res


def _usable_finish(pending: PendingBlock, limit: int | None, model: str) -> list[tuple[int, str, str]]:
    """Add the general path's usable examples to the block's result, with their deferred counts (over columns: a
    file may hold millions of small examples); their over_token_limit findings."""
    res, usable = pending.res, pending.usable
    sums = np.zeros(pending.n_slots, np.int64)  # per slot: its deferred texts' tokens
    for slots, counts in pending.batches:
        np.add.at(sums, np.asarray(slots, np.int64), counts.result())
    examples = [ex for _, ex in usable]
    n = len(examples)

    def column(values: list[int]) -> np.ndarray:
        return np.fromiter(values, np.int64, n)

    slot = column([ex.slot for ex in examples])
    base = column([ex.base for ex in examples]) + sums[slot]
    out0 = column([ex.out0 for ex in examples]) + sums[slot + 1] + sums[slot + 2]
    out1 = column([ex.out1 for ex in examples]) + sums[slot + 3] + sums[slot + 4]
    context = base + np.maximum(out0, out1)
    billed = base + out0 + out1
    res.tokens += int(billed.sum())
    res.capped_tokens += int((billed if limit is None else np.minimum(billed, limit)).sum())
    res.assistant_tokens += int(column([ex.assistant_tokens for ex in examples]).sum()
                                + sums[slot + 2].sum() + sums[slot + 4].sum())
    res.messages += sum([ex.messages for ex in examples])
    lines = column([line for line, _ in usable])
    res.lines.frombytes(lines.astype(np.uint32).tobytes())
    # usable examples have a method (prepare_block skips the rest); the type cannot say so
    res.methods += bytes([_METHOD_BYTES[ex.method] for ex in examples])  # type: ignore[index]
    res.context.frombytes(context.astype(np.uint32).tobytes())
    if limit is None:
        return []
    over = np.flatnonzero(context > limit).tolist()
    return [(int(lines[k]), "over_token_limit", _over_limit(int(context[k]), limit, model)) for k in over]


def _plain_finish(pending: PendingBlock, message_tokens: np.ndarray, limit: int | None,
                  model: str) -> list[tuple[int, str, str]]:
    """Add the plain examples' counts to the block's result, in line order with the others; their
    over_token_limit findings."""
    res, plain = pending.res, pending.plain
    assert plain is not None
    counts = np.concatenate([batch.result() for batch in pending.plain_counts])
    tokens, assistant = plain_totals(plain, counts, message_tokens)  # supervised: the context is every token
    res.tokens += int(tokens.sum())
    res.capped_tokens += int(tokens.sum() if limit is None else np.minimum(tokens, limit).sum())
    res.assistant_tokens += int(assistant.sum())
    res.messages += int(plain.messages.sum())
    lines = np.asarray(plain.lines, np.uint32)
    order = np.argsort(np.concatenate((np.frombuffer(res.lines, np.uint32), lines)), kind="stable")
    merged = np.concatenate((np.frombuffer(res.lines, np.uint32), lines))[order]
    res.lines = array("I", merged.tobytes())
    methods = np.concatenate((np.frombuffer(bytes(res.methods), np.uint8),
                              np.full(len(lines), _METHOD_BYTES[SUPERVISED], np.uint8)))
    res.methods = bytearray(methods[order].tobytes())
    contexts = np.concatenate((np.frombuffer(res.context, np.uint32), tokens.astype(np.uint32)))
    res.context = array("I", contexts[order].tobytes())
    if limit is None:
        return []
    over = np.flatnonzero(tokens > limit).tolist()
    return [(int(plain.lines[k]), "over_token_limit", _over_limit(int(tokens[k]), limit, model)) for k in over]


def _over_limit(context: int, limit: int, model: str) -> str:
    return f"{context} tokens > {limit} for {model}; the service would cut the last {context - limit}"


def _capped(findings: list[tuple[int, str, str]],
            not_listed: dict[str, int]) -> list[tuple[int, str, str]]:
    """The first FINDINGS_PER_CODE findings of each code (in line order); the rest counted."""
    listed: dict[str, int] = {}
    kept = []
    for finding in findings:
        code = finding[1]
        n = listed.get(code, 0)
        if n < FINDINGS_PER_CODE:
            listed[code] = n + 1
            kept.append(finding)
        else:
            not_listed[code] = not_listed.get(code, 0) + 1
    return kept


def process_block(block: Block, ctx: Context) -> BlockResult:
    if block.too_long is not None:
        return too_long_result(block, ctx)
    return finish_block(prepare_block(block, ctx), ctx)


def too_long_result(block: Block, ctx: Context) -> BlockResult:
    assert block.too_long is not None
    res = BlockResult(block.first_line, examples=1)
    res.findings.append((block.too_long, "line_too_long",
                         f"line longer than {ctx.options.max_line_bytes >> 20} MiB; not examined"))
    return res


# --- worker-process side: one Context per process, built once by the pool initializer.
_CTX: Context | None = None


def init_worker(options: ValidationOptions) -> None:
    global _CTX
    _CTX = Context(options)


def run_in_worker(block: Block) -> BlockResult:
    assert _CTX is not None, "init_worker was not called"
    return process_block(block, _CTX)
