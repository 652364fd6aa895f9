"""The infrastructure and the code agree on queues and roles, and the Bicep holds together.

Every queue and topic the code names exists with the properties the handlers rely on; every role the docs
name is assigned and no broad role is assigned anywhere; azure.yaml deploys this app; and what a Bicep
compiler would catch (there is none here). Settings: test_infra_settings.py.
"""
from __future__ import annotations

import json
import re
from typing import Any

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
from script_structure import describe

from local.devhost.host import HostOptions
from shared.azure.bus import MIN_DUPLICATE_DETECTION_WINDOW, SERVICE_BUS_QUEUE_CONTRACT
from shared.run.config import Settings
from shared.run.topology import parse_topology

BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68": "Cognitive Services Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}
SERVICE_BUS_DATA_OWNER = "090c5cfd-751d-490a-894a-3ce6f1109419"   # only on the trigger queues (scale controller)
OPENAI_CONTRIBUTOR = "a001fd3d-188f-4b5d-821b-7da978bf7442"       # only on the hub
SPOKE_ROLE = INFRA / "spoke-role.json"
SPOKE_HARVEST_ROLE = INFRA / "spoke-harvest-role.json"
# Learn, built-in roles "Cognitive Services OpenAI User" (NotDataActions) and "stored completions" (Troubleshooting):
# list stored completions, get one, get its messages. Never `…/stored-completions/action` (ftops changes none).
STORED_COMPLETIONS_READ = "Microsoft.CognitiveServices/accounts/OpenAI/stored-completions/read"
# What the spoke role must never allow (Cognitive Services OpenAI Contributor allows the first ones through
# Microsoft.CognitiveServices/accounts/*: content filters, billing commitments; the rest change the account).
NEVER_ON_A_SPOKE = ("raiPolicies", "raiBlocklists", "commitmentPlans", "accounts/write", "accounts/delete",
                    "listKeys", "regenerateKey", "privateEndpointConnections", "networkSecurityPerimeter", "*")


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
    # ftops never reads `operators`: unread events must expire and be dropped, or the subscription fills the
    # topic's quota and publishing every event fails
    assert iso_duration_minutes(operators["properties"]["defaultMessageTimeToLive"]) <= 7 * 1440
    assert operators["properties"]["deadLetteringOnMessageExpiration"] is False

    # The names the Bicep creates are the names the app is told, and the code's defaults.
    main_vars = variables(MAIN)
    created = set(main_vars["queues"].values())
    defaults = Settings.from_env(azure_env())
    told = app_settings()
    for setting, field in [("TRAIN_QUEUE", "train_queue"), ("EVALUATE_QUEUE", "evaluate_queue"),
                           ("DEPLOY_QUEUE", "deploy_queue"), ("COMMANDS_QUEUE", "commands_queue"),
                           ("POLL_QUEUE", "poll_queue")]:
        assert told[setting] in created, f"{setting}={told[setting]!r} is not a queue infra/main.bicep creates"
        assert getattr(defaults, field) == told[setting]
    assert told["EVENTS_TOPIC"] == main_vars["eventsTopic"] == defaults.events_topic
    messaging_params = parsed(MAIN)["modules"]["messaging"]["config"]["params"]
    assert messaging_params["eventsTopic"] == "eventsTopic"
    assert len(created) == 5


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


def role_assignments(path) -> dict[str, dict]:
    return {name: resource_body(res) for name, res in resources(path).items()
            if res["type"] == "Microsoft.Authorization/roleAssignments"}


def test_service_bus_data_owner_only_on_each_trigger_queue():
    """The Manage right (Data Owner) lets the Flex scale controller read queue lengths; it is granted per queue
    the app triggers on, never on the namespace (where it could also change every entity and the topic)."""
    messaging = INFRA / "modules" / "messaging.bicep"
    for path in [*bicep_files(), *sorted((INFRA / "scripts").glob("*"))]:
        if path != messaging:
            assert SERVICE_BUS_DATA_OWNER not in path.read_text(), f"{path.relative_to(ROOT)} assigns Data Owner"
    owner_key = next(k for k, v in variables(messaging)["roles"].items() if v == SERVICE_BUS_DATA_OWNER)
    owners = [body for body in role_assignments(messaging).values()
              if owner_key in str(body["properties"]["roleDefinitionId"])]
    assert len(owners) == 1, owners
    assert owners[0]["scope"]["operator"]["operands"]["operand_1"] == "stageQueues", "scoped to each stage queue"
    triggers = {b["queueName"] for b in (b for bs in functions().values() for b in bs) if b["type"] == "serviceBusTrigger"}
    assert triggers == {f"%{k}%" for k in ("TRAIN_QUEUE", "EVALUATE_QUEUE", "DEPLOY_QUEUE", "COMMANDS_QUEUE",
                                           "POLL_QUEUE")}, \
        "every queue a trigger reads is one of the stage queues the Data Owner loop covers"


