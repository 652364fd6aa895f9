"""Settings from the environment, built once into one frozen object.

Names follow the Functions conventions (``<CONNECTION>__serviceUri`` for identity-based connections,
``%SETTING%`` for names the triggers bind to), so local.settings.json, the app settings in Azure and the
dev host all read the same keys.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from shared.run import hub_api, models


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting."""


def setting(default: Any, env: str, *, rule: str | None = None, secret: bool = False) -> Any:
    """A setting read from `env`, with its one default; unset or empty means the default. A `secret` one is
    left out of the settings' repr, so a log line or traceback that prints them never shows it."""
    return field(default=default, metadata={"env": env, "rule": rule}, repr=not secret)


def _from_env(env: Mapping[str, str], f: Field[Any]) -> Any:
    key, rule, raw = f.metadata["env"], f.metadata["rule"], env.get(f.metadata["env"]) or None
    if raw is None:
        return f.default
    if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
        number = _float(env, key)
        if rule == "at_least_1":
            return max(1, int(number))
        return max(0.0, number) if rule == "not_negative" else number
    return raw.rstrip("/") if rule == "url" else raw


@dataclass(frozen=True)
class HubSettings:
    endpoint: str                  # https://<account>.openai.azure.com (locally: the emulator's account URL)
    resource_id: str               # /subscriptions/…/accounts/<hub>: the `source` of cross-subscription deploys
    tenant: str | None = None
    api_version: str = hub_api.DEFAULT   # the hub's authoring surface: v1 or a dated version
    api_key: str | None = None     # local only; Azure uses Entra ID tokens

    @property
    def subscription(self) -> str:
        return _resource_part(self.resource_id, "subscriptions")

    @property
    def resource_group(self) -> str:
        return _resource_part(self.resource_id, "resourceGroups")

    @property
    def account(self) -> str:
        return self.resource_id.rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Settings:
    storage_connection: str | None           # connection string (local) …
    blob_service_uri: str | None             # … or identity-based service URIs (Azure)
    queue_service_uri: str | None
    table_service_uri: str | None
    transport: str                           # "servicebus" | "local"
    servicebus_namespace: str | None
    hub: HubSettings
    arm_endpoint: str = setting("https://management.azure.com", "ARM_ENDPOINT", rule="url")
    credential: str = "default"              # "default" (managed identity) | "local-dev" (emulator tokens)
    # local TLS only: the emulator's throw-away CA
    ca_bundle: str | None = setting(None, "FTOPS_CA_BUNDLE")
    datasets_container: str = setting("datasets", "DATASETS_CONTAINER")
    reports_container: str = setting("reports", "REPORTS_CONTAINER")
    quarantine_container: str = setting("quarantine", "QUARANTINE_CONTAINER")
    # JSONL production exchanges other systems drop for the flywheel (docs/flywheel.md)
    traffic_container: str = setting("traffic", "TRAFFIC_CONTAINER")
    train_queue: str = setting("ftops-train", "TRAIN_QUEUE")
    evaluate_queue: str = setting("ftops-evaluate", "EVALUATE_QUEUE")
    deploy_queue: str = setting("ftops-deploy", "DEPLOY_QUEUE")
    commands_queue: str = setting("ftops-commands", "COMMANDS_QUEUE")
    # one job to poll now (a hub webhook said it ended): the poller's own code path, off the HTTP request
    poll_queue: str = setting("ftops-poll", "POLL_QUEUE")
    events_topic: str = setting("ftops-events", "EVENTS_TOPIC")
    table_prefix: str = setting("", "FTOPS_TABLE_PREFIX")
    # path to, or inline JSON of, the environments and their spokes
    spokes_config: str | None = setting(None, "SPOKES_CONFIG")
    default_base_model: str = setting(models.DEFAULT_BASE_MODEL, "DEFAULT_BASE_MODEL")
    # a folder's run.json waits this long for the files it names
    intake_wait_seconds: float = setting(60.0, "INTAKE_WAIT_SECONDS")
    # a drop's data larger than this is rejected before any of it is read
    max_dataset_mb: int = setting(2048, "MAX_DATASET_MB", rule="at_least_1")
    # validation that takes longer ends in a rejection (validation_timeout), well inside the function timeout
    validation_max_seconds: float = setting(1200.0, "VALIDATION_MAX_SECONDS")
    # "delete" | "keep": hub files once the job is terminal
    hub_file_retention: str = setting("delete", "HUB_FILE_RETENTION")
    # fine-tuning jobs ftops keeps queued or running on the hub at once; more wait in ftops's own queue
    # (waiting_for_quota). Azure trains 3 at once per resource (Standard/Global training; 5 on Developer
    # training): Learn quotas-limits, 2026-02-17
    hub_concurrent_jobs: int = setting(3, "HUB_CONCURRENT_JOBS", rule="at_least_1")
    # warn (status, console, keep-alive, an event) this many days before a deployed model retires
    retirement_warning_days: int = setting(180, "RETIREMENT_WARNING_DAYS", rule="at_least_1")
    # hub calls one poll tick keeps in flight at most
    poll_concurrency: int = setting(8, "POLL_CONCURRENCY", rule="at_least_1")
    # larger files go through the multipart uploads API
    hub_multipart_threshold_mb: int = setting(100, "HUB_MULTIPART_THRESHOLD_MB", rule="at_least_1")
    # keep-alive calls in flight at once (spread over the spokes)
    keepalive_concurrency: int = setting(16, "KEEPALIVE_CONCURRENCY", rule="at_least_1")
    # the keep-alive timer's NCRONTAB: checked against the 15-day limit
    keepalive_schedule: str = setting("0 0 3 * * *", "KEEPALIVE_SCHEDULE")
    # the flywheel's harvest timer (NCRONTAB); it does nothing for environments without a harvest policy
    harvest_schedule: str = setting("0 30 2 * * *", "HARVEST_SCHEDULE")
    # the drift watch's timer (NCRONTAB); idle for environments without `harvest.drift_examples`
    drift_schedule: str = setting("0 0 */6 * * *", "DRIFT_SCHEDULE")
    # patience for a new deployment's first answer (capacity 1 is slow)
    smoke_timeout_seconds: float = setting(300.0, "SMOKE_TIMEOUT_SECONDS")
    # JSON {base model or sku: USD per hour}, over shared.run.models' estimates
    hosting_prices: str | None = setting(None, "HOSTING_PRICES")
    # the `whsec_…` signing secret the hub returned when the webhook endpoint was registered
    # (infra/scripts/register-webhook.sh); unset: the webhook route refuses every delivery and polling alone
    # follows the jobs
    hub_webhook_secret: str | None = setting(None, "HUB_WEBHOOK_SECRET", secret=True)
    # a succeeded job's results file: wait this long, then go on without
    results_wait_seconds: float = setting(900.0, "RESULTS_WAIT_SECONDS", rule="not_negative")
    # the Entra ID tenant whose tokens the operator API accepts
    operator_tenant_id: str | None = setting(None, "OPERATOR_TENANT_ID")
    # the operator API's client id / App ID URI (comma-separated)
    operator_api_audience: str | None = setting(None, "OPERATOR_API_AUDIENCE")
    # locally: the emulator
    operator_authority: str = setting("https://login.microsoftonline.com", "OPERATOR_AUTHORITY", rule="url")
    # "true" only on the local stack: OPERATOR_AUTHORITY may then be any https host (the emulator), not only
    # an Entra ID login host (shared.azure.access.ENTRA_AUTHORITIES)
    operator_authority_local: str | None = setting(None, "OPERATOR_AUTHORITY_LOCAL")

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        conn = env.get("DatasetStorage") or None
        blob_uri = env.get("DatasetStorage__blobServiceUri")
        if not conn and not blob_uri:
            raise ConfigError("DatasetStorage (connection string, local) or DatasetStorage__blobServiceUri "
                              "(managed identity) must be set")
        transport = env.get("FTOPS_TRANSPORT", "servicebus")
        if transport not in ("servicebus", "local"):
            raise ConfigError(f"FTOPS_TRANSPORT must be 'servicebus' or 'local', not {transport!r}")
        namespace = env.get("ServiceBusConnection__fullyQualifiedNamespace")
        if transport == "servicebus" and not namespace:
            raise ConfigError("ServiceBusConnection__fullyQualifiedNamespace must be set (or FTOPS_TRANSPORT=local)")
        for key in ("HUB_ENDPOINT", "HUB_RESOURCE_ID"):
            if not env.get(key):
                raise ConfigError(f"{key} must be set")
        credential = env.get("FTOPS_CREDENTIAL", "default")
        if credential not in ("default", "local-dev"):
            raise ConfigError(f"FTOPS_CREDENTIAL must be 'default' or 'local-dev', not {credential!r}")
        hub = HubSettings(
            endpoint=env["HUB_ENDPOINT"].rstrip("/"),
            resource_id=env["HUB_RESOURCE_ID"],
            tenant=env.get("HUB_TENANT_ID") or None,
            api_version=_hub_api_version(env),
            api_key=env.get("HUB_API_KEY") or None,
        )
        named = {f.name: _from_env(env, f) for f in fields(Settings) if "env" in f.metadata}
        return Settings(storage_connection=conn, blob_service_uri=blob_uri,
                        queue_service_uri=env.get("DatasetStorage__queueServiceUri"),
                        table_service_uri=env.get("DatasetStorage__tableServiceUri"), transport=transport,
                        servicebus_namespace=namespace, hub=hub, credential=credential, **named)

    @staticmethod
    def defaults_as_env(*names: str) -> dict[str, str]:
        """{environment key: default} of these fields: what a host that binds triggers to `%KEY%` must be
        given even when the app keeps its defaults (the local stack)."""
        by_name = {f.name: f for f in fields(Settings)}
        return {by_name[n].metadata["env"]: str(by_name[n].default) for n in names}

    def load_spokes_json(self) -> dict[str, Any]:
        """The spokes configuration as parsed JSON: inline JSON or a path to a file."""
        return load_spokes_json(self.spokes_config)



