"""Ordinary mistakes at the keyboard get one line that says why and exit 2 — never a traceback.

Each case runs the real `ftops` command in a fresh process with only the environment given (so missing
settings are really missing)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftops_cli.errors import UsageError, explain
from shared.run.config import ConfigError
from shared.store.registry import RunNotFound

ROOT = Path(__file__).resolve().parents[2]
BUS = ["train datasets/x.jsonl", "cancel r1", "pause r1", "resume r1", "retrain r1"]
OPERATOR = ["approve r1 --env prod --ticket T-1", "reject r1 --env prod --reason no", "rollback --env prod",
            "retire r1"]


def ftops(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            # a demo running on this machine must not become these commands' target
            "FTOPS_LOCAL_STATE": str(ROOT / ".no-such-local-stack.json")}
    proc = subprocess.run([sys.executable, "-m", "ftops_cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**base, **(env or {})}, timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def one_clear_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize("argv", ["status", "status r1", "report r1", *BUS])
def test_every_command_without_settings_names_the_missing_setting(argv: str) -> None:
    code, out, err = ftops(*argv.split())
    one_clear_line(code, err, "DatasetStorage", "local.settings.sample.json")
    assert out == ""


@pytest.mark.parametrize("argv", OPERATOR)
def test_the_operator_commands_without_settings_say_so_in_one_line(argv: str) -> None:
    # which setting they need depends on how they reach ftops (queue or operator API): only the shape is fixed
    code, out, err = ftops(*argv.split())
    one_clear_line(code, err, "FTOPS_API_URL")   # they call the operator API
    assert out == ""


def test_missing_and_wrong_paths(tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,completion\nhi,hello\n")
    one_clear_line(*ftops("validate", str(tmp_path / "nope.jsonl"))[::2], "no such file")
    one_clear_line(*ftops("demo", "--datasets", str(tmp_path / "nope"))[::2], "no such folder")
    one_clear_line(*ftops("demo", "--datasets", str(csv))[::2], "takes a folder", "ftops validate")
    one_clear_line(*ftops("train", "x.jsonl", "--settings", "{not json")[::2], "not valid JSON")
    # validate judges a file of the wrong type like intake does: rejected (1), named, with the fix
    code, out, err = ftops("validate", str(csv))
    assert code == 1 and "Traceback" not in err and "CSV" in out and "one JSON object per line" in out


def test_argument_errors_keep_argparse_usage_and_exit_2() -> None:
    code, _, err = ftops("cancel")
    assert code == 2 and "run_id" in err and "Traceback" not in err


@pytest.mark.parametrize("exc, needle, code", [
    (ConfigError("HUB_ENDPOINT must be set"), "HUB_ENDPOINT", 2),
    (RunNotFound("run 'x' is not in the registry"), "ftops status", 2),
    (UsageError("--datasets x: no such folder"), "no such folder", 2),
    (FileNotFoundError(2, "No such file or directory", "a.jsonl"), "a.jsonl", 2),
    (ConnectionError("refused"), "cannot reach", 1),
    (RuntimeError("boom\nsecond line"), "unexpected RuntimeError: boom", 1),
])
def test_explain_gives_one_line_and_the_exit_code(exc: Exception, needle: str, code: int) -> None:
    line, got = explain(exc)
    assert needle in line and "\n" not in line and got == code


def test_no_key_or_signature_reaches_the_terminal() -> None:
    secret = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq"
    line, _ = explain(ValueError(f"bad: DefaultEndpointsProtocol=http;AccountKey={secret};BlobEndpoint=x "
                                 "https://a/b?sv=1&sig=abcdef123 api-key: k-123"))
    assert secret not in line and "abcdef123" not in line and "k-123" not in line
    assert "AccountKey=****" in line and "BlobEndpoint=x" in line
