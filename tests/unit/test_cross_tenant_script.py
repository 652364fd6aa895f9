"""infra/scripts/cross-tenant-app.sh, run offline against a fake `az` (tests/unit/fake_az.py) standing for
the spoke's tenant: the app gets the same custom spoke role as the spokes of the home tenant (infra/spoke-role.json,
in the spoke's subscription), never Cognitive Services OpenAI Contributor; the harvest role only where an
environment harvests that spoke's stored completions across tenants; running it again changes nothing. And
`register` in the home tenant creates the app, its federated credential and its hub role once."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "infra" / "scripts" / "cross-tenant-app.sh"
FAKE = Path(__file__).with_name("fake_az.py")
SPOKE_ROLE = json.loads((ROOT / "infra" / "spoke-role.json").read_text())
HARVEST_ROLE = json.loads((ROOT / "infra" / "spoke-harvest-role.json").read_text())
OPENAI_CONTRIBUTOR = "a001fd3d-188f-4b5d-821b-7da978bf7442"
APP = "5f1c0000-0000-4000-8000-0000000000ab"
SUB = "11111111-2222-3333-4444-555555555555"
HUB = "/subscriptions/home-sub/resourceGroups/rg-ftops/providers/Microsoft.CognitiveServices/accounts/oai-hub"
ACCOUNT = f"/subscriptions/{SUB}/resourceGroups/rg-openai-prod-eu/providers/Microsoft.CognitiveServices/accounts/oai-weu"


class SpokeTenant:
    def __init__(self, tmp: Path) -> None:
        self.tmp, self.bin = tmp, tmp / "bin"
        self.bin.mkdir()
        path = self.bin / "az"
        path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" az "$@"\n')
        path.chmod(0o755)
        self.spokes(harvest=None)

    def spokes(self, harvest: dict[str, Any] | None, account: str = "oai-weu") -> None:
        env: dict[str, Any] = {"name": "prod", "requires_approval": True, "targets": [
            {"subscription": SUB, "resource_group": "rg-openai-prod-eu", "account": account, "region": "westeurope",
             "tenant": "spoke-tenant", "credential": {"client_id": APP}, "sku": "Standard", "capacity": 1}]}
        if harvest is not None:
            env["harvest"] = harvest
        (self.tmp / "spokes.json").write_text(json.dumps({"environments": [env]}))

    def run(self, *args: str) -> tuple[str, list[list[str]]]:
        log = self.tmp / "calls.log"
        log.write_text("")
        env = {"PATH": f"{self.bin}:/usr/bin:/bin", "FAKE_AZ_STATE": str(self.tmp / "tenant.json"),
               "FAKE_AZ_LOG": str(log), "SPOKES_FILE": str(self.tmp / "spokes.json"), "AZURE_ENV_NAME": "prod1",
               "AZURE_TENANT_ID": "home-tenant", "FTOPS_IDENTITY_PRINCIPAL_ID": "9d0c0000-0000-4000-8000-00000000cafe",
               "FTOPS_HUB_RESOURCE_ID": HUB}
        done = subprocess.run(["sh", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout, [json.loads(line) for line in log.read_text().splitlines()]

    def grant(self, account: str = ACCOUNT) -> tuple[str, list[list[str]]]:
        return self.run("grant", APP, account)

    @property
    def state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "tenant.json").read_text())

    def held(self) -> dict[str, list[str]]:
        """role name → the scopes where the app's service principal holds it"""
        [sp] = self.state["sps"].values()
        names = {r["name"]: r["roleName"] for r in self.state["role_definitions"]}
        held: dict[str, list[str]] = {}
        for a in self.state["role_assignments"]:
            assert a["principalId"] == sp["id"]
            held.setdefault(names.get(a["roleDefinitionName"], a["roleDefinitionName"]), []).append(a["scope"])
        return held


def writes(calls: list[list[str]]) -> list[list[str]]:
    return [c for c in calls if any(word in ("create", "update", "delete") for word in c)]


@pytest.fixture
def spoke(tmp_path: Path) -> SpokeTenant:
    if shutil.which("jq") is None:
        pytest.fail("jq is needed (the script uses it): apt-get install jq")
    return SpokeTenant(tmp_path)


