"""`ftops validate` and intake refuse what cannot be trained or graded, with the numbers: a drop too small to split
or with too short an eval file (and the size the refusal asks for then passes, whatever the seed), a grader
reference read from an item on chat data. Each case states what a user would notice."""
from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from ftops_cli import validate as cli
from shared.run.heldout import MIN_HELD_OUT, MIN_TRAIN
from shared.run.settings import RunSettingsError, parse_run_settings
from shared.validation.splitting import spool_split


# --- enough data: small drops at intake and `ftops validate` -------------------------------------------------
def _lines(n: int, tag: str = "q") -> bytes:
    return b"".join(json.dumps({"messages": [{"role": "user", "content": f"Where is {tag} number {i}?"},
                                             {"role": "assistant", "content": f"At shelf {i}."}]}).encode() + b"\n"
                    for i in range(n))


def _validate(path: Path) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))
    out = io.StringIO()
    code = cli.run(parser.parse_args(["validate", str(path)]), stdout=out, stderr=io.StringIO())
    return code, out.getvalue()


@pytest.mark.parametrize("n", [1, 2, 33, 41])
def test_a_small_single_file_is_refused_by_ftops_validate_with_the_numbers(tmp_path: Path, n: int) -> None:
    path = tmp_path / "small.jsonl"
    path.write_bytes(_lines(n))
    code, out = _validate(path)
    assert code == 1 and "too_few_to_split" in out and f"{n} in train.jsonl" in out


def test_a_run_folder_with_a_short_eval_file_is_refused_by_ftops_validate(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_lines(50))
    (folder / "eval.jsonl").write_bytes(_lines(MIN_HELD_OUT - 1, "held"))
    (folder / "run.json").write_text("{}")
    code, out = _validate(folder)
    assert code == 1 and f"eval.jsonl has {MIN_HELD_OUT - 1}" in out and "add 1" in out


def test_the_size_the_refusal_asks_for_is_accepted_whatever_the_seed() -> None:
    """The refusal says "about N in all": a drop of N examples must then pass, for any seed (the hash split
    can put more than its share on the validation side)."""
    problem = spool_split({"train": lambda: [_lines(20)]}, parse_run_settings(None)).problem
    assert problem is not None
    asked = int(problem.split("about ")[1].split(" in all")[0])
    for seed in range(40):
        prepared = spool_split({"train": lambda: [_lines(asked)]}, parse_run_settings({"seed": seed}))
        assert prepared.problem is None, (seed, prepared.counts)
        assert prepared.counts["eval"] >= MIN_HELD_OUT and prepared.counts["train"] >= MIN_TRAIN


def test_a_reference_from_the_item_on_chat_data_is_refused_not_graded_against_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "train.jsonl").write_bytes(_lines(60))
    (folder / "run.json").write_text(json.dumps({"evaluation": {"graders": [
        {"type": "string_check", "operation": "eq", "reference": "{{item.answer}}"}]}}))
    code, out = _validate(folder)
    assert code == 1 and "'reference' reads a field of a reinforcement line's item" in out
    with pytest.raises(RunSettingsError, match="remove 'reference'"):
        parse_run_settings({"method": "dpo", "evaluation": {"graders": [
            {"type": "token_f1", "reference": "{{item.answer}}"}]}})