def granted(role_file) -> list[str]:
    role = json.loads(role_file.read_text())
    return [*role["actions"], *role["dataActions"]]


def test_the_spoke_role_is_exactly_what_ftops_does_there_each_action_documented():
    everything = [*granted(SPOKE_ROLE), *granted(SPOKE_HARVEST_ROLE)]
    assert granted(SPOKE_ROLE) and all(a.startswith("Microsoft.CognitiveServices/accounts") for a in everything)
    for action in everything:
        assert not any(bad in action for bad in NEVER_ON_A_SPOKE), f"a spoke role allows {action}"
    # every action is a row of docs/deploy.md's spoke-role table with the code that needs it (a file that exists)
    rows = {}
    for line in DEPLOY_DOC.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].startswith("Microsoft.CognitiveServices/"):
            rows[cells[0]] = cells[1]
    assert sorted(rows) == sorted(everything), \
        "docs/deploy.md's spoke-role table and infra/spoke-role.json + infra/spoke-harvest-role.json differ"
    for action, why in rows.items():
        paths = re.findall(r"`?((?:shared|functions)/[\w/]+\.py)", why)
        assert paths and all((ROOT / p).is_file() for p in paths), f"{action}: no code named that needs it: {why!r}"
    # the Bicep defines the role from this file and assigns it on the spokes; the hub keeps OpenAI Contributor
    main = MAIN.read_text()
    assert "loadJsonContent('spoke-role.json')" in main
    spokes = resource_body(parsed(MAIN)["modules"]["spokeAccess"])["params"]
    assert spokes["roleGuid"] == {"operator": {"type": "property_accessor",
                                               "operands": {"operand_1": "spokeRoleDefinition", "operand_2": "name"}}}
    assert resource_body(parsed(MAIN)["modules"]["hubAccess"])["params"]["roleGuid"] == OPENAI_CONTRIBUTOR
    assert OPENAI_CONTRIBUTOR not in (INFRA / "modules" / "spokes.bicep").read_text()


def evaluate(expr: Any, scope: dict[str, Any]) -> Any:
    """The few Bicep expression forms of main.bicep's harvest condition, as ARM evaluates them (only the branch a
    `?:` takes): pycep's JSON for `?:`, `contains`, `empty`, `a.b(.c)`, `a.b == null`; a str naming a bound
    variable is its value."""
    if isinstance(expr, str):
        return scope.get(expr, expr)
    if not isinstance(expr, dict):
        return expr
    if "function" in expr:
        fn, args = expr["function"]["type"], expr["function"]["parameters"]
        if fn == "contains":
            return evaluate(args["item_to_find"], scope) in evaluate(args["container"], scope)
        if fn == "empty":
            return not evaluate(args["item_to_test"], scope)
        raise AssertionError(f"the test does not know Bicep's {fn}()")
    op, operands = expr["operator"]["type"], expr["operator"]["operands"]
    if op == "conditional":
        branch = "true_value" if evaluate(operands["condition"], scope) else "false_value"
        return evaluate(operands[branch], scope)
    if op == "property_accessor":
        base, prop = evaluate(operands["operand_1"], scope), operands["operand_2"]
        while isinstance(prop, dict):   # pycep nests `a.b.c` as a.(b.c), and `a.b == x` as a.(b == x)
            inner, kind = prop["operator"]["operands"], prop["operator"]["type"]
            if kind == "equals":
                return base[inner["operand_1"]] == evaluate(inner["operand_2"], scope)
            base, prop = base[inner["operand_1"]], inner["operand_2"]
        return base[prop]
    raise AssertionError(f"the test does not know Bicep's {op}")


@pytest.mark.parametrize("harvest", ["absent", None, {}, {"sources": ["traffic"]}, {"sources": ["stored_completions"]},
                                     {"sources": ["traffic", "stored_completions"], "metadata": {"app": "x"}},
                                     {"max_exchanges": 50}], ids=str)