def load_spokes_json(raw: str | None) -> dict[str, Any]:
    """SPOKES_CONFIG (inline JSON or a path to a JSON file) parsed; ConfigError names what is wrong."""
    if not raw:
        raise ConfigError("SPOKES_CONFIG must be set (inline JSON or a path to a JSON file)")
    try:
        text = raw if raw.lstrip().startswith("{") else Path(raw).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SPOKES_CONFIG: cannot read {raw}: {exc.strerror or exc}") from exc
    try:
        spokes: dict[str, Any] = json.loads(text)   # parse_topology checks its shape
        return spokes
    except json.JSONDecodeError as exc:
        raise ConfigError(f"SPOKES_CONFIG is not valid JSON: {exc}") from exc


def _hub_api_version(env: Mapping[str, str]) -> str:
    from shared.run.hub_api import UnsupportedOnSurface, surface
    version = env.get("HUB_API_VERSION") or hub_api.DEFAULT
    try:
        surface(version)
    except UnsupportedOnSurface as exc:
        raise ConfigError(str(exc)) from None
    return version


def _float(env: Mapping[str, str], key: str) -> float:
    try:
        return float(env[key])
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, not {env.get(key)!r}") from exc


def _resource_part(resource_id: str, segment: str) -> str:
    parts = resource_id.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == segment.lower():
            return parts[i + 1]
    raise ConfigError(f"HUB_RESOURCE_ID {resource_id!r} has no {segment} segment")
