"""`ftops approve|reject|rollback|retire` call the operator API as the signed-in user: one line per outcome,
exit 0 done, 1 refused, 2 not configured; the approver can no longer be named on the command line."""
from __future__ import annotations

import argparse
from typing import Any

import pytest

from ftops_cli import main
from ftops_cli.operate import run_api
from ftops_cli.operator_client import ApiError, OperatorClient, client_from_env
from shared.run.config import ConfigError


class FakeApi:
    """Answers like the operator API; records what was asked."""

    def __init__(self, refuse: ApiError | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[str, str, Any]] = []

    def call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        if self.refuse:
            raise self.refuse
        if path.endswith("/approve"):
            return {"approved": {"model": body["model"], "run_id": "r1", "environment": body["environment"],
                                 "approver_name": "Demo Operator", "approver_oid": "oid-1", "ticket": body["ticket"]},
                    "next": "deploying to prod"}
        if method == "GET":
            return {"candidate": {"model": "m-B", "dataset_hash": "sha256:d", "evaluation_report_hash": "sha256:e"}}
        return {}

    run = OperatorClient.run
    approve = OperatorClient.approve   # the real approve: read the candidate, then approve exactly it


def args(name: str, **kw: Any) -> argparse.Namespace:
    return argparse.Namespace(command_name=name, json=False, **kw)


def test_approve_names_the_model_and_evidence_the_run_holds_now(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi()
    assert run_api(args("approve", run_id="r1", env="prod", ticket="CHG-1", comment=None), api) == 0
    _, path, body = api.calls[-1]
    assert path == "runs/r1/approve" and body["model"] == "m-B" and body["evaluation_report_hash"] == "sha256:e"
    assert "approved m-B of run r1 into prod as Demo Operator (oid-1), ticket CHG-1" in capsys.readouterr().out


def test_a_refusal_is_one_line_with_the_apis_reason_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(ApiError(403, "oid-1 owns run r1 and cannot approve it (four eyes)"))
    assert run_api(args("approve", run_id="r1", env="prod", ticket="T", comment=None), api) == 1
    err = capsys.readouterr().err.strip()
    assert err == "ftops approve: refused (403): oid-1 owns run r1 and cannot approve it (four eyes)"


def test_unreachable_api_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    api = FakeApi(ApiError(0, "cannot reach the operator API at http://x: refused"))
    assert run_api(args("retire", run_id="r1", reason=None), api) == 2
    assert "cannot reach the operator API" in capsys.readouterr().err


def test_without_an_api_url_the_setting_to_set_is_named() -> None:
    with pytest.raises(ConfigError, match="FTOPS_API_URL must be set"):
        client_from_env({})
    with pytest.raises(ConfigError, match="OPERATOR_API_SCOPE"):
        client_from_env({"FTOPS_API_URL": "https://app.example/api"})


def test_the_scope_is_the_apis_default_scope_whether_named_by_client_id_or_app_id_uri() -> None:
    from shared.azure.identity import scope_for
    assert scope_for("c0ffee00-0000-4000-8000-00000000f7a9") == "api://c0ffee00-0000-4000-8000-00000000f7a9/.default"
    assert scope_for("api://ftops, c0ffee00") == "api://ftops/.default"


def test_the_approver_cannot_be_named_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["approve", "r1", "--env", "prod", "--ticket", "T", "--approver", "boss@contoso.example"]) == 2
    assert "--approver" in capsys.readouterr().err
