"""The offline infrastructure checks, run as a person would from the repository root: checkov over infra/
with no failed check, and azure-functions-doctor with no failure, recognising Flex Consumption."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra_bicep import INFRA, ROOT

BIN = Path(sys.executable).parent


def test_checkov_finds_no_failed_check_in_infra():
    run = subprocess.run(
        [BIN / "checkov", "-d", str(INFRA), "--framework", "bicep", "--skip-download", "-o", "json"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.stdout.strip(), f"checkov printed no report (exit {run.returncode}): {run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in results["failed_checks"]]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"]["passed"] >= 20, "checkov checked almost nothing: did it parse the Bicep?"
    # every skip is in place with a reason (never a global --skip-check)
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "").strip()) > 20, skipped["check_id"]
    assert run.returncode == 0


def test_functions_doctor_reports_no_failure_and_sees_flex_consumption(tmp_path):
    out = tmp_path / "doctor.json"
    run = subprocess.run([BIN / "azure-functions-doctor", "doctor", "--format", "json", "--output", str(out)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.exists(), f"the doctor wrote no report (exit {run.returncode}): {run.stderr[-2000:]}"
    items = {i["rule_id"]: i for section in json.loads(out.read_text())["results"] for i in section["items"]}
    failures = [f"{r}: {i['value']}" for r, i in items.items() if i["status"] == "fail"]
    assert failures == [], "azure-functions-doctor failures:\n" + "\n".join(failures)
    plan = items["check_hosting_plan_lifecycle"]
    assert plan["status"] == "pass" and "flex-consumption" in plan["value"], plan["value"]
    assert items["check_flex_deprecated_settings"]["status"] == "pass"
    assert items["check_unpinned_requirements"]["status"] == "pass", items["check_unpinned_requirements"]["value"]
    assert run.returncode == 0
