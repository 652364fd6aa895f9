"""validate_file / validate_dataset: stream blocks through the checks, merge results in order.

The main thread splits lines into blocks and checks them; a large file's texts are counted in a helper process
(counting.py) and its hashes and privacy scan computed in another (rawscan.py), so two cores are used. With
`workers` > 1, worker processes (spawned, so it is safe inside the multi-threaded Functions worker) check every
other block whole. Results are merged in line order, so findings and their caps are deterministic whatever the
timing.
"""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from shared.run.models import METHODS, REINFORCEMENT, UnknownModelError, model_facts

from . import counting
from .codes import severity
from .digests import DigestIndex
from .lines import Block, coalesce_head, split_blocks
from .options import FINDINGS_PER_CODE, DatasetReport, FileReport, Finding, ValidationOptions
from .rawscan import Helper, start_helper
from .sniff import sniff
from .stats import MAX_JOB_TOKENS, ContextCounts, build_stats
from .tokens import Counter, built
from .worker import (
    METHOD_CODES,
    BlockResult,
    Context,
    PendingBlock,
    finish_block,
    init_worker,
    prepare_block,
    run_in_worker,
    too_long_result,
)

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2
UPLOAD_LIMIT_BYTES = 512_000_000  # single-request upload limit (512 MB)
ROLES = ("train", "validation", "eval")
_CODE_METHOD = {v: k for k, v in METHOD_CODES.items()}


@dataclass
class _Inline:
    """A block checked in this process whose texts are being counted (counting.py)."""

    pending: PendingBlock
    block: Block | None = None  # kept while a helper process counts: checked again here if it fails
    size: int = 0  # the block's bytes


class _Sink:
    """Findings with a per-code cap, sorted into errors and warnings."""

    def __init__(self, options: ValidationOptions, file: str | None) -> None:
        self.options, self.file = options, file
        self.kept: list[Finding] = []
        self.counts: dict[str, int] = {}

    def add(self, line: int | None, code: str, message: str) -> None:
        n = self.counts.get(code, 0)
        self.counts[code] = n + 1
        if n < FINDINGS_PER_CODE:
            self.kept.append(Finding(line, code, message, self.file))

    def count_unlisted(self, code: str, n: int) -> None:
        """Findings past a cap elsewhere: counted in the summary, not listed."""
        self.counts[code] = self.counts.get(code, 0) + n

    def split(self) -> tuple[list[Finding], list[Finding]]:
        findings = list(self.kept)
        for code, n in sorted(self.counts.items()):  # by code: not by the first seen, which depends on the blocks
            if n > FINDINGS_PER_CODE:
                findings.append(Finding(None, code, f"{n - FINDINGS_PER_CODE} more {code} findings not "
                                                    f"listed ({n} in all)", self.file))
        findings.sort(key=lambda f: -1 if f.line is None else f.line)
        errors = [f for f in findings if severity(f.code, self.options) == "error"]
        warnings = [f for f in findings if severity(f.code, self.options) != "error"]
        return errors, warnings


def _worker_count(options: ValidationOptions) -> int:
    # Default 1: on the 2-vCPU target two busy processes each run ~1.4x slower, and the second
    # process (its own tokenizer, pickling 4 MiB blocks) ate the rest: measured 22 s either way
    # on the 480 MiB benchmark, at twice the memory. workers=N is there for bigger machines.
    if options.workers is not None:
        return max(1, min(options.workers, os.process_cpu_count() or 1))
    return 1


