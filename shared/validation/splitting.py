"""Prepares an accepted dataset for training: the files the hub will get, and held-out evaluation data.

A single file is split by a seeded hash of each example's content, so identical examples always land on
the same side (no leakage from duplicates) and a re-run with the same seed gives the same split. Files
are streamed through spooled temporary files, never held whole.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

    from shared.app.bootstrap import Deps

MIN_TRAIN = 10     # the service's minimum
MIN_EVAL = 1
SPOOL_BYTES = 8 * 1024 * 1024


@dataclass
class Prepared:
    data_files: dict[str, str] = field(default_factory=dict)   # role → blob path in the reports container
    counts: dict[str, int] = field(default_factory=dict)
    dataset_hash: str = ""
    problem: str | None = None


def bucket(line: bytes, seed: int, validation: float, eval_fraction: float) -> str:
    """'eval', 'validation' or 'train' for one example, from a seeded hash of its content."""
    digest = hashlib.sha256(seed.to_bytes(8, "big", signed=True) + line).digest()
    x = int.from_bytes(digest[:8], "big") / 2**64
    if x < eval_fraction:
        return "eval"
    if x < eval_fraction + validation:
        return "validation"
    return "train"


Opener = Callable[[], Iterable[bytes]]


class _Discard(io.RawIOBase):
    """Where `ftops validate` writes the split: only the counts matter there."""

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        return len(b)


def spool_split(openers: Mapping[str, Opener], settings: Any, outputs: Mapping[str, IO[bytes]] | None = None) -> Prepared:
    """Split the drop's examples into train/validation/eval as intake does, writing them to `outputs`
    (spooled files that intake then uploads; discarded for `ftops validate`). `problem` is set when too
    few examples are left to train on or to evaluate with — the same rule for both."""
    # What to carve out of train.jsonl: held-out eval always (unless given), validation unless given.
    eval_fraction = 0.0 if "eval" in openers else settings.split.eval
    validation = 0.0 if "validation" in openers else settings.split.validation
    if settings.method == "reinforcement" and "validation" not in openers:
        validation = validation or 0.1   # RFT needs a validation file
    sinks: Mapping[str, SupportsWrite[bytes]] = (
        outputs or {r: _Discard() for r in ("train", "validation", "eval")})
    prepared = _spool(openers, sinks, lambda line: bucket(line, settings.seed, validation, eval_fraction))
    if prepared.counts["train"] < MIN_TRAIN or prepared.counts["eval"] < MIN_EVAL:
        prepared.problem = (f"too few examples to split: {prepared.counts['train']} for training (at least "
                            f"{MIN_TRAIN}) and {prepared.counts['eval']} held out for evaluation (at least "
                            f"{MIN_EVAL}); add examples or provide eval.jsonl in a run folder")
    return prepared


def spool_files() -> tuple[contextlib.ExitStack, dict[str, IO[bytes]]]:
    """Spooled temporary files for spool_split's outputs (close the stack when done)."""
    stack = contextlib.ExitStack()
    return stack, {r: stack.enter_context(tempfile.SpooledTemporaryFile(SPOOL_BYTES))
                   for r in ("train", "validation", "eval")}


def upload_split(deps: Deps, run_id: str, prepared: Prepared, outputs: Mapping[str, IO[bytes]]) -> None:
    """The split's files to reports/<run_id>/data/<role>.jsonl, where training reads them."""
    reports = deps.blobs.get_container_client(deps.settings.reports_container)
    for role, handle in outputs.items():
        if prepared.counts[role]:
            handle.seek(0)
            prepared.data_files[role] = f"{run_id}/data/{role}.jsonl"
            reports.upload_blob(prepared.data_files[role], handle, overwrite=True)


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
