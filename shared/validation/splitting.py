"""Prepares an accepted dataset for training: the files the hub will get, and held-out evaluation data.

A single file is split by a seeded hash of each example's content, so identical examples always land on
the same side (no leakage from duplicates) and a re-run with the same seed gives the same split. The
held-out side is `split.eval` of the file, and never fewer than `MIN_HELD_OUT` examples (the power
calculation in `shared.run.heldout`): a first pass finds the hash below which that many lie. Files are
streamed through spooled temporary files, never held whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import heapq
import io
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from shared.run.heldout import MIN_HELD_OUT, MIN_TRAIN

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from shared.app.bootstrap import Deps

SPOOL_BYTES = 8 * 1024 * 1024


@dataclass
class Prepared:
    data_files: dict[str, str] = field(default_factory=dict)   # role → blob path in the reports container
    # data file → {etag, sha256} of the version uploaded (RunRecord.file_digests): training need not read it to hash it
    file_digests: dict[str, dict[str, str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    dataset_hash: str = ""
    problem: str | None = None


def bucket(line: bytes, seed: int, validation: float, eval_fraction: float) -> str:
    """'eval', 'validation' or 'train' for one example, from a seeded hash of its content."""
    return _side(position(line, seed), eval_fraction, eval_fraction + validation)


def _side(x: float, eval_cut: float, validation_end: float) -> str:
    return "eval" if x < eval_cut else "validation" if x < validation_end else "train"


def position(line: bytes, seed: int) -> float:
    """Where an example falls in [0, 1): a seeded hash of its content."""
    digest = hashlib.sha256(seed.to_bytes(8, "big", signed=True) + line).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


Opener = Callable[[], Iterable[bytes]]


class _Discard(io.RawIOBase):
    """Where `ftops validate` writes the split: only the counts matter there."""

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return len(b)


def spool_split(openers: Mapping[str, Opener], settings: Any, outputs: Mapping[str, IO[bytes]] | None = None) -> Prepared:
    """Split the drop's examples into train/validation/eval as intake does, writing them to `outputs`
    (spooled files that intake then uploads; discarded for `ftops validate`). `problem` is set, with the
    numbers and the fix, when too few examples are left to train on (`MIN_TRAIN`) or to gate with
    (`MIN_HELD_OUT`) — the same rule for both."""
    # What to carve out of train.jsonl: held-out eval always (unless given), validation unless given.
    eval_fraction = 0.0 if "eval" in openers else settings.split.eval
    validation = 0.0 if "validation" in openers else settings.split.validation
    if settings.method == "reinforcement" and "validation" not in openers:
        validation = validation or 0.1   # RFT needs a validation file
    if "eval" not in openers:   # reserve MIN_HELD_OUT: everything at or below the MIN_HELD_OUT-th position
        eval_cut, validation_end = _cuts(openers["train"], settings.seed, eval_fraction, validation)
    else:
        eval_cut, validation_end = 0.0, validation
    sinks: Mapping[str, SupportsWrite[bytes]] = (
        outputs or {r: _Discard() for r in ("train", "validation", "eval")})
    prepared = _spool(openers, sinks, lambda line: _side(position(line, settings.seed), eval_cut, validation_end))
    prepared.problem = _too_few(prepared.counts, given_eval="eval" in openers,
                                fractions=(settings.split.eval, validation))
    return prepared


EXACT_UP_TO = 10_000   # files this small are cut by rank, so each side gets exactly its share


def _cuts(opener: Opener, seed: int, eval_share: float, validation_share: float) -> tuple[float, float]:
    """Where train.jsonl is cut, in hash positions: below the first, held out; below the second, validation. The held-out side gets
    at least MIN_HELD_OUT. A file of up to EXACT_UP_TO examples is cut by rank: the held-out side gets
    max(MIN_HELD_OUT, ⌈eval·n⌉) examples and validation ⌈validation·n⌉ exactly (identical lines stay
    together), so the size a refusal asks for is accepted whatever the seed; before, a hash cut could give
    validation 7 instead of 5 of 47 and leave 8 to train on. A larger file is cut by hash (its sides are then
    within a fraction of a percent of their shares) with the MIN_HELD_OUT smallest positions held out."""
    from shared.validation import iter_examples
    smallest: list[float] = []   # max-heap (negated) of the MIN_HELD_OUT smallest positions
    every: list[float] | None = []
    for _, raw in iter_examples(opener()):
        line = raw.strip()
        if line:
            x = position(line, seed)
            if every is not None:
                every.append(x)
                if len(every) > EXACT_UP_TO:
                    every = None
            if len(smallest) < MIN_HELD_OUT:
                heapq.heappush(smallest, -x)
            elif -x > smallest[0]:
                heapq.heapreplace(smallest, -x)
    if len(smallest) < MIN_HELD_OUT:
        return 1.0, 1.0
    if every is None:
        eval_cut = max(eval_share, math.nextafter(-smallest[0], 1.0))
        return eval_cut, eval_cut + validation_share
    every.sort()
    n = len(every)
    held = min(n, max(MIN_HELD_OUT, math.ceil(eval_share * n)))
    kept = min(n, held + math.ceil(validation_share * n))
    eval_cut = math.nextafter(every[held - 1], 1.0)
    return eval_cut, math.nextafter(every[kept - 1], 1.0) if kept > held else eval_cut


def _too_few(counts: Mapping[str, int], *, given_eval: bool, fractions: tuple[float, float]) -> str | None:
    train, held_out, validation = counts["train"], counts["eval"], counts["validation"]
    if given_eval:
        if held_out >= MIN_HELD_OUT and train >= MIN_TRAIN:
            return None
        parts = []
        if held_out < MIN_HELD_OUT:
            parts.append(f"eval.jsonl has {held_out} usable examples and gating needs at least {MIN_HELD_OUT} "
                         f"(docs/evaluation.md, \"Enough data\"): add {MIN_HELD_OUT - held_out} or more to eval.jsonl")
        if train < MIN_TRAIN:
            parts.append(f"train.jsonl has {train} examples and training needs at least {MIN_TRAIN}: add "
                         f"{MIN_TRAIN - train} or more")
        return "; ".join(parts)
    if train >= MIN_TRAIN and held_out >= MIN_HELD_OUT:
        return None
    total = train + held_out + validation
    eval_share, validation_share = fractions
    needed = next(n for n in range(total + 1, 10**6)
                  if n - max(MIN_HELD_OUT, math.ceil(eval_share * n)) - math.ceil(validation_share * n) >= MIN_TRAIN)
    return (f"too few examples to split: {total} in train.jsonl give {held_out} held out for evaluation (gates "
            f"need at least {MIN_HELD_OUT}, docs/evaluation.md \"Enough data\"), {validation} for validation and "
            f"{train} for training (at least {MIN_TRAIN}); add examples (about {needed} in all), or put "
            f"{MIN_HELD_OUT} or more held-out examples in eval.jsonl beside train.jsonl in a run folder")


def spool_files() -> tuple[contextlib.ExitStack, dict[str, IO[bytes]]]:
    """Spooled temporary files for spool_split's outputs (close the stack when done)."""
    stack = contextlib.ExitStack()
    return stack, {r: stack.enter_context(tempfile.SpooledTemporaryFile(SPOOL_BYTES))
                   for r in ("train", "validation", "eval")}


