"""The offline infrastructure checks, run as a person would from the repository root: checkov over infra/
with no failed check, shellcheck over every shell script with no finding, every PowerShell script parsed (there
is no PowerShell here to run one), and azure-functions-doctor with no failure, recognising Flex Consumption."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from infra_bicep import INFRA, ROOT, bicep_files, parsed
from script_structure import syntax_errors

BIN = Path(sys.executable).parent


def shell_scripts() -> list[Path]:
    """Every file in the repository that the shell runs: `*.sh`, and any tracked file with a shell shebang."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    found = []
    for name in filter(None, listed.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue
        with path.open("rb") as f:
            first = f.readline(200)
        if name.endswith(".sh") or (first.startswith(b"#!") and first.rstrip().split(b"/")[-1].split()[-1]
                                    in {b"sh", b"bash", b"dash"}):
            found.append(path)
    return found


def test_shellcheck_finds_nothing_in_any_shell_script():
    # The azd hooks run under whatever /bin/sh the deployer has: macOS's is bash 3.2 in POSIX mode, where an
    # apostrophe inside "${VAR:?message}" opens a quote that never closes (postdeploy.sh did that once).
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: `make setup` installs the Debian package"
    scripts = shell_scripts()
    assert {"infra/scripts/postdeploy.sh", ".ci/run"} <= {str(p.relative_to(ROOT)) for p in scripts}
    run = subprocess.run([shellcheck, "--severity=style", "--format=gcc", *map(str, scripts)],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout == "" and run.returncode == 0, "shellcheck:\n" + run.stdout + run.stderr


def powershell_scripts() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z", "*.ps1"], cwd=ROOT, check=True, capture_output=True).stdout
    return [ROOT / name for name in filter(None, listed.decode().split("\0")) if (ROOT / name).is_file()]


def test_every_powershell_script_parses():
    """There is no PowerShell here, so nothing runs the `.ps1` hooks: tree-sitter's PowerShell grammar at least
    parses each one (a grammar, not PowerShell's own parser: docs/deploy.md, "Hooks on Windows and POSIX")."""
    scripts = powershell_scripts()
    assert {"infra/scripts/postdeploy.ps1", "infra/scripts/preprovision.ps1", "infra/scripts/app-registration.ps1"} \
        <= {str(p.relative_to(ROOT)) for p in scripts}
    problems = {str(p.relative_to(ROOT)): syntax_errors(p) for p in scripts}
    assert not any(problems.values()), f"PowerShell syntax errors: {problems}"


BREAKAGES = {
    # what a hand edit leaves behind, each a syntax error PowerShell refuses before running a line
    "the last block's closing brace removed": lambda src: re.sub(rb"\n[ \t]*\}[ \t]*(?=\n(?:(?!\n[ \t]*\}[ \t]*\n).)*\Z)",
                                                           b"\n", src, count=1, flags=re.DOTALL),
    "a string left open": lambda src: src.replace(b'Write-Output "', b'Write-Output "\n"', 1)
    if b'Write-Output "' in src else src + b'\nWrite-Output "unterminated\n',
    "an if without its closing parenthesis": lambda src: src + b"\nif ($true {\n    exit 1\n}\n",
    "a hash literal left open": lambda src: src + b"\n$x = @{ a = 1\n",
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_the_powershell_check_refuses_a_broken_copy_of_each_script(tmp_path, breakage):
    for script in powershell_scripts():
        broken = BREAKAGES[breakage](script.read_bytes())
        assert broken != script.read_bytes(), f"{script.name}: {breakage} changed nothing"
        copy = tmp_path / script.name
        copy.write_bytes(broken)
        errors = syntax_errors(copy)
        assert errors and all(e.startswith("line ") for e in errors), f"{script.name}, {breakage}: not refused"


CUSTOM_CHECKS = INFRA / "checkov"
# Honest reasons only: each skip names what is given up and where docs/deploy.md says so.
EXPECTED_SKIPS = {"CKV_AZURE_35", "CKV_AZURE_59", "CKV_AZURE_206", "CKV_AZURE_134", "CKV_AZURE_225",
                  "CKV_AZURE_222", "CKV_AZURE_17", "CKV_AZURE_212", "CKV_AZURE_213"}


def run_checkov(directory: Path) -> dict:
    run = subprocess.run(
        [BIN / "checkov", "-d", str(directory), "--framework", "bicep", "--skip-download",
         "--external-checks-dir", str(CUSTOM_CHECKS), "-o", "json"],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.stdout.strip(), f"checkov printed no report (exit {run.returncode}): {run.stderr[-2000:]}"
    report = json.loads(run.stdout)
    return report[0] if isinstance(report, list) else report


def declares_a_resource(path: Path) -> bool:
    """A resource checkov can evaluate: declared here, not an `existing` reference (modules are not resources)."""
    return any(not r.get("existing") for r in parsed(path).get("resources", {}).values())


def test_checkov_evaluates_every_bicep_file_and_finds_no_failed_check():
    report = run_checkov(INFRA)
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in results["failed_checks"]]
    assert failed == [], "checkov failed checks:\n" + "\n".join(failed)
    assert report["summary"]["parsing_errors"] == 0
    # every file with a resource is evaluated (checkov has no Bicep checks of its own for Service Bus, Event
    # Grid, monitoring, identities or role assignments: infra/checkov/ adds them)
    seen = {c["file_path"].lstrip("/") for k in ("passed_checks", "skipped_checks") for c in results[k]}
    expected = {str(p.relative_to(INFRA)) for p in bicep_files() if declares_a_resource(p)}
    assert sorted(expected - seen) == [], "Bicep files checkov evaluated nothing in"
    assert len(expected) >= 9
    # every skip is in place with a reason (never a global --skip-check), and only the known ones
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment", "").strip()) > 40, skipped["check_id"]
    assert {s["check_id"] for s in results["skipped_checks"]} <= EXPECTED_SKIPS
    ours = {c["check_id"] for c in results["passed_checks"] if c["check_id"].startswith("CKV_FTOPS_")}
    assert ours == {f"CKV_FTOPS_{i}" for i in range(1, 8)}, "every ftops check applies somewhere"


def test_the_ftops_checkov_checks_fail_what_they_should(tmp_path):
    """Each custom check refuses the mistake it is there for (else a passing scan proves nothing)."""
    (tmp_path / "bad.bicep").write_text("""
resource ns 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: 'ns'
  location: 'x'
  sku: {
    name: 'Standard'
  }
  properties: {
    disableLocalAuth: false
  }
}
resource q 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = {
  parent: ns
  name: 'q'
  properties: {
    maxDeliveryCount: 2000
  }
}
resource appi 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi'
  location: 'x'
  kind: 'web'
  properties: {
    Application_Type: 'web'
  }
}
resource ra 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: 'ra'
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', 'b24988ac-6180-42a0-ab88-20f7382dd24c')
    principalId: 'p'
    principalType: 'User'
  }
}
resource rd 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: 'rd'
  properties: {
    roleName: 'wide'
    permissions: [
      {
        actions: [
          'Microsoft.CognitiveServices/*'
        ]
      }
    ]
    assignableScopes: [
      '/subscriptions/x'
    ]
  }
}
resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 't'
  location: 'x'
  properties: {
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}
resource id 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id'
  location: 'x'
}
""")
    failed = {c["check_id"] for c in run_checkov(tmp_path)["results"]["failed_checks"]}
    assert {f"CKV_FTOPS_{i}" for i in range(1, 8)} <= failed


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
