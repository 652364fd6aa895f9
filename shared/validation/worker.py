"""The per-block pipeline: decode, parse, check, count, scan. Runs inline or in worker processes.

A block's result is small and picklable (findings plus packed per-example arrays), so moving it
between processes costs little next to the work.
"""

from __future__ import annotations

import json
from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

from shared.models import ModelFacts, UnknownModelError, model_facts

from . import privacy
from .formats import Checker
from .lines import Block, content_hash
from .options import ValidationOptions
from .tokens import Counter

METHOD_CODES = {"supervised": "S", "dpo": "D", "reinforcement": "R"}


@dataclass
class BlockResult:
    first_line: int
    last_line: int
    findings: list[tuple[int, str, str]] = field(default_factory=list)
    examples: int = 0  # non-blank lines
    lines: array = field(default_factory=lambda: array("I"))  # per usable example: its line
    methods: bytearray = field(default_factory=bytearray)  # per usable example: S, D or R
    hashes: array = field(default_factory=lambda: array("Q"))  # per non-blank line (with hash_lines)
    hash_lines: array = field(default_factory=lambda: array("I"))
    tokens: array = field(default_factory=lambda: array("I"))  # per usable example: billed tokens
    context: array = field(default_factory=lambda: array("I"))  # per usable example: longest sequence
    assistant_tokens: int = 0
    messages: int = 0


class Context:
    """What a process needs to check lines: options, model facts and its token counter."""

    def __init__(self, options: ValidationOptions) -> None:
        self.options = options
        self.facts: ModelFacts | None
        try:
            self.facts = model_facts(options.model)
        except UnknownModelError:
            self.facts = None
        self.counter = Counter(self.facts.encoding) if self.facts else None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for all lines: json.loads with an option builds a new JSONDecoder per call.
_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode


def process_block(block: Block, ctx: Context) -> BlockResult:
    if block.too_long is not None:
        res = BlockResult(block.first_line, block.first_line, examples=1)
        res.findings.append((block.too_long, "line_too_long",
                             f"line longer than {ctx.options.max_line_bytes >> 20} MiB; not examined"))
        return res
    raw_lines = block.data.split(b"\n")
    res = BlockResult(block.first_line, block.first_line + len(raw_lines) - 1)
    found = res.findings
    line_no = 0

    def report(code: str, message: str) -> None:
        found.append((line_no, code, message))

    checker = Checker(ctx.facts, ctx.counter, report)
    forced = ctx.options.method
    limit = ctx.facts.max_tokens_per_example if ctx.facts else None
    starts = []
    offset = 0
    for i, raw in enumerate(raw_lines):
        starts.append(offset)
        offset += len(raw) + 1
        line_no = block.first_line + i
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw.strip():
            report("blank_line", "blank line")
            continue
        res.examples += 1
        res.hashes.append(content_hash(raw))
        res.hash_lines.append(line_no)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report("invalid_utf8", f"invalid UTF-8 byte 0x{raw[exc.start]:02x} at byte {exc.start + 1}")
            continue
        try:
            obj = _DECODE(text)
        except ValueError as exc:
            where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            report("invalid_json", f"{msg}{where}")
            continue
        ex = checker.check(obj, forced)
        if ex.method is None:
            continue
        if forced and ex.method != forced:
            report("format_mismatch", f"{ex.method} example in a {forced} dataset")
        if limit is not None and ex.context_tokens > limit:
            report("over_token_limit", f"{ex.context_tokens} tokens > {limit} for {ctx.facts.name}; "
                                       f"the service would cut the last {ex.context_tokens - limit}")
        res.lines.append(line_no)
        res.methods.append(ord(METHOD_CODES[ex.method]))
        res.tokens.append(ex.tokens)
        res.context.append(ex.context_tokens)
        res.assistant_tokens += ex.assistant_tokens
        res.messages += ex.messages
    for off, code, message in privacy.scan(block.data):
        found.append((block.first_line + bisect_right(starts, off) - 1, code, message))
    found.sort(key=lambda f: f[0])  # stable: per line, structure findings before privacy ones
    return res


# --- worker-process side: one Context per process, built once by the pool initializer.
_CTX: Context | None = None


def init_worker(options: ValidationOptions) -> None:
    global _CTX
    _CTX = Context(options)


def run_in_worker(block: Block) -> BlockResult:
    assert _CTX is not None, "init_worker was not called"
    return process_block(block, _CTX)
