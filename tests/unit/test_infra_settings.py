"""Settings: what the code reads in Azure ⊆ what infra/main.bicep sets ⊆ what docs/deploy.md documents, set
with the managed identity, the code's defaults, and nothing Flex Consumption forbids. No Azure here: these
stand in for an app that starts in Azure and stops on a missing setting."""
from __future__ import annotations

import json
import re

from fakes import Recording
from infra_bicep import DEPLOY_DOC, INFRA, MAIN, ROOT, app_settings, azure_env, bindings

from shared.app.telemetry import app_configures_telemetry, worker_exports_telemetry
from shared.run.config import Settings
from shared.run.topology import parse_topology

# Read by the code, but only on one machine: in Azure they would be secrets or point at the emulator.
LOCAL_ONLY = {
    "DatasetStorage": "a connection string (with the account key); Azure uses DatasetStorage__*ServiceUri",
    "HUB_API_KEY": "an API key; Azure uses Entra ID tokens",
    "FTOPS_CA_BUNDLE": "the emulator's throw-away CA",
    "OPERATOR_AUTHORITY_LOCAL": "lets OPERATOR_AUTHORITY name the emulator; Azure uses an Entra ID login host",
}
# Read by the Functions host or an SDK rather than shared/run/config.py.
READ_OUTSIDE_CONFIG = {
    "AZURE_CLIENT_ID": "azure-identity (DefaultAzureCredential) and shared/azure/identity.py: which user-assigned identity",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "function_app.py and the host: where telemetry goes",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host and the exporter: Entra-only ingestion",
    "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": "the Python worker: it exports the worker's telemetry itself",
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


def settings_read_by_config() -> set[str]:
    env = Recording(azure_env())
    Settings.from_env(env)
    return env.read


def documented_names() -> set[str]:
    return set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", DEPLOY_DOC.read_text()))


# --- settings -----------------------------------------------------------------------------------------

def test_every_setting_the_code_reads_in_azure_is_set_by_the_bicep():
    bicep = set(app_settings())
    missing = sorted(settings_read_by_config() - bicep - set(LOCAL_ONLY))
    assert not missing, ("shared/run/config.py reads " + ", ".join(missing) + " but infra/main.bicep does not set it: "
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

    def flat(obj, prefix=""):   # hub.api_version rather than two whole HubSettings in the message
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            yield from flat(value, f"{prefix}{f.name}.") if dataclasses.is_dataclass(value) else [
                (prefix + f.name, value)]

    computed = {k: v for k, v in azure_env().items() if app_settings()[k] is None}
    as_set, as_default = dict(flat(Settings.from_env(azure_env()))), dict(flat(Settings.from_env(computed)))
    differ = [f"{name}: Bicep gives {value!r}, the code's default is {as_default[name]!r}"
              for name, value in as_set.items() if value != as_default[name]]
    assert not differ, "infra/main.bicep differs from shared/run/config.py:\n" + "\n".join(differ)


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
    assert "var spokeEnvironments = spokes.environments" in text and "for env in spokeEnvironments" in text, \
        "the spokes' role assignments must come from the same file"


def test_in_opentelemetry_mode_worker_telemetry_is_exported_once():
    """host.json's OpenTelemetry mode without PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: the host forwards the
    worker's logs and function_app.py exports them too, so every log line reached App Insights twice. With it,
    the worker exports and the app must not add a second exporter."""
    host = json.loads((ROOT / "host.json").read_text())
    assert host.get("telemetryMode") == "OpenTelemetry"
    env = azure_env()
    assert env.get("APPLICATIONINSIGHTS_CONNECTION_STRING")
    assert worker_exports_telemetry(env), "infra/main.bicep must set PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true"
    assert not app_configures_telemetry(env), "function_app.py would configure a second exporter in Azure"
    # on one machine, without the worker setting, the app still sets the exporter up
    assert app_configures_telemetry({"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"})
    assert not app_configures_telemetry({})
