"""A train command's dataset path never leaves the datasets container: `..` is refused by the handler's
own check (the same one the CLI runs), whatever the SDK would normalise it to."""
from __future__ import annotations

import pytest
from fakes import make_deps

from shared.app.settlement import PermanentError
from shared.stages.command_checks import dataset_blob_name

DEPS = make_deps()


@pytest.mark.parametrize("blob", ["../reports/run-1/data/train.jsonl", "datasets/../reports/x.jsonl",
                                  "team/../../reports/run.json", "datasets/a/../b.jsonl"])
def test_dotdot_is_refused(blob: str) -> None:
    with pytest.raises(PermanentError, match=r"'\.\.' is not allowed"):
        dataset_blob_name(DEPS, blob)


def test_plain_names_pass() -> None:
    assert dataset_blob_name(DEPS, "datasets/bot.jsonl") == "bot.jsonl"
    assert dataset_blob_name(DEPS, "team/run.json") == "team/run.json"
