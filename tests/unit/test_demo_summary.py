"""The demo's summary says why each run stopped short and where its report is; its exit status tells an
answer (a verdict on the data) from a failure."""
from __future__ import annotations

from shared.cli.demo import render, unexpected_failures
from shared.cli.status import render_table
from shared.cli.views import run_view
from shared.registry import RunRecord

ENVS = ["dev", "test", "prod"]


def result(*runs: RunRecord, letters: list | None = None) -> dict:
    return {"runs": [run_view(r, []) for r in runs], "dead_letters": letters or [],
            "emulator": {"jobs_created": 1, "deployments": []}}


def rejected() -> RunRecord:
    return RunRecord(run_id="tiny-0123456789", source="datasets/tiny.jsonl", state="rejected", environments=ENVS,
                     validation={"valid": False},
                     error={"code": "too_few_to_split", "message": "too few examples to split: 8 for training"})


def deployed() -> RunRecord:
    return RunRecord(run_id="bot-0123456789", source="datasets/bot.jsonl", state="deployed:prod", environments=ENVS,
                     job_id="ftjob-1", validation={"valid": True}, evaluation={"passed": True})


def training_failed() -> RunRecord:
    return RunRecord(run_id="odd-0123456789", source="datasets/odd.jsonl", state="training_failed",
                     environments=ENVS, job_id="ftjob-2", validation={"valid": True},
                     error={"code": "invalid_training_file", "message": "the hub refused the file"})


def test_each_run_short_of_its_end_shows_why_and_its_report() -> None:
    text = render(result(deployed(), rejected()))
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("tiny-0123456789"))
    assert "too_few_to_split: too few examples to split" in lines[at + 1]
    assert "reports/tiny-0123456789/validation.html" in lines[at + 2]
    bot = next(i for i, line in enumerate(lines) if line.startswith("bot-0123456789"))
    assert not lines[bot + 1].strip().startswith("why")


def test_verdicts_are_answers_but_failures_and_dead_letters_are_not() -> None:
    assert unexpected_failures(result(deployed(), rejected()), sample=False) == []
    assert unexpected_failures(result(rejected()), sample=True)   # the sample must go all the way
    [failed] = unexpected_failures(result(deployed(), training_failed()), sample=False)
    assert "odd-0123456789" in failed and "the hub refused the file" in failed
    assert unexpected_failures(result(deployed(), letters=[{"queue": "ftops-train", "reason": "RunNotFound"}]),
                               sample=False)


def test_status_columns_fit_their_values() -> None:
    long_state = RunRecord(run_id="r-" + "x" * 40, source="s", state="awaiting_approval:production-eu",
                           environments=["dev", "production-eu"], job_id="ftjob-" + "a" * 32)
    view = {"runs": [run_view(long_state, []), run_view(rejected(), [])], "dead_letters": [],
            "hosting_cost": {"deployments": []}}
    header, *rows = render_table(view).splitlines()
    starts = [header.index(col) for col in ("STATE", "JOB", "EVAL")]
    for row in rows:   # every value starts under its header, none runs into the next column
        assert all(row[s - 2:s] == "  " for s in starts), row


def test_demo_datasets_says_what_it_skips(tmp_path, capsys) -> None:
    from shared.cli.demo import _plan_drops
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "run-folder").mkdir()
    (tmp_path / "run-folder" / "run.json").write_text("{}")
    (tmp_path / "run-folder" / "train.jsonl").write_text("{}\n")
    (tmp_path / "no-settings").mkdir()
    (tmp_path / "no-settings" / "train.jsonl").write_text("{}\n")
    starts = [start for start, _ in _plan_drops(tmp_path)]
    assert starts == ["a.jsonl", "run-folder/run.json"]
    err = capsys.readouterr().err
    assert "skipping notes.csv: not a .jsonl file" in err and "skipping no-settings/: no run.json" in err