class _Run:
    def __init__(self, name: str, options: ValidationOptions,
                 progress: Callable[[int], None] | None) -> None:
        self.name, self.options, self.progress = name, options, progress
        self.sink = _Sink(options, name)
        self.bytes_read = 0
        self.examples = 0
        self.messages = 0
        self.assistant_tokens = 0
        self.tokens = self.capped_tokens = 0
        self.context = ContextCounts()
        self.method_counts = {"S": 0, "D": 0, "R": 0}
        self.method_lines: dict[str, list[int]] = {"S": [], "D": [], "R": []}
        self.hashes = DigestIndex()
        self._inline: Context | None = None

    # --- input
    def _counted(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes_read += len(chunk)
            if self.progress is not None:
                self.progress(self.bytes_read)
            yield bytes(chunk) if not isinstance(chunk, bytes) else chunk

    def _blocks(self, chunks: Iterable[bytes]) -> Iterator[Block] | None:
        it = coalesce_head(c for c in self._counted(chunks) if c)
        head = next(it, b"")
        kind = sniff(head)
        if kind is not None:
            self.sink.add(None, "not_jsonl", f"{self.name} is {kind.describe()}")
            return None
        if head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head[:4]:
            self.sink.add(1, "utf16_encoding", "the file is UTF-16/UTF-32 encoded, not UTF-8")
            return None
        return split_blocks(itertools.chain((head,), it), max_line_bytes=self.options.max_line_bytes,
                            block_bytes=self.options.tuning.block_bytes,
                            block_lines=self.options.tuning.block_lines)

    # --- processing
    def _inline_ctx(self) -> Context:
        if self._inline is None:
            self._inline = Context(self.options)
        return self._inline

    def _results(self, blocks: Iterator[Block]) -> Iterator[BlockResult]:
        workers = _worker_count(self.options) - 1
        tuning = self.options.tuning
        pool: ProcessPoolExecutor | None = None
        counts: counting.Inline | None = None  # where the inline blocks are counted: chosen at the first
        helper: Helper | None = None
        queue: deque[Future[BlockResult] | BlockResult | _Inline] = deque()

        def too_much_ahead() -> bool:
            """More blocks wait than blocks_ahead, and those checked here hold more than blocks_ahead full blocks do:
            bytes, or examples. Small blocks (blank lines, cut at the line cap) may wait by the dozen: the main
            thread checks them while the counting helper builds its tokenizer."""
            if len(queue) <= tuning.blocks_ahead:
                return False
            if workers:
                return len(queue) > max(tuning.blocks_ahead, 2 * (workers + 1) * IN_FLIGHT_PER_WORKER)
            ahead = (tuning.blocks_ahead_building if isinstance(counts, counting.InHelper) and counts.building()
                     else tuning.blocks_ahead)
            inline = [item for item in queue if isinstance(item, _Inline)]
            return (sum(item.size for item in inline) > ahead * tuning.block_bytes
                    or sum(item.pending.res.examples for item in inline) > ahead * tuning.block_lines)

        def ready(item: Future[BlockResult] | BlockResult | _Inline) -> bool:
            if isinstance(item, _Inline):  # finished once it is counted and the next block is prepared (overlap)
                return len(queue) > 1 and item.pending.counted()
            return not isinstance(item, Future) or item.done()

        def result(item: Future[BlockResult] | BlockResult | _Inline) -> BlockResult:
            nonlocal counts
            if not isinstance(item, _Inline):
                return item.result() if isinstance(item, Future) else item
            ctx = self._inline_ctx()
            try:
                return finish_block(item.pending, ctx)
            except counting.HelperFailed:
                assert item.block is not None and ctx.counter is not None  # only a helper's counts raise it
                if isinstance(counts, counting.InHelper):
                    log.warning("%s: the counting helper process failed; counting in this process", self.name)
                    counts.close()
                    counts = counting.InThread(ctx.counter, tuning.batch_texts)
                # Its scan result was taken first: the scan helper's next one is the next block's.
                return finish_block(prepare_block(item.block, ctx, counts), ctx)

        try:
            for block in blocks:
                if pool is None and workers > 0 and self.bytes_read > tuning.parallel_after_bytes:
                    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=init_worker, initargs=(self.options,))
                busy = sum(1 for q in queue if isinstance(q, Future) and not q.done())
                if pool is not None and busy < workers * IN_FLIGHT_PER_WORKER:
                    queue.append(pool.submit(run_in_worker, block))
                elif block.too_long is not None:
                    queue.append(too_long_result(block, self._inline_ctx()))
                elif len(block.data) >= tuning.big_block_bytes:
                    # A block of a few huge lines (up to the 32 MiB line cap): alone in memory, whole in this
                    # thread. Overlapped with the next one, or copied to the helper, it would be held two or
                    # three times over (with its parsed text and the tokenizer's work on top).
                    while queue:
                        yield result(queue.popleft())
                    yield finish_block(prepare_block(block, self._inline_ctx()), self._inline_ctx())
                else:
                    # Parse and check here; the block's texts are counted meanwhile, by the counting helper process
                    # or a thread (counting.py), while the next block is parsed.
                    ctx = self._inline_ctx()
                    if counts is None and ctx.counter is not None:
                        counts = self._counting(ctx.counter)
                    if helper is None and workers == 0 and self.bytes_read > tuning.scan_helper_after_bytes:
                        helper = start_helper()
                        log.debug("%s: scan helper %s after %d bytes", self.name,
                                  "started" if helper is not None else "unavailable", self.bytes_read)
                    queue.append(_Inline(prepare_block(block, ctx, counts, helper),
                                         block if isinstance(counts, counting.InHelper) else None, len(block.data)))
                while queue and (ready(queue[0]) or too_much_ahead()):
                    yield result(queue.popleft())
            while queue:
                yield result(queue.popleft())
        finally:
            if counts is not None:
                counts.close()
            if helper is not None:
                helper.close()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def _counting(self, counter: Counter) -> counting.Inline:
        """A helper process for a file that is large already (its first block is being checked), unless this process
        has its tokenizer already (a warm Functions worker); else a thread."""
        tuning = self.options.tuning
        if self.bytes_read > tuning.count_helper_after_bytes and not built(counter.name):
            log.debug("%s: counting helper chosen after %d bytes", self.name, self.bytes_read)
            return counting.InHelper(counter, tuning.count_threads)  # started when first needed
        return counting.InThread(counter, tuning.batch_texts)

    def _merge(self, res: BlockResult) -> None:
        for line, code, message in res.findings:
            self.sink.add(line, code, message)
        for code, n in res.not_listed.items():
            self.sink.count_unlisted(code, n)
        self.examples += res.examples
        self.messages += res.messages
        self.assistant_tokens += res.assistant_tokens
        self.tokens += res.tokens
        self.capped_tokens += res.capped_tokens
        self.context.add(res.context)
        for key in self.method_counts:   # per method: its count, and its first lines for format_mismatch
            byte = ord(key)
            n = res.methods.count(byte)
            if not n:
                continue
            self.method_counts[key] += n
            kept, pos = self.method_lines[key], -1
            while len(kept) <= FINDINGS_PER_CODE and (pos := res.methods.find(byte, pos + 1)) != -1:
                kept.append(res.lines[pos])
        dup_lines, dup_first = self.hashes.add(np.frombuffer(res.hashes, dtype=np.uint64),
                                               np.frombuffer(res.hash_lines, dtype=np.uint32))
        _add_capped(self.sink, "duplicate_example", dup_lines[:FINDINGS_PER_CODE + 1].tolist(),
                    [f"same example as line {first}" for first in dup_first[:FINDINGS_PER_CODE + 1].tolist()],
                    len(dup_lines))

    # --- the whole file
    def run(self, chunks: Iterable[bytes]) -> FileReport:
        opts = self.options
        try:
            facts = model_facts(opts.model)
        except UnknownModelError as exc:
            facts = None
            self.sink.add(None, "unknown_model", str(exc))
        blocks = self._blocks(chunks)
        if blocks is not None:
            for res in self._results(blocks):
                self._merge(res)
        method = opts.method or self._majority()
        if opts.method is None and method is not None:
            self._mismatches(method)
        if facts is not None and method is not None and not facts.supports(method):
            self.sink.add(None, "method_not_supported", f"{facts.name} does not support {method} "
                                                        f"fine-tuning (it supports "
                                                        f"{', '.join(sorted(facts.methods))})")
        if blocks is not None and self.examples == 0:
            self.sink.add(None, "empty_file", "no examples in the file")
        elif 0 < self.examples < opts.min_examples:
            self.sink.add(None, "too_few_examples",
                          f"{self.examples} examples; at least {opts.min_examples} are required")
        if self.bytes_read > UPLOAD_LIMIT_BYTES:
            self.sink.add(None, "file_too_large", f"{self.bytes_read / 1e6:.0f} MB > 512 MB")
        if self.hashes.uncovered:
            self.sink.add(None, "duplicate_check_partial",
                          f"the duplicate check covered the first {len(self.hashes):,} distinct lines; "
                          f"{self.hashes.uncovered:,} more were not compared")
        stats = build_stats(examples=self.examples, messages=self.messages, tokens=self.tokens,
                            capped_tokens=self.capped_tokens, context=self.context,
                            assistant_tokens=self.assistant_tokens, facts=facts, method=method,
                            n_epochs=opts.n_epochs, size_bytes=self.bytes_read)
        stats["formats"] = {_CODE_METHOD[k]: v for k, v in self.method_counts.items() if v}
        if method != REINFORCEMENT and stats["cost"]["billed_tokens"] > MAX_JOB_TOKENS:
            self.sink.add(None, "job_too_large", f"{stats['cost']['billed_tokens']:,} billed tokens > "
                                                 f"{MAX_JOB_TOKENS:,} per job")
        errors, warnings = self.sink.split()
        return FileReport(self.name, method, self.examples, errors, warnings, stats, self.hashes)

    def _majority(self) -> str | None:
        best = max(self.method_counts, key=lambda k: (self.method_counts[k], -"SDR".index(k)))
        return _CODE_METHOD[best] if self.method_counts[best] else None

    def _mismatches(self, method: str) -> None:
        expected = METHOD_CODES[method]
        for key, n in self.method_counts.items():
            if key == expected or not n:
                continue
            lines = self.method_lines[key][:FINDINGS_PER_CODE]
            for line in lines:
                self.sink.add(line, "format_mismatch",
                              f"{_CODE_METHOD[key]} example in a file of {method} examples")
            if n > len(lines):
                self.sink.count_unlisted("format_mismatch", n - len(lines))


