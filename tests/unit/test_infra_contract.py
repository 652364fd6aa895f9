"""The infrastructure and the code agree on queues and roles, and the Bicep holds together.

Every queue and topic the code names exists with the properties the handlers rely on; every role the docs
name is assigned and no broad role is assigned anywhere; azure.yaml deploys this app; and what a Bicep
compiler would catch (there is none here). Settings: test_infra_settings.py.
"""
from __future__ import annotations

import re

import pytest
from infra_bicep import (
    DEPLOY_DOC,
    GUID,
    INFRA,
    MAIN,
    ROOT,
    app_settings,
    azure_env,
    bicep_files,
    functions,
    iso_duration_minutes,
    parsed,
    resource_body,
    resources,
    variables,
)

from local.devhost.host import HostOptions
from shared.azure.bus import MIN_DUPLICATE_DETECTION_WINDOW, SERVICE_BUS_QUEUE_CONTRACT
from shared.run.config import Settings

BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68": "Cognitive Services Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}


# --- parsing and pinning ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", bicep_files(), ids=lambda p: str(p.relative_to(INFRA)))
def test_every_bicep_file_parses(path):
    assert parsed(path) is not None


def test_every_resource_pins_its_api_version_and_every_module_is_ours():
    for path in bicep_files():
        for name, res in resources(path).items():
            assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", res.get("api_version") or ""), \
                f"{path.relative_to(ROOT)}: resource {name} has no pinned API version"
        for name in parsed(path).get("modules", {}):
            text = path.read_text()
            src = re.search(rf"module\s+{name}\s+'([^']+)'", text).group(1)
            assert not src.startswith(("br:", "br/", "ts:", "ts/")), \
                f"{path.relative_to(ROOT)}: module {name} comes from a registry ({src}); checkov cannot see into it"
            assert (path.parent / src).is_file(), f"{path.relative_to(ROOT)}: module {name} → missing {src}"


# --- queues and topic ---------------------------------------------------------------------------------

def test_every_queue_and_topic_the_code_names_exists_with_the_properties_it_relies_on():
    messaging = INFRA / "modules" / "messaging.bicep"
    res = resources(messaging)
    queue_props = resource_body(res["stageQueues"])["properties"]
    for key, expected in SERVICE_BUS_QUEUE_CONTRACT.items():
        assert queue_props.get(key) == expected, f"the stage queues' {key} must be {expected!r} (shared/azure/bus.py)"
    window = iso_duration_minutes(queue_props["duplicateDetectionHistoryTimeWindow"])
    assert window >= MIN_DUPLICATE_DETECTION_WINDOW.total_seconds() / 60
    topic = resource_body(res["topic"])["properties"]
    assert topic["requiresDuplicateDetection"] is True
    assert resource_body(res["namespace"])["properties"]["disableLocalAuth"] is True
    assert resource_body(res["namespace"])["sku"]["name"] == "Standard"
    operators = resource_body(res["operators"])
    assert operators["parent"] == "topic" and operators["properties"]["requiresSession"] is False

    # The names the Bicep creates are the names the app is told, and the code's defaults.
    main_vars = variables(MAIN)
    created = set(main_vars["queues"].values())
    defaults = Settings.from_env(azure_env())
    told = app_settings()
    for setting, field in [("TRAIN_QUEUE", "train_queue"), ("EVALUATE_QUEUE", "evaluate_queue"),
                           ("DEPLOY_QUEUE", "deploy_queue"), ("COMMANDS_QUEUE", "commands_queue")]:
        assert told[setting] in created, f"{setting}={told[setting]!r} is not a queue infra/main.bicep creates"
        assert getattr(defaults, field) == told[setting]
    assert told["EVENTS_TOPIC"] == main_vars["eventsTopic"] == defaults.events_topic
    messaging_params = parsed(MAIN)["modules"]["messaging"]["config"]["params"]
    assert messaging_params["eventsTopic"] == "eventsTopic"
    assert len(created) == 4


def test_the_dev_host_imitates_the_same_delivery_count():
    assert HostOptions().max_delivery_count == SERVICE_BUS_QUEUE_CONTRACT["maxDeliveryCount"]
    assert HostOptions.from_env({}).max_delivery_count == SERVICE_BUS_QUEUE_CONTRACT["maxDeliveryCount"]


# --- roles --------------------------------------------------------------------------------------------

def documented_roles() -> dict[str, str]:
    """GUID → role name from the roles table of docs/deploy.md (rows `| role | `guid` | ...`)."""
    roles = {}
    for line in DEPLOY_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and GUID.fullmatch(cells[1].strip("`")):
            roles[cells[1].strip("`")] = cells[0]
    return roles


