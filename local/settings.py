"""The app settings for the one-machine stack: the same keys local.settings.sample.json documents."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from local.emulator.identity import API_CLIENT_ID, DEMO_TENANT
from shared.run.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DEMO_SPOKES = ROOT / "local" / "spokes.demo.json"
HUB = {"name": "ftops-hub", "subscription": "00000000-0000-0000-0000-00000000hub0",
       "resource_group": "rg-ftops-hub", "region": "swedencentral", "tenant": "tenant-contoso", "role": "hub",
       # RBAC on the hub: the function app's own identity; emulator_topology adds the spokes' credentials
       "contributors": ["app"]}


def hub_resource_id(hub: dict[str, str] = HUB) -> str:
    return (f"/subscriptions/{hub['subscription']}/resourceGroups/{hub['resource_group']}"
            f"/providers/Microsoft.CognitiveServices/accounts/{hub['name']}")


def emulator_topology(spokes_path: Path = DEMO_SPOKES, hub: dict[str, str] = HUB) -> dict[str, Any]:
    """The emulator's accounts: the hub plus every spoke target the spokes configuration names."""
    config = json.loads(Path(spokes_path).read_text())
    # as an operator grants them: every spoke credential the configuration names has a role on the hub too
    granted = [t["credential"]["client_id"] for env in config["environments"] for t in env["targets"]
               if "credential" in t]
    accounts = [{**hub, "contributors": [*hub.get("contributors", ["app"]), *granted]}]
    for env in config["environments"]:
        for t in env["targets"]:
            accounts.append({"name": t["account"], "subscription": t["subscription"],
                             "resource_group": t["resource_group"], "region": t["region"],
                             "tenant": t["tenant"], "role": "spoke"})
    return {"accounts": accounts}


def local_env(*, storage_connection: str, emulator_url: str, ca_file: str, spokes: str | Path = DEMO_SPOKES,
              hub: dict[str, str] = HUB, **overrides: str) -> dict[str, str]:
    env = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": storage_connection,
        "DatasetStorage": storage_connection,
        "FTOPS_TRANSPORT": "local",
        "FTOPS_CREDENTIAL": "local-dev",
        "FTOPS_CA_BUNDLE": ca_file,
        "HUB_ENDPOINT": f"{emulator_url}/{hub['name']}",
        "HUB_RESOURCE_ID": hub_resource_id(hub),
        "HUB_TENANT_ID": hub["tenant"],
        "ARM_ENDPOINT": emulator_url,
        "SPOKES_CONFIG": str(spokes),
        # the names the triggers bind to (%TRAIN_QUEUE%, …) and the stack creates: the app's own defaults
        **Settings.defaults_as_env("datasets_container", "reports_container", "quarantine_container",
                                   "traffic_container",
                                   "train_queue", "evaluate_queue", "deploy_queue", "commands_queue",
                                   "poll_queue", "events_topic"),
        "POLL_SCHEDULE": "*/2 * * * * *",
        "OUTBOX_SCHEDULE": "*/5 * * * * *",
        "KEEPALIVE_SCHEDULE": "*/5 * * * * *",
        "RECONCILE_SCHEDULE": "0 * * * * *",
        # the flywheel's timers keep their production schedules (they idle without a harvest policy);
        # `ftops demo --flywheel` runs harvest every few seconds
        **Settings.defaults_as_env("harvest_schedule", "drift_schedule"),
        "INTAKE_WAIT_SECONDS": "10",
        # the operator API accepts tokens the emulator issues as the demo tenant's identity provider
        "OPERATOR_TENANT_ID": DEMO_TENANT,
        "OPERATOR_API_AUDIENCE": API_CLIENT_ID,
        "OPERATOR_AUTHORITY": emulator_url,
        "OPERATOR_AUTHORITY_LOCAL": "true",   # the emulator is not an Entra ID login host: say so explicitly
    }
    env.update(overrides)
    return env


def isolated_deps(azurite: Any, emulator: Any, **overrides: str) -> Any:
    """The app's real Deps against a running Azurite and emulator, with containers, queues, topic and tables
    of their own (a fresh suffix), so tests and benchmarks sharing one stack never see each other's data;
    `overrides` are settings by their environment names."""
    import uuid

    from shared.app.bootstrap import build_deps
    uid = uuid.uuid4().hex[:8]
    env = local_env(storage_connection=azurite.connection_string, emulator_url=emulator.base_url,
                    ca_file=str(emulator.ca_file),
                    DATASETS_CONTAINER=f"datasets-{uid}", REPORTS_CONTAINER=f"reports-{uid}",
                    QUARANTINE_CONTAINER=f"quarantine-{uid}", TRAFFIC_CONTAINER=f"traffic-{uid}",
                    FTOPS_TABLE_PREFIX=f"t{uid}",
                    TRAIN_QUEUE=f"train-{uid}", EVALUATE_QUEUE=f"evaluate-{uid}", DEPLOY_QUEUE=f"deploy-{uid}",
                    COMMANDS_QUEUE=f"commands-{uid}", POLL_QUEUE=f"poll-{uid}", EVENTS_TOPIC=f"events-{uid}")
    return build_deps(Settings.from_env({**env, **overrides}))