def upload_split(deps: Deps, run_id: str, prepared: Prepared, outputs: Mapping[str, IO[bytes]]) -> None:
    """The split's files to reports/<run_id>/data/<role>.jsonl, where training reads them, each with its sha256 and
    the ETag the upload gave it (`file_digests`): hashed from the spooled copy here, so that training, which names its
    hub uploads by content, does not download them again (up to 512 MB each)."""
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for role, handle in outputs.items():
        if prepared.counts[role]:
            path = prepared.data_files[role] = f"{run_id}/data/{role}.jsonl"
            handle.seek(0)
            digest = hashlib.sha256()
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
            handle.seek(0)
            written = reports.get_blob_client(path).upload_blob(handle, overwrite=True)
            prepared.file_digests[path] = {"etag": str(written["etag"]), "sha256": digest.hexdigest()}


def _spool(openers: Mapping[str, Opener], outputs: Mapping[str, SupportsWrite[bytes]],
           side_of: Callable[[bytes], str]) -> Prepared:
    """Stream every file's examples into the outputs (train.jsonl's split by `side_of`)."""
    from shared.validation import iter_examples
    counts = {r: 0 for r in outputs}
    whole = hashlib.sha256()
    for role in ("train", "validation", "eval"):
        if role not in openers:
            continue
        whole.update(f"\0{role}\0".encode())
        for _, raw in iter_examples(openers[role]()):
            line = raw.strip()
            if line:
                whole.update(line + b"\n")
                target = side_of(line) if role == "train" else role
                outputs[target].write(line + b"\n")
                counts[target] += 1
    return Prepared(counts=counts, dataset_hash=whole.hexdigest())
