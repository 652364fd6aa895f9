"""The demo's summary says why each run stopped short and where its report is; its exit status tells an
answer (a verdict on the data) from a failure."""
from __future__ import annotations

from typing import Any

from ftops_cli.demo import render, unexpected_failures
from ftops_cli.status import render_table
from ftops_cli.views import run_view
from shared.store.registry import RunRecord

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
    from ftops_cli.demo import _plan_drops
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


def status_deps(runs: list[RunRecord], slots: list, letters: list[dict]) -> Any:
    """Deps over the unit fakes holding these runs, slots and dead letters (what `ftops status` reads)."""
    from local.settings import DEMO_SPOKES
    from tests.unit.fakes import MemoryPublisher, MemoryRegistry, make_deps, settings_for_tests
    registry = MemoryRegistry()
    for run in runs:
        registry.create_run(run, actor="test")
    for slot in slots:
        registry.save_deployment(slot)
    return make_deps(settings_for_tests(spokes_config=DEMO_SPOKES.read_text()), registry=registry,
                     publisher=MemoryPublisher(dead_letters=letters))


def test_status_totals_hosting_by_run_state_and_lists_dead_letters() -> None:
    from ftops_cli.status import collect, render_run
    from shared.store.registry import DeploymentRecord

    def slot(run_id: str, env: str, account: str) -> DeploymentRecord:
        return DeploymentRecord(environment=env, account=account, deployment=run_id, region="eastus",
                                subscription="s", resource_group="rg", run_id=run_id,
                                model="gpt-4.1-mini-2025-04-14.ft-x")
    denied = RunRecord(run_id="denied-1", source="s", state="approval_denied", environments=ENVS,
                       error={"stage": "approval", "reason": "not convincing"})
    slots = [slot("bot-0123456789", "prod", "p1"), slot("denied-1", "dev", "d1"), slot("denied-1", "test", "t1")]
    letters = [{"queue": "ftops-commands", "message_id": "m1", "subject": "denied-1", "reason": "PermanentError",
                "description": "run denied-1 is approval_denied: it cannot be retrained"},
               {"queue": "ftops-train", "message_id": "m2", "subject": "other", "reason": "RunNotFound",
                "description": "gone"}]
    deps = status_deps([deployed(), denied], slots, letters)
    view = collect(deps)
    by_state = view["hosting_cost"]["per_day_by_run_state"]
    per_slot = view["hosting_cost"]["deployments"][0]["per_day"]
    assert by_state == {"approval_denied": round(2 * per_slot, 2), "deployed:prod": per_slot}
    assert len(view["dead_letters"]) == 2
    one = collect(deps, "denied-1")
    assert [x["message_id"] for x in one["dead_letters"]] == ["m1"]   # only the run's
    text = render_run(one)
    assert "why:       approval: not convincing" in text and "it cannot be retrained" in text


def test_a_run_left_for_a_person_to_approve_is_a_failure_only_when_the_demo_was_to_approve_it() -> None:
    owner = "6f1c2d3e-0000-4000-8000-0000000000b2"   # who confirmed it (ftops claim): now it waits for an approver
    waiting = RunRecord(run_id="bot-0123456789", source="datasets/bot/run.json", state="awaiting_approval:prod",
                        environments=ENVS, job_id="ftjob-1", evaluation={"passed": True}, owner=owner, claimed_by=owner)
    assert unexpected_failures(result(waiting), sample=True, waiting_ok=True) == []
    [failed] = unexpected_failures(result(waiting), sample=True)
    assert "awaiting_approval:prod" in failed and "waiting for an approver of prod" in failed


def test_the_state_file_follows_a_process_the_stack_started_again() -> None:
    """`ftops demo --restart devhost` read the pids written at start: once the chaos exit (or a first kill) had
    the dev host started again, it found no such process. The state is written again on every new pid."""
    import threading

    from ftops_cli.demo import _StateKeeper
    pids = {"devhost": 100, "emulator": 200, "azurite": 300}
    written: list[dict[str, int | None]] = []
    second = threading.Event()

    def write() -> None:
        written.append(dict(pids))
        if len(written) == 2:
            second.set()
    with _StateKeeper(write, lambda: dict(pids)):
        pids["devhost"] = 101                     # the supervisor started it again
        assert second.wait(5)
    assert [w["devhost"] for w in written] == [100, 101]