def test_the_harvest_role_is_assigned_exactly_where_the_harvest_reads_stored_completions(harvest):
    """main.bicep decides per environment from the same spokes file the app reads; the decision must be the app's
    own (shared/run/topology.py: a harvest policy whose sources, by default both, include stored_completions)."""
    assert granted(SPOKE_HARVEST_ROLE) == [STORED_COMPLETIONS_READ]
    assert STORED_COMPLETIONS_READ not in granted(SPOKE_ROLE), "only where harvest is on"
    env = {"name": "prod", "requires_approval": True, "allow_single_region": True, "targets": [
        {"subscription": "s", "resource_group": "rg", "account": "a", "region": "eastus", "tenant": "t",
         "sku": "Standard", "capacity": 1}]}
    if harvest != "absent":
        env["harvest"] = harvest
    [parsed_env] = parse_topology({"environments": [env]}).environments
    app_reads_them = parsed_env.harvest is not None and "stored_completions" in parsed_env.harvest.sources
    per_env = variables(MAIN)["harvestsStoredCompletions"]
    assert per_env["loop_type"]["detail"] == {"item_name": "env", "array_name": "spokeEnvironments"}
    assert evaluate(per_env["config"], {"env": env}) is app_reads_them
    # that flag picks the harvest role for the environment's spoke module, which assigns it on each of its targets
    params = resource_body(parsed(MAIN)["modules"]["spokeAccess"])["params"]
    assert params["harvestRoleGuid"]["operator"]["operands"] == {
        "condition": {"operator": {"type": "index_accessor",
                                   "operands": {"operand_1": "harvestsStoredCompletions", "operand_2": "i"}}},
        "true_value": "spokeHarvestRoleGuid", "false_value": ""}
    harvest_loop = parsed(INFRA / "modules" / "spokes.bicep")["modules"]["harvest"]["config"]
    assert "harvestRoleGuid" in json.dumps(harvest_loop["loop_type"]) and "targets" in json.dumps(harvest_loop["loop_type"])
    assert resource_body(parsed(INFRA / "modules" / "spokes.bicep")["modules"]["harvest"])["params"]["roleGuid"] == \
        "harvestRoleGuid"
    assert "loadJsonContent('spoke-harvest-role.json')" in MAIN.read_text()


