"""Run options and the findings/reports the validator returns (JSON shape of `ftops validate --json`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.run.models import DEFAULT_BASE_MODEL

if TYPE_CHECKING:
    from .digests import DigestIndex

MIB = 1 << 20
# Findings listed per code; the rest are only counted. Applied inside each block too, so a file of
# millions of bad lines holds at most this many findings per code per block in memory.
FINDINGS_PER_CODE = 100


@dataclass(frozen=True)
class Tuning:
    """How the work is cut up and which fast paths run: never what a report says, only how fast and
    in how much memory it is produced. It travels with the options into worker processes."""

    block_bytes: int = 2 * MIB  # lines are handed out in blocks of at least this size (one task each)
    # ... or of this many lines: what a block holds per line (its examples, until they are counted) stays
    # bounded however short the lines are (a 2 MiB block of "{}" lines is 700,000 of them). An empty line counts
    # 1/16 of a line (lines.EMPTY_PER_LINE): it holds nothing, and blocks of them cost their hand-overs.
    block_lines: int = 16_384
    # A block this large holds huge lines: it is checked alone, without the helper (engine._results).
    big_block_bytes: int = 8 * MIB
    parallel_after_bytes: int = 24 * MIB  # below this, starting a worker costs more than it saves
    # Once more than this has been read, hashing and the privacy scan move to a helper process
    # (rawscan): ~3.5 s of the main thread's 480 MiB benchmark, for ~0.1 s of CPU to start it. From the
    # first block: RE2's DFA cache (~30 MB) then grows in the helper only. Negative: from the first block.
    scan_helper_after_bytes: int = 4 * MIB
    # A file of which more than this has been read when its first block is checked is counted in a helper process
    # (counting.py): it builds its own tokenizer while this process parses. Smaller files are counted in a thread.
    count_helper_after_bytes: int = 2 * MIB
    count_threads: int = 2  # quicktok's threads per batch in the counting helper, while it has requests waiting
    # Blocks checked in this process but not yet counted, at most (each holds ~2 MiB until then): the main thread
    # parses these while the counting helper builds its tokenizer. Six took the long-example file to 254 MiB. More
    # wait while they hold no more bytes and examples than this many full blocks (blocks of blank lines: small).
    blocks_ahead: int = 4
    # ... and this many while the counting helper builds its tokenizer (until its first answer: ~0.5 s the main thread
    # waited, with a core mostly idle). 12 made tiny and short examples 7-11% faster in interleaved runs (long: the
    # same, its 4 MiB blocks reach the bytes cap sooner); peaks at 480 MiB unchanged: they come later, with the index.
    blocks_ahead_building: int = 12
    # Deferred (batched for the counting thread or helper) from this length: cheaper for the main thread than even
    # a memoized count. Roles have their own cache (Checker._role_tokens); "" is counted at once.
    defer_min_chars: int = 1
    batch_texts: int = 2048  # deferred texts per counting thread's call: fewer GIL hand-overs, bounded text in memory
    orjson: bool = True  # parse with orjson where installed; every line it refuses is parsed again by json
    # Plain chat lines decoded by msgspec and checked over columns (fastpath.py); every other line, and
    # every line when False, by the general path.
    plain: bool = True


@dataclass(frozen=True)
class ValidationOptions:
    model: str = DEFAULT_BASE_MODEL
    method: str | None = None  # None: detected from the data (majority format of the training file)
    pii: str = "error"  # "error" | "warn": personal data findings' severity
    over_limit: str = "error"  # "error" | "warn": examples over the model's per-example token limit
    min_examples: int = 10
    n_epochs: int | None = None  # None: the documented default-epochs rule, for the cost estimate
    workers: int | None = None  # processes for large inputs (None: 1, see engine._worker_count)
    max_line_bytes: int = 32 * MIB  # a longer line is rejected without ever being held whole
    tuning: Tuning = Tuning()  # speed and memory only: the same report whatever it holds

    def __post_init__(self) -> None:
        for name in ("pii", "over_limit"):
            value = getattr(self, name)
            if value == "warning":  # accept the noun too; store the one spelling
                object.__setattr__(self, name, "warn")
            elif value not in ("error", "warn"):
                raise ValueError(f"{name} must be 'error' or 'warn', not {value!r}")
        if self.method not in (None, "supervised", "dpo", "reinforcement"):
            raise ValueError(f"method must be supervised, dpo or reinforcement, not {self.method!r}")


@dataclass(frozen=True)
class Finding:
    line: int | None  # 1-based physical line (split on \n only); None for file-level findings
    code: str
    message: str  # never holds a full secret or unmasked personal data
    file: str | None = None

    def to_dict(self, *, with_file: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"line": self.line, "code": self.code, "message": self.message}
        if with_file:
            out["file"] = self.file
        return out


@dataclass
class FileReport:
    name: str
    method: str | None
    examples: int
    errors: list[Finding]
    warnings: list[Finding]
    stats: dict[str, Any]
    # Canonical content hash -> first line, for duplicate and leakage checks; not part of the JSON.
    hashes: DigestIndex = field(default_factory=lambda: _digest_index(), repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self, *, with_file: bool = False) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "method": self.method,
            "examples": self.examples,
            "errors": [f.to_dict(with_file=with_file) for f in self.errors],
            "warnings": [f.to_dict(with_file=with_file) for f in self.warnings],
            "stats": self.stats,
        }


def _digest_index() -> DigestIndex:
    from .digests import DigestIndex  # numpy: loaded when a file is validated, not with the options
    return DigestIndex()


@dataclass
class DatasetReport:
    valid: bool
    method: str | None
    examples: int
    errors: list[Finding]
    warnings: list[Finding]
    stats: dict[str, Any]  # the training file's stats (cost estimate included)
    files: dict[str, FileReport]
    # "settings" (run.json, a command or a flag set it) or "detected" (from the data); None: not checked
    method_source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        several = len(self.files) > 1
        out: dict[str, Any] = {
            "valid": self.valid,
            "method": self.method,
            "method_source": self.method_source,
            "examples": self.examples,
            "errors": [f.to_dict(with_file=several) for f in self.errors],
            "warnings": [f.to_dict(with_file=several) for f in self.warnings],
            "stats": self.stats,
        }
        if several:
            out["files"] = {role: {"name": r.name, "valid": r.valid, "examples": r.examples,
                                   "stats": r.stats} for role, r in self.files.items()}
        return out