def _add_capped(sink: _Sink, code: str, lines: list[int], messages: list[str], total: int) -> None:
    """`total` findings of one code of which the first `lines` (with their `messages`) may be listed: at most
    what the sink's cap still lists is added one by one, the rest only counted (never millions of calls)."""
    room = max(0, FINDINGS_PER_CODE - sink.counts.get(code, 0))
    for line, message in zip(lines[:room], messages[:room], strict=True):
        sink.add(line, code, message)
    if total > min(room, len(lines)):
        sink.count_unlisted(code, total - min(room, len(lines)))


def validate_file(chunks: Iterable[bytes], *, name: str, options: ValidationOptions,
                  progress: Callable[[int], None] | None = None) -> FileReport:
    """Validate one JSONL stream (any chunk sizes), in bounded memory."""
    with _fewer_collections():
        return _Run(name, options, progress).run(chunks)


_GC_LOCK = threading.Lock()
_gc_runs = 0  # validations running in this process
_gc_saved: tuple[int, int, int] = (0, 0, 0)
_GC_THRESHOLD = (50_000, 20, 100)  # Python's default: (2000, 10, 10)


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Python's cyclic garbage collector, less often while a validation runs in this process.

    A validation allocates millions of short-lived, acyclic objects (parsed lines, examples, findings), freed by
    reference counting; the collector's young collections were triggered every 2,000 of them and scanned the
    blocks still held each time: 12-28% of the time of files the general path checks (measured on distinct
    tiny lines and on empty `messages`). Restored when the last validation of the process ends."""
    global _gc_runs, _gc_saved
    with _GC_LOCK:
        if _gc_runs == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(*_GC_THRESHOLD)
        _gc_runs += 1
    try:
        yield
    finally:
        with _GC_LOCK:
            _gc_runs -= 1
            if _gc_runs == 0:
                gc.set_threshold(*_gc_saved)


def validate_dataset(files: Mapping[str, Callable[[], Iterable[bytes]]], *, options: ValidationOptions,
                     names: Mapping[str, str] | None = None,
                     progress: Callable[[str, int], None] | None = None) -> DatasetReport:
    """Validate a run's train (required), validation and eval files together, overlap included."""
    unknown = set(files) - set(ROLES)
    if unknown or "train" not in files:
        raise ValueError(f"files must hold 'train' and optionally 'validation', 'eval'; got {sorted(files)}")
    names = {role: (names or {}).get(role, f"{role}.jsonl") for role in files}
    reports: dict[str, FileReport] = {}
    for role in ROLES:
        if role not in files:
            continue
        opts = options
        if role != "train":
            # Held-out files follow the training file's method and have no minimum size.
            opts = replace(options, min_examples=0, method=options.method or reports["train"].method)
        on_progress = (lambda n, r=role: progress(r, n)) if progress else None
        reports[role] = validate_file(files[role](), name=names[role], options=opts, progress=on_progress)
    sink = _Sink(options, None)
    train = reports["train"]
    for role in ("validation", "eval"):
        if role not in reports:
            continue
        others = [("train", train)] + ([("validation", reports["validation"])]
                                       if role == "eval" and "validation" in reports else [])
        sink.file = names[role]
        digests, lines = reports[role].hashes.arrays()   # in line order
        leaked = np.zeros(len(digests), dtype=np.uint32)
        source = np.zeros(len(digests), dtype=np.int8)
        for k, (_, other) in enumerate(others):   # the first other file holding it names it
            found = other.hashes.lookup(digests)
            new = (found != 0) & (leaked == 0)
            leaked[new], source[new] = found[new], k
        hit = np.flatnonzero(leaked)
        shown = hit[:FINDINGS_PER_CODE + 1].tolist()
        _add_capped(sink, "leakage", lines[shown].tolist(),
                    [f"same example as {names[others[source[i]][0]]} line {leaked[i]}" for i in shown], len(hit))
    if train.method == REINFORCEMENT and "validation" not in files:
        sink.file = names["train"]
        sink.add(None, "missing_validation_file", "reinforcement fine-tuning needs a validation file")
    extra_errors, extra_warnings = sink.split()
    errors = [f for r in reports.values() for f in r.errors] + extra_errors
    warnings = [f for r in reports.values() for f in r.warnings] + extra_warnings
    method = train.method if train.method in METHODS else None
    return DatasetReport(valid=not errors, method=method, examples=sum(r.examples for r in reports.values()),
                         errors=errors, warnings=warnings, stats=train.stats, files=reports)