def test_every_role_assignment_is_for_a_service_principal_on_a_named_resource():
    for path in bicep_files():
        for name, res in resources(path).items():
            if res["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            body = resource_body(res)
            assert body.get("scope"), f"{path.name}: {name} has no scope: it would apply to the whole group"
            assert body["properties"]["principalType"] == "ServicePrincipal", f"{path.name}: {name}"
            principal = body["properties"]["principalId"]
            if path.name == "eventgrid.bicep":   # Event Grid's own identity, writing dead letters
                assert "topic" in str(principal) and "identity" in str(principal), f"{path.name}: {name}"
                assert body["scope"] == "deadLetters", f"{path.name}: {name} must be scoped to the dead-letter container"
                continue
            assert principal == "principalId", f"{path.name}: {name} is for someone else"


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
        posix, windows = ROOT / hook["posix"]["run"], ROOT / hook["windows"]["run"]
        assert posix.is_file() and posix.stat().st_mode & 0o111, f"{posix} must exist and be executable"
        assert windows.is_file(), f"{windows} must exist"
        needed = set(re.findall(r"\$\{(AZURE_[A-Z_]+|FTOPS_[A-Z_]+)", posix.read_text()))
        assert needed <= outputs | set(AZD_ENV_BY_HAND), f"{posix.name} reads {sorted(needed - outputs - set(AZD_ENV_BY_HAND))}"
    for key, where in AZD_ENV_BY_HAND.items():
        assert f"`{key}`" in DEPLOY_DOC.read_text(), f"docs/deploy.md must say what {key} ({where}) does"
    intake = re.search(r"output FTOPS_INTAKE_FUNCTION string = '([^']+)'", MAIN.read_text()).group(1)
    assert any(b["type"] == "blobTrigger" for b in functions()[intake]), "the Event Grid webhook's function"
    ignored = (ROOT / ".funcignore").read_text().split()
    assert {"infra/", "azure.yaml", "local/", "tests/"} <= set(ignored), "only the app is packaged"


# azd environment values a hook reads that no Bicep output sets: azd's own, and switches a person sets
AZD_ENV_BY_HAND = {"AZURE_ENV_NAME": "azd itself", "FTOPS_APP_REGISTRATION": "app-registration.sh"}


def twins() -> list[tuple[object, object]]:
    return [(ps1.with_suffix(".sh"), ps1) for ps1 in sorted((INFRA / "scripts").glob("*.ps1"))]


@pytest.mark.parametrize("posix,windows", twins(), ids=lambda p: p.name)
def test_each_powershell_hook_makes_the_calls_of_its_posix_twin(posix, windows):
    """The Windows form cannot run here (no PowerShell): parsed by tree-sitter's grammars, both forms make the same
    az/azd calls (subcommands, flags, values; JSON bodies by presence only) and use the same azd names, in order."""
    assert posix.is_file(), f"{windows.name} has no POSIX twin"
    assert describe(windows) == describe(posix)


def test_the_twin_comparison_sees_a_difference(tmp_path):
    """A PowerShell form that drifts (a flag dropped, another value, an azd output forgotten) is caught."""
    posix, windows = next((p, w) for p, w in twins() if p.name == "postdeploy.sh")
    text = windows.read_text()
    for drift in (text.replace("--max-delivery-attempts 30", "--max-delivery-attempts 3"),
                  text.replace("--event-ttl 1440 `\n", ""),
                  text.replace("'FTOPS_DEADLETTER_CONTAINER'", "'FTOPS_DEADLETTER'")):
        assert drift != text
        (tmp_path / windows.name).write_text(drift)
        assert describe(tmp_path / windows.name) != describe(posix)


def hook_schema_problems(hook: dict) -> list[str]:
    """What azd's azure.yaml schema (Azure/azure-dev schemas/v1.0/azure.yaml.json, definitions.hook) refuses
    in one hook, and that a hook has a form for each platform azd runs on (posix and windows)."""
    allowed = {"shell", "kind", "dir", "run", "continueOnError", "interactive", "windows", "posix", "secrets", "config"}
    problems = [f"unknown key {k!r}" for k in hook if k not in allowed]
    if "windows" in hook and "posix" in hook:   # then the hook itself may say nothing else
        problems += [f"{k!r} beside windows and posix" for k in hook if k not in {"windows", "posix"}]
    for platform in ("posix", "windows"):
        form = hook.get(platform)
        if not isinstance(form, dict):
            problems.append(f"no {platform} form")
            continue
        problems += [f"{platform}: unknown key {k!r}" for k in form if k not in allowed - {"windows", "posix"}]
        if not form.get("run"):
            problems.append(f"{platform}: no run")
        shell, run = form.get("shell"), str(form.get("run", ""))
        if shell not in {"sh", "pwsh"}:
            problems.append(f"{platform}: shell must be sh or pwsh, not {shell!r}")
        elif run.endswith(".sh") != (shell == "sh") or run.endswith(".ps1") != (shell == "pwsh"):
            problems.append(f"{platform}: shell {shell} does not run {run}")
        if platform == "windows" and shell != "pwsh":
            problems.append("windows: only pwsh is sure to exist on Windows")
    return problems


def test_every_azd_hook_has_a_posix_and_a_windows_form_the_schema_accepts():
    import yaml  # requirements-dev.txt
    hooks = yaml.safe_load((ROOT / "azure.yaml").read_text())["hooks"]
    assert {"preprovision", "postprovision", "postdeploy"} <= set(hooks)
    problems = {name: hook_schema_problems(hook) for name, hook in hooks.items()}
    assert all(not p for p in problems.values()), problems
    # the check itself refuses what azd refuses: a posix-only hook, run beside the platform forms
    assert hook_schema_problems({"posix": {"shell": "sh", "run": "./x.sh"}}) == ["no windows form"]
    assert hook_schema_problems({"run": "./x.sh", "posix": {"shell": "sh", "run": "./x.sh"},
                                 "windows": {"shell": "pwsh", "run": "./x.ps1"}}) == ["'run' beside windows and posix"]


# --- deployment names and the spokes' loop -------------------------------------------------------------

def module_name_text(module: dict) -> str:
    return json.dumps(resource_body(module)["name"])


def test_every_deployment_outside_the_apps_own_resource_group_has_a_name_unique_to_this_environment():
    """Subscription-scope deployment names are per subscription (and keep the region of their first run: a second
    ftops environment in another region failed with InvalidDeploymentLocation); the hub's and the spokes' resource
    groups may be shared by several ftops environments. Only deployments into rg-ftops-<env> may use plain names."""
    for path in bicep_files():
        for name, module in parsed(path).get("modules", {}).items():
            if resource_body(module).get("scope") == "rg":
                continue
            assert "deploymentSuffix" in module_name_text(module), \
                f"{path.relative_to(ROOT)}: module {name} has a fixed deployment name: {module_name_text(module)}"
    assert re.search(r"var deploymentSuffix = token\b", MAIN.read_text())
    token = variables(MAIN)["token"]
    assert {"environmentName", "location"} <= set(re.findall(r"\w+", json.dumps(token))), "token must vary with both"


def test_cross_tenant_spokes_are_filtered_out_before_any_module_is_declared_for_them():
    spokes_module = parsed(INFRA / "modules" / "spokes.bicep")["modules"]["access"]["config"]
    assert spokes_module.get("condition") is None, "a conditional module still has a (skipped) foreign scope"
    targets = resource_body(parsed(MAIN)["modules"]["spokeAccess"])["params"]["targets"]
    assert targets["function"]["type"] == "filter"
    assert "tenantId" in json.dumps(targets["function"]["parameters"]["expression"])
    assert "'tenantId'" not in (INFRA / "modules" / "spokes.bicep").read_text()


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
