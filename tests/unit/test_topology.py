"""The spokes configuration is checked at start-up; each error names the setting at fault."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest
from fakes import make_deps

from local.settings import DEMO_SPOKES
from shared.run.config import ConfigError, HubSettings, Settings
from shared.run.topology import load_topology, parse_topology, target_problem
from shared.stages.approvals import gated_environment
from shared.store.registry import RunRecord

DEMO: dict[str, Any] = json.loads(DEMO_SPOKES.read_text())
HUB_TENANT = "tenant-contoso"


def demo() -> dict[str, Any]:
    return copy.deepcopy(DEMO)


def error_of(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(data, hub_tenant=HUB_TENANT)
    return str(info.value)


def test_demo_configuration_loads_in_order_with_prod_gated() -> None:
    topology = parse_topology(demo(), hub_tenant=HUB_TENANT)
    assert topology.names == ["dev", "test", "prod"]
    prod = topology.environment("prod")
    assert prod is not None and prod.requires_approval and prod.approvers == (
        "6f1c2d3e-0000-4000-8000-0000000000a1", "6f1c2d3e-0000-4000-8000-0000000000c3")
    assert prod.regions == ["eastus", "westeurope"]
    fabrikam = topology.target("ftops-prod-westeurope")
    assert fabrikam is not None and fabrikam.tenant == "tenant-fabrikam"
    assert fabrikam.client_id == "11111111-2222-3333-4444-555555555555"
    assert fabrikam.quota == 10 and fabrikam.sku == "GlobalStandard"   # no quota given: Azure's default since 2026-02


def test_missing_field_names_the_setting_path() -> None:
    data = demo()
    del data["environments"][2]["targets"][0]["region"]
    assert error_of(data) == "SPOKES_CONFIG: environments[2].targets[0].region is missing"


def test_unknown_key_is_an_error_naming_it() -> None:
    data = demo()
    data["environments"][1]["targets"][1]["regoin"] = "eastus"
    message = error_of(data)
    assert "environments[1].targets[1].regoin is not a known setting" in message


def test_unknown_environment_key() -> None:
    data = demo()
    data["environments"][0]["require_approval"] = True
    assert "environments[0].require_approval is not a known setting" in error_of(data)


def test_single_region_environment_is_an_error_unless_allowed() -> None:
    data = demo()
    data["environments"][0]["targets"][1]["region"] = "eastus"
    message = error_of(data)
    assert "environments[0]" in message and "one region" in message and "allow_single_region" in message
    data["environments"][0]["allow_single_region"] = True
    assert parse_topology(data, hub_tenant=HUB_TENANT).environment("dev") is not None


def test_prod_requires_approval_by_default_and_approvers_only_narrow_the_role_by_object_id() -> None:
    data = demo()
    del data["environments"][2]["requires_approval"]
    assert parse_topology(data, hub_tenant=HUB_TENANT).environment("prod").requires_approval  # type: ignore[union-attr]
    prod = parse_topology(data, hub_tenant=HUB_TENANT).environment("prod")
    assert prod is not None and prod.allows_approver("6F1C2D3E-0000-4000-8000-0000000000A1")
    assert not prod.allows_approver("6f1c2d3e-0000-4000-8000-0000000000d4")
    del data["environments"][2]["approvers"]
    unnarrowed = parse_topology(data, hub_tenant=HUB_TENANT).environment("prod")
    assert unnarrowed is not None and unnarrowed.allows_approver("6f1c2d3e-0000-4000-8000-0000000000d4")
    data["environments"][2]["approvers"] = ["ops@contoso.example"]   # a look-alike address is not an identity
    assert "environments[2].approvers[0] 'ops@contoso.example' is not an Entra object id" in error_of(data)


def test_other_environments_do_not_require_approval_by_default() -> None:
    data = demo()
    del data["environments"][1]["requires_approval"]
    assert not parse_topology(data, hub_tenant=HUB_TENANT).environment("test").requires_approval  # type: ignore[union-attr]


def test_cross_tenant_target_needs_a_credential() -> None:
    data = demo()
    del data["environments"][2]["targets"][1]["credential"]
    message = error_of(data)
    assert "environments[2].targets[1].credential is missing" in message and "tenant-fabrikam" in message


def test_credential_must_name_client_id() -> None:
    data = demo()
    data["environments"][2]["targets"][1]["credential"] = {"clientid": "x"}
    assert "environments[2].targets[1].credential.clientid is not a known setting" in error_of(data)


def test_an_account_can_serve_only_one_slot() -> None:
    data = demo()
    data["environments"][1]["targets"][0]["account"] = "ftops-dev-eastus"
    message = error_of(data)
    assert "environments[1].targets[0].account 'ftops-dev-eastus' is already used by environments[0].targets[0]" \
        in message


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("capacity", 0, "capacity must be a whole number"),
    ("capacity", "1", "capacity must be a whole number"),
    ("sku", "Premium", "sku 'Premium' is not one of"),
    ("quota", -1, "quota must be a whole number"),
    ("tenant", "", "tenant must be a non-empty string"),
])
def test_bad_values_are_named(key: str, value: Any, expected: str) -> None:
    data = demo()
    data["environments"][0]["targets"][0][key] = value
    message = error_of(data)
    assert f"environments[0].targets[0].{key}" in message and expected in message


def test_duplicate_environment_and_empty_lists() -> None:
    data = demo()
    data["environments"][1]["name"] = "dev"
    assert "environments[1].name 'dev' is used twice" in error_of(data)
    assert "environments must be a non-empty list" in error_of({"environments": []})
    assert "environments[0].targets is missing" in error_of({"environments": [{"name": "dev"}]})


def test_the_topology_is_read_once_into_deps_and_handlers_use_that() -> None:
    settings = Settings(storage_connection="UseDevelopmentStorage=true", blob_service_uri=None,
                        queue_service_uri=None, table_service_uri=None, transport="local",
                        servicebus_namespace=None,
                        hub=HubSettings(endpoint="https://hub", resource_id="/subscriptions/s/resourceGroups/r"
                                        "/providers/Microsoft.CognitiveServices/accounts/hub",
                                        tenant=HUB_TENANT),
                        spokes_config=json.dumps(demo()))
    deps = make_deps(settings)
    broken = replace(settings, spokes_config="{\"environments\": 3}")
    with pytest.raises(ConfigError, match="SPOKES_CONFIG: environments must be a non-empty list"):
        load_topology(broken)   # what the bootstrap does at start-up: the app stops, the setting named
    deps.settings = broken      # a handler never reads the setting again: it uses what was loaded
    run = RunRecord(run_id="r1", source="datasets/r1.jsonl", state="deployed:test")
    assert gated_environment(deps, "prod", run).name == "prod"
    with pytest.raises(ConfigError, match="SPOKES_CONFIG must be set"):
        make_deps(replace(settings, spokes_config=None)).require_topology()


def error_for_model(data: Any, model: str = "gpt-4.1-mini-2025-04-14") -> str:
    with pytest.raises(ConfigError) as info:
        parse_topology(data, hub_tenant=HUB_TENANT, base_model=model)
    return str(info.value)


def test_the_demo_spokes_can_host_the_default_model() -> None:
    parse_topology(demo(), hub_tenant=HUB_TENANT, base_model="gpt-4.1-mini-2025-04-14")


def test_a_standard_spoke_outside_the_models_regions_is_named_at_start_up() -> None:
    """Learn lists the Standard regions per model: gpt-4.1-mini fine-tunes deploy as Standard only in
    North Central US and Sweden Central; Global Standard goes anywhere."""
    data = demo()
    data["environments"][0]["targets"][0]["sku"] = "Standard"   # ftops-dev-eastus
    message = error_for_model(data)
    assert message.startswith("SPOKES_CONFIG: environments[0].targets[0] (spoke 'ftops-dev-eastus')")
    assert "cannot be deployed as Standard in eastus" in message and "northcentralus, swedencentral" in message
    assert "GlobalStandard" in message   # what would work there
    # gpt-4o's Standard regions differ: East US 2 is one of them
    target = parse_topology(data, hub_tenant=HUB_TENANT).target("ftops-test-eastus2")
    assert target is not None and target_problem(replace(target, sku="Standard"), "gpt-4o-2024-08-06") is None
    assert "in eastus2" in (target_problem(replace(target, sku="Standard"), "gpt-4.1-mini") or "")


def test_only_the_fine_tuned_deployment_types_are_accepted() -> None:
    data = demo()
    data["environments"][1]["targets"][0]["sku"] = "DataZoneStandard"
    assert "sku 'DataZoneStandard' is not one of" in error_of(data)
    data["environments"][1]["targets"][0]["sku"] = "ProvisionedManaged"   # eastus2: gpt-4.1-mini has no PTU row
    assert "cannot be deployed as ProvisionedManaged" in error_for_model(data)


def test_a_developer_spoke_needs_the_environment_to_accept_its_24_hour_life() -> None:
    data = demo()
    data["environments"][0]["targets"][1]["sku"] = "DeveloperTier"
    message = error_of(data)
    assert "environments[0].targets[1] (spoke 'ftops-dev-swedencentral') is a Developer deployment" in message
    assert "environments[0].accepts_developer_expiry" in message
    data["environments"][0]["accepts_developer_expiry"] = True
    topology = parse_topology(data, hub_tenant=HUB_TENANT, base_model="gpt-4.1-mini-2025-04-14")
    assert topology.environment("dev").accepts_developer_expiry
    # Developer exists for the gpt-4.1 family only
    assert "cannot be deployed as DeveloperTier" in error_for_model(data, "gpt-4o-2024-08-06")
