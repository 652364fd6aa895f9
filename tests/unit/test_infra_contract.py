"""The infrastructure and the code agree: settings, queues, roles.

What the code reads in Azure ⊆ what infra/main.bicep sets ⊆ what docs/deploy.md documents; every queue and
topic the code names exists with the properties the handlers rely on; every role the docs name is assigned
and no broad role is assigned anywhere. No Azure here: these stand in for `azd up` failing half-way.
"""
from __future__ import annotations

import functools
import json
import re

import pytest
from infra_bicep import (
    DEPLOY_DOC,
    GUID,
    INFRA,
    MAIN,
    ROOT,
    app_settings,
    bicep_files,
    iso_duration_minutes,
    parsed,
    resource_body,
    resources,
    variables,
)

from local.devhost.host import HostOptions
from shared.bus import MIN_DUPLICATE_DETECTION_WINDOW, SERVICE_BUS_QUEUE_CONTRACT
from shared.config import Settings
from shared.topology import parse_topology

SAMPLE = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
# Read by the code, but only on one machine: in Azure they would be secrets or point at the emulator.
LOCAL_ONLY = {
    "DatasetStorage": "a connection string (with the account key); Azure uses DatasetStorage__*ServiceUri",
    "HUB_API_KEY": "an API key; Azure uses Entra ID tokens",
    "FTOPS_CA_BUNDLE": "the emulator's throw-away CA",
}
# Read by the Functions host or an SDK rather than shared/config.py.
READ_OUTSIDE_CONFIG = {
    "AZURE_CLIENT_ID": "azure-identity (DefaultAzureCredential) and shared/identity.py: which user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "function_app.py and the host: where telemetry goes",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host and the exporter: Entra-only ingestion",
}
# Read straight from the environment elsewhere in the app, and deliberately left unset in Azure.
UNSET_IN_AZURE = {
    "FTOPS_TOKENIZER": "a switch to tiktoken for comparisons; unset means the default tokenizer",
}
HOST_STORAGE_PREFIX = "AzureWebJobsStorage__"   # the host's own storage, identity-based
# Documented as not allowed (or ignored) on Flex Consumption (../shared/AZURE-FACTS.md, Learn).
FORBIDDEN_ON_FLEX = {
    "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_WORKER_RUNTIME_VERSION", "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE", "WEBSITE_CONTENTSHARE", "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "SCM_DO_BUILD_DURING_DEPLOYMENT", "ENABLE_ORYX_BUILD", "WEBSITE_TIME_ZONE", "TZ", "AzureWebJobsStorage",
}
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "090c5cfd-751d-490a-894a-3ce6f1109419": "Azure Service Bus Data Owner",
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68": "Cognitive Services Contributor",
    "17d1049b-9a84-46fb-8f53-869881c3d3ab": "Storage Account Contributor",
}


@functools.cache
def functions() -> dict[str, list[dict]]:
    """function name → its bindings, as the host indexes them."""
    import function_app
    function_app.app.functions_bindings = None   # the worker indexes once per process; others may have already
    return {f.get_function_name(): [json.loads(b) for b in f.get_raw_bindings()]
            for f in function_app.app.get_functions()}


def bindings() -> list[dict]:
    return [b for bs in functions().values() for b in bs]


def azure_env() -> dict[str, str]:
    """The environment the app gets in Azure: the Bicep's literal values, placeholders for the computed ones."""
    env = {}
    for name, value in app_settings().items():
        if value is None:   # computed at deployment (an endpoint, an id): a value of the right shape
            value = SAMPLE.get(name) or "https://placeholder.example/"
        env[name] = str(value)
    env["SPOKES_CONFIG"] = (INFRA / "spokes.json").read_text()
    return env


class Recording(dict):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


def settings_read_by_config() -> set[str]:
    env = Recording(azure_env())
    Settings.from_env(env)
    return env.read


def documented_names() -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", DEPLOY_DOC.read_text()))


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


# --- settings -----------------------------------------------------------------------------------------

def test_every_setting_the_code_reads_in_azure_is_set_by_the_bicep():
    bicep = set(app_settings())
    missing = sorted(settings_read_by_config() - bicep - set(LOCAL_ONLY))
    assert not missing, ("shared/config.py reads " + ", ".join(missing) + " but infra/main.bicep does not set it: "
                         "add it to `appSettings` in infra/main.bicep and to the settings table of docs/deploy.md "
                         "(or, if it is for one machine only, to LOCAL_ONLY here with the reason)")


