from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from vhelpers import chat, dpo, jsonl, padded

from ftops_cli import validate as cli


def run(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ftops")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["validate", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(args, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_accepted_rejected_and_usage_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.jsonl"
    good.write_bytes(jsonl(padded([], n=60)))   # enough to hold out evaluation data and still train
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(jsonl(padded(["{oops"], n=60)))
    assert run(str(good))[0] == 0
    code, out, _ = run(str(bad))
    assert code == 1 and "REJECTED" in out and "line 1: invalid_json" in out
    assert run(str(tmp_path / "missing.jsonl"))[0] == 2
    code, _, err = run(str(good), "--model", "gpt-9")
    assert code == 2 and "unknown model" in err
    code, out, _ = run(str(tmp_path))   # a folder without train.jsonl: rejected as intake would
    assert code == 1 and "missing_file" in out


def test_json_output_is_one_object(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(padded([chat(user="mail bob@contoso.com")], n=60)))
    code, out, _ = run(str(path), "--json", "--pii", "warn")
    assert code == 0
    data = json.loads(out)
    assert out.count("\n") == 1
    assert data["valid"] is True and data["method"] == "supervised" and data["examples"] == 60
    assert data["method_source"] == "detected" and sum(data["split"].values()) == 60
    assert data["warnings"] == [{"line": 1, "code": "pii_email", "message": "email address b***@c***.com"}]
    assert data["stats"]["cost"]["estimate"] is True


def test_run_folder_uses_run_json_and_checks_overlap(tmp_path: Path) -> None:
    rows = [{**dpo(), "input": {"messages": [{"role": "user", "content": f"Prompt {i}"}]}} for i in range(60)]
    (tmp_path / "train.jsonl").write_bytes(jsonl(rows))
    (tmp_path / "validation.jsonl").write_bytes(jsonl(rows[:1]))
    (tmp_path / "run.json").write_text(json.dumps({"base_model": "gpt-4.1", "method": "dpo", "owner": "x"}))
    code, out, _ = run(str(tmp_path), "--json")
    data = json.loads(out)
    assert code == 0 and data["method"] == "dpo"
    assert [(w["file"], w["code"]) for w in data["warnings"]] == [("validation.jsonl", "leakage")]
    code, out, _ = run(str(tmp_path), "--json", "--model", "gpt-4o-mini")  # the flag wins: no DPO there
    assert code == 1 and "method_not_supported" in out


def test_text_output_never_shows_a_full_secret(tmp_path: Path) -> None:
    secret = "AKIAIOSFODNN7EXAMPLQ"
    path = tmp_path / "d.jsonl"
    path.write_bytes(jsonl(padded([chat(user=f"key={secret}")])))
    for flags in ((), ("--json",)):
        code, out, err = run(str(path), *flags)
        assert code == 1
        assert secret not in out + err and "FODNN7" not in out + err
