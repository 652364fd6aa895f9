"""Enough data, or no gate: the split holds out at least MIN_HELD_OUT examples (the power calculation in
shared.run.heldout), leaves at least 10 to train on, and a drop that cannot give both is refused — by intake
and by `ftops validate` alike (both run shared.validation.drop) — with the numbers and the fix."""
from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import pytest

from ftops_cli import validate as cli
from shared.evaluation.confidence import mean_interval
from shared.run.heldout import MIN_HELD_OUT, MIN_TRAIN, held_out_needed
from shared.run.settings import parse_run_settings
from shared.validation.splitting import spool_split


def lines(n: int, tag: str = "q") -> bytes:
    return b"".join(json.dumps({"messages": [{"role": "user", "content": f"What is {tag} {i}?"},
                                             {"role": "assistant", "content": f"It is {i}."}]}).encode() + b"\n"
                    for i in range(n))


def split(n: int, eval_n: int | None = None, **settings: object):
    openers = {"train": lambda: [lines(n)]}
    if eval_n is not None:
        openers["eval"] = lambda: [lines(eval_n, "held")]
    return spool_split(openers, parse_run_settings(settings or None))


def test_the_minimum_comes_from_the_power_calculation_and_is_at_least_30() -> None:
    assert MIN_HELD_OUT == held_out_needed() == 32 and held_out_needed(effect=1.0) == 30   # the floor
    # what the calculation promises, by simulation: a model 0.25 above the threshold, with the largest
    # spread a 0/1 score can have at that mean, clears it on the lower bound 80 % of the time or more
    rng = random.Random(5)
    passes = sum(mean_interval([float(rng.random() < 0.75) for _ in range(MIN_HELD_OUT)]).low >= 0.5
                 for _ in range(2000))
    assert passes / 2000 >= 0.8


@pytest.mark.parametrize("n", [11, 16, 40])
def test_a_drop_too_small_to_hold_out_enough_is_refused_with_the_numbers_and_the_fix(n: int) -> None:
    prepared = split(n)
    assert prepared.problem is not None
    assert f"{n} in train.jsonl" in prepared.problem and f"at least {MIN_HELD_OUT}" in prepared.problem
    assert "add examples" in prepared.problem and "eval.jsonl" in prepared.problem


def test_the_split_reserves_the_minimum_and_keeps_ten_to_train_on() -> None:
    prepared = split(80)
    assert prepared.problem is None
    assert prepared.counts["eval"] >= MIN_HELD_OUT and prepared.counts["train"] >= MIN_TRAIN
    assert split(80).counts == prepared.counts                               # seeded: the same split again
    big = split(1000)
    assert 150 <= big.counts["eval"] <= 250                                  # the 20 % fraction, when larger


def test_a_given_eval_file_must_hold_the_minimum() -> None:
    short = split(40, eval_n=5)
    assert short.problem is not None and "eval.jsonl has 5" in short.problem and "add 27" in short.problem
    assert split(40, eval_n=MIN_HELD_OUT).problem is None


def test_ftops_validate_refuses_an_eleven_example_drop(tmp_path: Path) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_bytes(lines(11))
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = cli.run(parser.parse_args(["validate", str(path)]), stdout=out, stderr=io.StringIO())
    assert code == 1 and "too_few_to_split" in out.getvalue() and f"at least {MIN_HELD_OUT}" in out.getvalue()
