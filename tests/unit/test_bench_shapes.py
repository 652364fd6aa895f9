"""The benchmark's data and baseline (benchmarks/shapes.py, benchmarks/cookbook.py), generated small: every shape
writes whole lines within its size, and the cookbook-style baseline counts the same tokens as the validator where
the two rules agree (chat without tools, DPO, reinforcement prompts), so the ratio `make bench` prints compares like
with like."""
from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import cookbook, shapes
from shared.validation import ValidationOptions, validate_file


@pytest.mark.parametrize("shape", [*shapes.SPEED_SHAPES, *shapes.FORMAT_SHAPES, *shapes.MEMORY_SHAPES])
def test_every_shape_writes_whole_lines_within_its_size(tmp_path: Path, shape: str) -> None:
    path = tmp_path / f"{shape}.jsonl"
    lines = shapes.write_shape(path, shape, 64 << 10)
    data = path.read_bytes()
    assert len(data) <= 64 << 10 and data.count(b"\n") == lines and (not data or data.endswith(b"\n"))


@pytest.mark.parametrize(("shape", "at_least"), [("tiny", 1000), ("dpo", 100), ("rft", 300)])
def test_the_baseline_counts_the_tokens_the_validator_counts(tmp_path: Path, shape: str, at_least: int) -> None:
    path = tmp_path / f"{shape}.jsonl"
    shapes.write_shape(path, shape, 200 << 10)
    ours = validate_file([path.read_bytes()], name=path.name, options=ValidationOptions())
    theirs = cookbook.run(path)
    assert theirs["examples"] == ours.examples > at_least
    assert theirs["tokens"] == ours.stats["tokens"]["total"]  # DPO: the input's messages and both outputs
    # The notebook checks supervised chat: to it, every reinforcement prompt lacks the answer it would learn.
    missing = {"example_missing_assistant_message": ours.examples} if shape == "rft" else {}
    assert theirs["format_errors"] == missing


def test_runs_beside_the_baseline_are_timed_unsampled_and_their_peak_comes_from_a_sampled_run(tmp_path: Path) -> None:
    from benchmarks import validation as bench

    path = tmp_path / "tiny.jsonl"
    shapes.write_shape(path, "tiny", 64 << 10)
    timed = bench._measure("ftops", path, None, sampled=False)
    sampled = bench._measure("ftops", path, None)
    assert timed["peak"] == 0 and timed["per_process"] == []  # no sampler ran beside it
    assert sampled["peak"] > 0 and timed["examples"] == sampled["examples"] > 100
    runs = [{**timed, "wall": wall} for wall in (3.0, 1.0, 2.0)]
    median = bench._median_run(runs, sampled)
    assert median["wall"] == 2.0 and median["peak"] == sampled["peak"]