def test_grant_assigns_the_custom_spoke_role_on_the_account_and_a_rerun_changes_nothing(spoke: SpokeTenant) -> None:
    out, _ = spoke.grant()
    [role] = spoke.state["role_definitions"]
    assert role["roleName"] == f"ftops spoke deployer (prod1, {SUB})" and role["roleType"] == "CustomRole"
    assert role["permissions"] == [{"actions": SPOKE_ROLE["actions"], "notActions": [],
                                    "dataActions": SPOKE_ROLE["dataActions"], "notDataActions": []}]
    assert role["assignableScopes"] == [f"/subscriptions/{SUB}"], "assignable in the spoke's subscription only"
    assert spoke.held() == {role["roleName"]: [ACCOUNT]}, "the role on the account only, and nothing else"
    assert OPENAI_CONTRIBUTOR not in json.dumps(spoke.state) and "spoke-tenant" in out
    before = spoke.state
    _, calls = spoke.grant()
    assert writes(calls) == [] and spoke.state == before


def test_a_second_account_in_the_same_subscription_reuses_the_role(spoke: SpokeTenant) -> None:
    spoke.grant()
    other = ACCOUNT.replace("oai-weu", "oai-neu")
    _, calls = spoke.grant(other)
    assert len(spoke.state["role_definitions"]) == 1
    assert [c[1:3] for c in writes(calls)] == [["role", "assignment"]]
    assert sorted(next(iter(spoke.held().values()))) == sorted([ACCOUNT, other])


def test_a_role_from_an_older_ftops_is_brought_to_the_file_keeping_its_id(spoke: SpokeTenant) -> None:
    spoke.grant()
    state = spoke.state
    [role] = state["role_definitions"]
    role["permissions"][0]["actions"] = ["Microsoft.CognitiveServices/accounts/read"]   # an older, shorter role
    (spoke.tmp / "tenant.json").write_text(json.dumps(state))
    _, calls = spoke.grant()
    assert [c[1:4] for c in writes(calls)] == [["role", "definition", "update"]]
    [after] = spoke.state["role_definitions"]
    assert after["name"] == role["name"]
    assert sorted(after["permissions"][0]["actions"]) == sorted(SPOKE_ROLE["actions"])


@pytest.mark.parametrize(("harvest", "reads_stored_completions"), [
    (None, False),
    ({}, False),                                          # a harvest that stays in its own tenant
    ({"cross_tenant": True}, True),                       # default sources: both
    ({"cross_tenant": True, "sources": ["traffic"]}, False),
    ({"cross_tenant": True, "sources": ["stored_completions"]}, True),
], ids=str)
def test_the_harvest_role_only_where_harvest_reads_this_spokes_stored_completions(
        spoke: SpokeTenant, harvest: dict[str, Any] | None, reads_stored_completions: bool) -> None:
    spoke.spokes(harvest)
    spoke.grant()
    harvester = f"ftops spoke harvester (prod1, {SUB})"
    assert spoke.held()[f"ftops spoke deployer (prod1, {SUB})"] == [ACCOUNT]
    assert (harvester in spoke.held()) is reads_stored_completions
    if reads_stored_completions:
        role = next(r for r in spoke.state["role_definitions"] if r["roleName"] == harvester)
        assert role["permissions"][0]["dataActions"] == HARVEST_ROLE["dataActions"] and spoke.held()[harvester] == [ACCOUNT]
        before = spoke.state
        _, calls = spoke.grant()
        assert writes(calls) == [] and spoke.state == before


def test_an_old_openai_contributor_assignment_is_pointed_out(spoke: SpokeTenant) -> None:
    spoke.grant()
    state = spoke.state
    [sp] = state["sps"].values()
    state["role_assignments"].append({"principalId": sp["id"], "roleDefinitionName": OPENAI_CONTRIBUTOR,
                                      "scope": ACCOUNT})
    (spoke.tmp / "tenant.json").write_text(json.dumps(state))
    out, calls = spoke.grant()
    assert writes(calls) == [] and f"az role assignment delete --assignee {sp['id']} --role {OPENAI_CONTRIBUTOR}" in out


def test_register_in_the_home_tenant_creates_each_thing_once(spoke: SpokeTenant) -> None:
    out, _ = spoke.run("register")
    [app] = spoke.state["apps"].values()
    assert app["displayName"] == "ftops-cross-tenant-prod1" and app["signInAudience"] == "AzureADMultipleOrgs"
    [credential] = spoke.state["creds"][app["appId"]]
    assert credential["issuer"] == "https://login.microsoftonline.com/home-tenant/v2.0"
    assert spoke.held() == {OPENAI_CONTRIBUTOR: [HUB]} and app["appId"] in out
    before = spoke.state
    _, calls = spoke.run("register")
    assert writes(calls) == [] and spoke.state == before
