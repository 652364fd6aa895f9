"""infra/scripts/app-registration.sh (azd's postprovision hook), run offline against a fake `az`/`azd`
(tests/unit/fake_az.py): what it creates in the tenant and the azd environment, that running it again changes
nothing, that a new environment adds its approver role without touching the others, that granting a role is done
once, and that the switch FTOPS_APP_REGISTRATION=off skips it. It has not run against a real tenant (docs/deploy.md
says so); its PowerShell form is parsed and compared with it call by call (tests/unit/test_infra_contract.py)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "scripts" / "app-registration.sh"
FAKE = Path(__file__).with_name("fake_az.py")
IDENTITY = "9d0c0000-0000-4000-8000-00000000cafe"
CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"


class Tenant:
    def __init__(self, tmp: Path, environments: list[str]) -> None:
        self.tmp, self.bin = tmp, tmp / "bin"
        self.bin.mkdir()
        for tool in ("az", "azd"):
            path = self.bin / tool
            path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" {tool} "$@"\n')
            path.chmod(0o755)
        self.spokes(environments)

    def spokes(self, environments: list[str]) -> None:
        (self.tmp / "spokes.json").write_text(json.dumps({"environments": [
            {"name": e, "requires_approval": e == "prod", "targets": []} for e in environments]}))

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[str, list[list[str]]]:
        log = self.tmp / "calls.log"
        log.unlink(missing_ok=True)
        log.touch()
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_AZ_STATE": str(self.tmp / "tenant.json"),
               "FAKE_AZ_LOG": str(log), "SPOKES_FILE": str(self.tmp / "spokes.json"), "AZURE_ENV_NAME": "prod1",
               "AZURE_TENANT_ID": "tenant-1", "FTOPS_IDENTITY_PRINCIPAL_ID": IDENTITY,
               "FTOPS_API_URL": "https://ftops-app.azurewebsites.net/api", "AZURE_RESOURCE_GROUP": "rg-ftops",
               "AZURE_FUNCTION_APP_NAME": "ftops-app", **(env or {})}
        done = subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout, [json.loads(line) for line in log.read_text().splitlines()]

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "tenant.json").read_text())

    def app(self) -> dict[str, Any]:
        [app] = self.state["apps"].values()
        return app


def writes(calls: list[list[str]]) -> list[list[str]]:
    mutating = ("create", "update", "set", "PATCH", "POST", "delete")
    return [c for c in calls if any(word in mutating for word in c)]


@pytest.fixture
def tenant(tmp_path: Path) -> Tenant:
    if shutil.which("jq") is None:
        pytest.fail("jq is needed (the script uses it): apt-get install jq")
    return Tenant(tmp_path, ["dev", "test", "prod"])


def test_it_creates_the_registration_ftops_needs_and_running_it_again_changes_nothing(tenant: Tenant) -> None:
    out, calls = tenant.run()
    app = tenant.app()
    client = app["appId"]
    assert app["displayName"] == "ftops-operator-api-prod1" and app["signInAudience"] == "AzureADMyOrg"
    assert app["identifierUris"] == [f"api://{client}"] and app["api"]["requestedAccessTokenVersion"] == 2
    roles = {r["value"]: r for r in app["appRoles"]}
    assert set(roles) == {"Approver.dev", "Approver.test", "Approver.prod", "Operator", "Reader"}
    assert roles["Approver.prod"]["allowedMemberTypes"] == ["User"] and len({r["id"] for r in roles.values()}) == 5
    [scope] = app["api"]["oauth2PermissionScopes"]
    assert scope["value"] == "user_impersonation" and scope["type"] == "User"
    assert app["api"]["preAuthorizedApplications"] == [{"appId": CLI, "delegatedPermissionIds": [scope["id"]]}]
    assert app["web"]["redirectUris"] == ["https://ftops-app.azurewebsites.net/api/console/signin/callback"]
    [credential] = tenant.state["creds"][client]
    assert (credential["issuer"], credential["subject"], credential["audiences"]) == (
        "https://login.microsoftonline.com/tenant-1/v2.0", IDENTITY, ["api://AzureADTokenExchange"])
    [sp] = tenant.state["sps"].values()
    assert sp["appId"] == client and sp["appRoleAssignmentRequired"] is True
    assert tenant.state["env"] == {"FTOPS_OPERATOR_API_AUDIENCE": client, "OPERATOR_API_SCOPE": f"api://{client}/.default"}
    assert tenant.state["settings"]["ftops-app"] == {"OPERATOR_API_AUDIENCE": client}
    assert not any("secret" in " ".join(c) or "credential reset" in " ".join(c) for c in calls), "no secret, ever"
    assert client in out
    before = tenant.state
    _, calls = tenant.run()
    assert writes(calls) == [] and tenant.state == before
    # and a person is granted a role once
    out, _ = tenant.run("grant", "alice@contoso.example", "Approver.prod")
    [assignment] = tenant.state["assignments"]
    assert assignment["appRoleId"] == roles["Approver.prod"]["id"] and "granted Approver.prod" in out
    out, calls = tenant.run("grant", "alice@contoso.example", "Approver.prod")
    assert writes(calls) == [] and "already holds" in out and len(tenant.state["assignments"]) == 1


def test_a_new_environment_adds_its_approver_role_and_keeps_every_existing_id(tenant: Tenant) -> None:
    tenant.run()
    ids = {r["value"]: r["id"] for r in tenant.app()["appRoles"]}
    tenant.spokes(["dev", "test", "staging", "prod"])
    _, calls = tenant.run()
    after = {r["value"]: r["id"] for r in tenant.app()["appRoles"]}
    assert set(after) - set(ids) == {"Approver.staging"} and all(after[k] == v for k, v in ids.items())
    assert [c[1:4] for c in writes(calls)] == [["rest", "--method", "PATCH"]]


def test_azd_runs_it_after_provisioning_and_before_the_code_with_a_windows_form() -> None:
    """The hook point: what it reads (the identity's object id, the app's URL) are outputs of the provision, and
    what it writes is read by the next provision (infra/main.parameters.json) and, at once, by the function app's
    setting, before `azd up` deploys the code. Both platforms: azd refuses a hook without a form for its own."""
    import yaml  # requirements-dev.txt
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]
    assert hooks["postprovision"]["posix"] == {"shell": "sh", "run": "./infra/scripts/app-registration.sh",
                                               "interactive": False, "continueOnError": False}
    assert hooks["postprovision"]["windows"]["run"] == "./infra/scripts/app-registration.ps1"
    assert hooks["postprovision"]["windows"]["shell"] == "pwsh"
    outputs = set(re.findall(r"^output (\w+) ", (ROOT / "infra" / "main.bicep").read_text(), re.MULTILINE))
    assert {"FTOPS_IDENTITY_PRINCIPAL_ID", "FTOPS_API_URL", "AZURE_TENANT_ID", "AZURE_FUNCTION_APP_NAME"} <= outputs
    parameters = json.loads((ROOT / "infra" / "main.parameters.json").read_text())["parameters"]
    assert parameters["operatorApiAudience"]["value"].startswith("${FTOPS_OPERATOR_API_AUDIENCE")


def test_with_the_switch_off_it_touches_nothing(tenant: Tenant) -> None:
    out, calls = tenant.run(env={"FTOPS_APP_REGISTRATION": "off"})
    assert calls == [] and "skipped" in out and "FTOPS_APP_REGISTRATION=off" in out
    assert not (tenant.tmp / "tenant.json").exists()
    # a grant is a person's explicit request: the switch does not stop it
    tenant.run()
    out, _ = tenant.run("grant", "alice@contoso.example", "Reader", env={"FTOPS_APP_REGISTRATION": "off"})
    assert "granted Reader" in out


def test_the_script_passes_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is needed: apt-get install shellcheck")
    done = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
    assert os.access(SCRIPT, os.X_OK)