def test_every_variable_the_app_reads_outside_config_is_set_or_deliberately_unset():
    pattern = re.compile(r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Za-z0-9_]+)["']|os\.environ\[["']([A-Za-z0-9_]+)["']\]""")
    read = {}
    for path in [ROOT / "function_app.py", *sorted((ROOT / "functions").rglob("*.py")),
                 *sorted((ROOT / "shared").rglob("*.py"))]:
        for m in pattern.finditer(path.read_text()):
            read.setdefault(m.group(1) or m.group(2), path.relative_to(ROOT))
    bicep = set(app_settings())
    missing = {name: str(where) for name, where in read.items() if name not in bicep and name not in UNSET_IN_AZURE}
    assert not missing, (f"read from the environment but not set by infra/main.bicep: {missing}; set it there "
                         "(and in docs/deploy.md) or add it to UNSET_IN_AZURE with the reason")


def test_the_bicep_values_are_accepted_by_the_code():
    settings = Settings.from_env(azure_env())
    assert settings.transport == "servicebus" and settings.credential == "default"
    assert settings.storage_connection is None and settings.hub.api_key is None and settings.ca_bundle is None


def test_the_bicep_sets_the_codes_defaults():
    """docs/deploy.md promises the code's defaults for every tuning setting: a default changed in the code
    (a merge) shows up here instead of Azure quietly running the old one."""
    import dataclasses
    computed = {k: v for k, v in azure_env().items() if app_settings()[k] is None}
    as_set, as_default = Settings.from_env(azure_env()), Settings.from_env(computed)
    differ = [f"{f.name}: Bicep gives {getattr(as_set, f.name)!r}, the code's default is {getattr(as_default, f.name)!r}"
              for f in dataclasses.fields(Settings) if getattr(as_set, f.name) != getattr(as_default, f.name)]
    assert not differ, "infra/main.bicep differs from shared/config.py:\n" + "\n".join(differ)


def test_every_trigger_setting_and_connection_is_set_with_the_managed_identity():
    bicep = app_settings()
    for binding in bindings():
        for value in binding.values():
            for name in re.findall(r"%([A-Za-z0-9_]+)%", str(value)):
                assert name in bicep, f"a trigger binds to %{name}% but infra/main.bicep does not set {name}"
        conn = binding.get("connection")
        if not conn:
            continue
        needed = {"serviceBusTrigger": ["fullyQualifiedNamespace"],
                  "blobTrigger": ["blobServiceUri", "queueServiceUri"]}.get(binding["type"], [])
        for suffix in needed + ["credential", "clientId"]:
            assert f"{conn}__{suffix}" in bicep, f"{binding['type']} connection {conn} needs {conn}__{suffix}"
        assert bicep[f"{conn}__credential"] == "managedidentity"
        assert conn not in bicep, f"{conn} as a connection string would carry a key"


def test_the_bicep_sets_nothing_the_app_does_not_read_and_nothing_flex_forbids():
    read = settings_read_by_config()
    for binding in bindings():
        read |= {n for v in binding.values() for n in re.findall(r"%([A-Za-z0-9_]+)%", str(v))}
        if binding.get("connection"):
            read |= {n for n in app_settings() if n.startswith(binding["connection"] + "__")}
    explained = read | set(READ_OUTSIDE_CONFIG) | {n for n in app_settings() if n.startswith(HOST_STORAGE_PREFIX)}
    bicep = set(app_settings())
    assert sorted(bicep - explained) == [], "infra/main.bicep sets settings nothing reads"
    assert sorted(bicep & FORBIDDEN_ON_FLEX) == [], "settings Flex Consumption does not allow"
    assert sorted(bicep & set(LOCAL_ONLY)) == [], "local-only settings (keys, emulator) must never reach Azure"


def test_every_setting_the_bicep_sets_is_documented():
    undocumented = sorted(set(app_settings()) - documented_names())
    assert not undocumented, f"docs/deploy.md does not explain {', '.join(undocumented)}"


def test_the_spokes_file_is_one_the_app_accepts_and_is_the_one_the_bicep_loads():
    spokes = json.loads((INFRA / "spokes.json").read_text())
    first_tenant = spokes["environments"][0]["targets"][0]["tenant"]
    topology = parse_topology(spokes, hub_tenant=first_tenant)
    assert len(list(topology.targets())) >= 2
    text = MAIN.read_text()
    assert "loadJsonContent('spokes.json')" in text and "SPOKES_CONFIG: string(spokes)" in text
    assert "for env in spokes.environments" in text, "the spokes' role assignments must come from the same file"


# --- queues and topic ---------------------------------------------------------------------------------

def test_every_queue_and_topic_the_code_names_exists_with_the_properties_it_relies_on():
    messaging = INFRA / "modules" / "messaging.bicep"
    res = resources(messaging)
    queue_props = resource_body(res["stageQueues"])["properties"]
    for key, expected in SERVICE_BUS_QUEUE_CONTRACT.items():
        assert queue_props.get(key) == expected, f"the stage queues' {key} must be {expected!r} (shared/bus.py)"
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


def assigned_roles() -> set[str]:
    """Role GUIDs the Bicep modules and the cross-tenant script assign."""
    found: set[str] = set()
    for path in [*bicep_files(), *sorted((INFRA / "scripts").glob("*.sh"))]:
        found |= set(GUID.findall(path.read_text()))
    return found


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
