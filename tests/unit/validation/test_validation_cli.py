from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

from vhelpers import chat, dpo, jsonl, padded, rft

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


GOOD_GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
               "reference": "{{item.answer}}", "operation": "eq"}


def test_an_rft_file_is_checked_with_a_grader_given_on_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "rft.jsonl"
    data.write_bytes(jsonl([rft(f"What is {i} + {i}?", str(2 * i)) for i in range(60)]))   # 32 held out
    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GOOD_GRADER))
    code, out, err = run(str(data), "--model", "o4-mini-2025-04-16", "--grader", str(grader), "--json")
    assert code == 0, out + err
    assert json.loads(out)["method"] == "reinforcement" and json.loads(out)["examples"] == 60
    code, out, _ = run(str(data), "--model", "o4-mini-2025-04-16", "--grader", json.dumps(GOOD_GRADER))
    assert code == 0 and "ACCEPTED" in out   # inline JSON alike


def test_graders_azures_v1_api_refuses_are_refused_and_the_data_is_still_read(tmp_path: Path) -> None:
    rows = [rft(f"What is {i} + {i}?", str(2 * i)) for i in range(20)]
    data = tmp_path / "rft.jsonl"
    data.write_bytes(jsonl(rows)[:-1] + b"\n{oops\n")   # and one broken line, so reading the data shows
    cases = {
        '{"type": "string_check"}': "grader.input: required for a string_check grader",
        '{"type": "python", "name": "p", "source": "def grade(s, i): return 1"}':
            "python graders are not accepted by Azure's v1 fine-tuning API",
        json.dumps({**GOOD_GRADER, "operation": "contains"}): "grader.operation: one of eq, ne, like, ilike",
        json.dumps({"type": "multi", "name": "m", "calculate_output": "a", "graders": {"a": {"type": "string_check"}}}):
            "grader.graders.a.reference: required",
    }
    for grader, problem in cases.items():
        code, out, _ = run(str(data), "--model", "o4-mini-2025-04-16", "--grader", grader)
        assert code == 1 and problem in out, (grader, out)
        assert "invalid_json" in out, "the data was not read"
    # no grader at all: the missing setting is one more error beside the data's
    code, out, _ = run(str(data), "--model", "o4-mini-2025-04-16", "--method", "reinforcement", "--json")
    found = json.loads(out)
    assert code == 1 and {e["code"] for e in found["errors"]} >= {"invalid_settings", "invalid_json"}
    assert any("needs a 'grader'" in e["message"] for e in found["errors"]) and found["examples"] >= 20
    code, _, err = run(str(data), "--grader", str(tmp_path / "nope.json"))
    assert code == 2 and "neither inline JSON nor a file" in err