# GUIDs in the scripts that are not roles
NOT_ROLES = {"04b07795-8ddb-461a-bbee-02f9e1bf7b46": "the Azure CLI's client id, pre-authorised by app-registration.sh"}


def assigned_roles() -> set[str]:
    """Role GUIDs the Bicep modules and the scripts assign."""
    found: set[str] = set()
    for path in [*bicep_files(), *sorted((INFRA / "scripts").glob("*.sh"))]:
        found |= set(GUID.findall(path.read_text()))
    return found - set(NOT_ROLES)


def test_every_role_the_docs_name_is_assigned_and_every_assigned_role_is_documented():
    documented, assigned = documented_roles(), assigned_roles()
    assert len(documented) >= 7, "docs/deploy.md's roles table is missing or unreadable"
    assert sorted(set(documented) - assigned) == [], "roles documented but never assigned"
    assert sorted(assigned - set(documented)) == [], "roles assigned but not in docs/deploy.md's roles table"


def test_no_broad_role_anywhere():
    for path in [*bicep_files(), *sorted((INFRA / "scripts").glob("*")), DEPLOY_DOC]:
        text = path.read_text()
        for guid, name in BROAD_ROLES.items():
            if path == DEPLOY_DOC:   # the docs may say what is *not* used, never list it as a role
                assert guid not in documented_roles(), f"docs/deploy.md lists {name} as a role"
            else:
                assert guid not in text, f"{path.relative_to(ROOT)} assigns {name}"
    for name in documented_roles().values():
        assert name.strip("* ") not in {"Owner", "Contributor"}


def test_every_role_assignment_is_for_a_service_principal_on_a_named_resource():
    for path in bicep_files():
        for name, res in resources(path).items():
            if res["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            body = resource_body(res)
            assert body.get("scope"), f"{path.name}: {name} has no scope: it would apply to the whole group"
            assert body["properties"]["principalType"] == "ServicePrincipal", f"{path.name}: {name}"
            assert body["properties"]["principalId"] == "principalId", f"{path.name}: {name} is for someone else"


# --- azd ----------------------------------------------------------------------------------------------

def test_azure_yaml_deploys_this_app_and_its_hooks_get_what_they_read():
    import yaml  # requirements-dev.txt
    azd = yaml.safe_load((ROOT / "azure.yaml").read_text())
    assert azd["infra"] == {"provider": "bicep", "path": "infra", "module": "main"}
    [(service, spec)] = azd["services"].items()
    assert spec["host"] == "function" and spec["language"] == "python" and spec["project"] == "."
    app_bicep = (INFRA / "modules" / "app.bicep").read_text()
    assert f"'azd-service-name': '{service}'" in app_bicep, "azd finds the app by this tag"
    outputs = set(parsed(MAIN)["outputs"])
    for hook in azd["hooks"].values():
        script = ROOT / hook["posix"]["run"]
        assert script.is_file() and script.stat().st_mode & 0o111, f"{script} must exist and be executable"
        needed = set(re.findall(r"\$\{(AZURE_[A-Z_]+|FTOPS_[A-Z_]+)", script.read_text()))
        assert needed <= outputs | {"AZURE_ENV_NAME"}, f"{script.name} reads {sorted(needed - outputs)}"
    intake = re.search(r"output FTOPS_INTAKE_FUNCTION string = '([^']+)'", MAIN.read_text()).group(1)
    assert any(b["type"] == "blobTrigger" for b in functions()[intake]), "the Event Grid webhook's function"
    ignored = (ROOT / ".funcignore").read_text().split()
    assert {"infra/", "azure.yaml", "local/", "tests/"} <= set(ignored), "only the app is packaged"


# --- what a Bicep compiler would catch (none here) ----------------------------------------------------

def test_every_module_gets_its_required_parameters_and_only_declared_ones():
    for path in bicep_files():
        for name, module in parsed(path).get("modules", {}).items():
            target = (path.parent / module["detail"]["path"]).resolve()
            declared = parsed(target).get("parameters", {})
            required = {p for p, spec in declared.items() if "default" not in spec or spec["default"] is None}
            passed = set(resource_body(module)["params"])
            where = f"{path.relative_to(ROOT)}: module {name}"
            assert sorted(required - passed) == [], f"{where} misses parameters"
            assert sorted(passed - set(declared)) == [], f"{where} passes parameters {target.name} does not declare"


def test_every_module_output_used_is_declared():
    for path in bicep_files():
        text = path.read_text()
        for name, module in parsed(path).get("modules", {}).items():
            declared = set(parsed((path.parent / module["detail"]["path"]).resolve()).get("outputs", {}))
            used = set(re.findall(rf"\b{name}(?:\[\w+\])?\.outputs\.(\w+)", text))
            assert sorted(used - declared) == [], f"{path.relative_to(ROOT)} uses undeclared outputs of {name}"
