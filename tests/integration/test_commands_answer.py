"""Bus commands that answer: refused before sending when they cannot succeed, followed to their outcome
with --wait, and — when another system sends one that fails — visible in status with an event."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueServiceClient

from ftops_cli import operate
from ftops_cli.status import collect, render_run
from local.devhost.servicebus import LocalMessageActions, from_queue_message
from local.settings import local_env
from shared.app.settlement import PermanentError, settle
from shared.azure.bus import decode_local
from shared.run.messages import RunCommand, envelope
from shared.stages.commands import handle_command
from shared.stages.intake import handle_blob_created

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "support-bot.jsonl"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ftops")
    operate.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def deliver_commands(deps):
    """What the commands function does on the dev host: peek-lock, handle, settle (dead letters included)."""
    queues = QueueServiceClient.from_connection_string(deps.settings.storage_connection)
    actions = LocalMessageActions(queues, max_delivery_count=3)
    queue = deps.publisher.queue_client(deps.settings.commands_queue)

    def sleep(_: float) -> None:
        for qm in queue.receive_messages(max_messages=8, visibility_timeout=30):
            message = from_queue_message(deps.settings.commands_queue, queue, qm)
            with contextlib.suppress(Exception):   # transient: abandoned, delivered again on the next look
                settle(message, actions, lambda event, data: handle_command(event, data, deps), accepts="ftops.command.")
    return sleep


def ftops(argv: list[str], deps) -> tuple[int, str]:
    argv = [a.replace("DS/", f"{deps.settings.datasets_container}/") for a in argv]
    out = io.StringIO()
    with redirect_stdout(out):
        code = operate.run(parse(*argv), deps=deps, sleep=deliver_commands(deps))
    return code, out.getvalue()


def drop(deps, name: str, body: bytes) -> None:
    deps.blobs.get_container_client(deps.settings.datasets_container).upload_blob(name, body, overwrite=True)


def test_commands_that_cannot_succeed_are_refused_before_sending(make_deps):
    deps = make_deps()
    drop(deps, "tiny.jsonl", b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:10]))
    rejected = handle_blob_created("tiny.jsonl", deps)
    drop(deps, "bot.jsonl", SAMPLE.read_bytes())
    refusals = {   # `train` goes through the operator API, which refuses the same (test_train_through_the_api…)
        ("cancel", "no-such-run"): "not in the registry",
        ("cancel", rejected): "rejected",
        ("pause", rejected): "only a training run",
        ("retrain", rejected, "--settings", '{"seed": 7}'): "cannot be retrained",
    }
    for argv, needle in refusals.items():
        with pytest.raises(Exception) as caught:
            ftops(list(argv), deps)
        assert "not sent" in str(caught.value) and needle in str(caught.value), argv
    queue = deps.publisher.queue_client(deps.settings.commands_queue)
    assert queue.peek_messages(max_messages=32) == []   # nothing was sent


class _Operator:
    """The verified caller `ftops train` signs in as (the token checks themselves: test_operator_api.py)."""

    def verify(self, authorization: str | None) -> Any:
        from shared.azure.access import Caller
        return Caller(oid="6f1c2d3e-0000-4000-8000-0000000000a1", tenant="tenant-contoso", name="Demo Operator",
                      roles=frozenset({"Operator"}))


def test_train_through_the_api_refuses_what_cannot_succeed_and_answers_the_runs_outcome(make_deps):
    from ftops_cli.operate import run_api
    from shared.operator.api import handle

    class Api:   # what the CLI's client does: POST runs, as the signed-in person
        def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
            from ftops_cli.operator_client import ApiError
            answer = handle("train", authorization="Bearer t", params={}, body=json.dumps(body).encode(), deps=deps,
                            verifier=_Operator())
            if answer.status >= 300:
                raise ApiError(answer.status, answer.body["error"]["message"])
            return answer.body

    deps = make_deps()

    def train(*argv: str) -> argparse.Namespace:
        return parse("train", *(a.replace("DS/", f"{deps.settings.datasets_container}/") for a in argv))

    drop(deps, "bot.jsonl", SAMPLE.read_bytes())
    drop(deps, "tiny.jsonl", b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:10]))
    refusals = {
        ("DS/missing.jsonl",): "does not exist",
        ("DS/bot.jsonl", "--settings", '{"hyperparameters": {"n_epoch": 2}}'): "n_epoch",
        ("DS/../reports/x.jsonl",): "'..'",
        ("DS/export.csv",): "not a .jsonl file",
        ("DS/bot.jsonl", "--settings", '{"environments": ["staging"]}'): "staging not configured",
    }
    for argv, needle in refusals.items():
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert run_api(train(*argv), Api()) == 1, argv
        assert "refused (409)" in err.getvalue() and needle in err.getvalue(), argv
    assert deps.registry.list_runs() == []   # nothing was started
    out = io.StringIO()
    with redirect_stdout(out):
        assert run_api(train("DS/bot.jsonl", "--settings", '{"suffix": "w"}'), Api()) == 0
    assert " (accepted) as Demo Operator (6f1c2d3e-" in out.getvalue()
    out = io.StringIO()
    with redirect_stdout(out):
        assert run_api(train("DS/tiny.jsonl"), Api()) == 1
    [rejected] = [r for r in deps.registry.list_runs() if r.state == "rejected"]
    assert f"run {rejected.run_id} rejected: " in out.getvalue() and "/validation.html" in out.getvalue()


def test_a_command_refused_by_its_handler_is_in_status_and_raises_an_event(make_deps):
    deps = make_deps()
    drop(deps, "tiny.jsonl", b"".join(SAMPLE.read_bytes().splitlines(keepends=True)[:10]))
    run_id = handle_blob_created("tiny.jsonl", deps)
    event = envelope(RunCommand(run_id=run_id, requested_by="ci"), type_="ftops.command.cancel")
    with pytest.raises(PermanentError):   # another system sent it: no CLI check in between
        handle_command(event, RunCommand(run_id=run_id, requested_by="ci"), deps)
    view = collect(deps, run_id)
    [refusal] = [a for a in view["runs"][0]["audit"] if a["action"] == "command_deadlettered"]
    assert refusal["detail"]["message_id"] == event.id and "rejected" in refusal["detail"]["description"]
    assert "refused cancel" in render_run(view)
    events = deps.publisher.queue_client(deps.settings.events_topic).peek_messages(max_messages=32)
    types = [json.loads(decode_local(m.content)["body"])["type"] for m in events]
    assert "ftops.run.command_deadlettered" in types


def test_status_of_a_missing_run_is_one_line_and_exit_2(azurite, emulator, make_deps):
    deps = make_deps()   # the tables exist
    env = local_env(storage_connection=azurite.connection_string, emulator_url=emulator.base_url,
                    ca_file=str(emulator.ca_file), FTOPS_TABLE_PREFIX=deps.settings.table_prefix)
    for argv in (["status", "no-such-run"], ["cancel", "no-such-run"], ["pause", "no-such-run"],
                 ["resume", "no-such-run"], ["retrain", "no-such-run", "--settings", '{"seed": 1}']):
        proc = subprocess.run([sys.executable, "-m", "ftops_cli", *argv], cwd=ROOT, capture_output=True,
                              text=True, env=env, timeout=120, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "no-such-run" in proc.stderr


def test_wait_reports_a_cancel_and_a_refusal_by_the_handler_with_its_reason(make_deps):
    from ftops_cli.follow import Expectation, follow
    deps = make_deps()
    drop(deps, "bot.jsonl", SAMPLE.read_bytes())
    run_id = handle_blob_created("bot.jsonl", deps)   # accepted: waiting to train, so it can be cancelled
    code, out = ftops(["cancel", run_id, "--wait", "--by", "ops@contoso.example"], deps)
    assert code == 0 and out.splitlines()[-1] == f"run {run_id} cancelled"
    # another system sends a pause for it now (no CLI check in between): the handler refuses it
    event = envelope(RunCommand(run_id=run_id), type_="ftops.command.pause")
    expect = Expectation("pause", run_id, seen_audit=len(deps.registry.audit_trail(run_id)))
    deps.publisher.send(deps.settings.commands_queue, event)
    code, what = follow(deps, event, expect, timeout=60, sleep=deliver_commands(deps), poll_seconds=0)
    assert code == 1 and what.startswith("refused: PermanentError") and "only a training run" in what
