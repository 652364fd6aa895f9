"""Settings from the environment, built once into one frozen object.

Names follow the Functions conventions (``<CONNECTION>__serviceUri`` for identity-based connections,
``%SETTING%`` for names the triggers bind to), so local.settings.json, the app settings in Azure and the
dev host all read the same keys.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.access import AccessSettings


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting."""


@dataclass(frozen=True)
class HubSettings:
    endpoint: str                  # https://<account>.openai.azure.com (locally: the emulator's account URL)
    resource_id: str               # /subscriptions/…/accounts/<hub>: the `source` of cross-subscription deploys
    tenant: str | None = None
    api_version: str = "v1"          # the hub's authoring surface (shared.hub_api): v1 or a dated version
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
    arm_endpoint: str = "https://management.azure.com"
    credential: str = "default"              # "default" (managed identity) | "local-dev" (emulator tokens)
    ca_bundle: str | None = None             # local TLS only: the emulator's throw-away CA
    datasets_container: str = "datasets"
    reports_container: str = "reports"
    quarantine_container: str = "quarantine"
    train_queue: str = "ftops-train"
    evaluate_queue: str = "ftops-evaluate"
    deploy_queue: str = "ftops-deploy"
    commands_queue: str = "ftops-commands"
    events_topic: str = "ftops-events"
    table_prefix: str = ""
    spokes_config: str | None = None         # path to, or inline JSON of, the environments and their spokes
    default_base_model: str = "gpt-4.1-mini-2025-04-14"
    intake_wait_seconds: float = 60.0        # a folder's run.json waits this long for the files it names
    hub_file_retention: str = "delete"       # "delete" | "keep": hub files once the job is terminal
    poll_concurrency: int = 8                # hub calls one poll tick keeps in flight at most
    hub_multipart_threshold_mb: int = 100    # larger files go through the multipart uploads API
    keepalive_concurrency: int = 16          # keep-alive calls in flight at once (spread over the spokes)
    keepalive_schedule: str = "0 0 3 * * *"  # the keep-alive timer's NCRONTAB: checked against the 15-day limit
    smoke_timeout_seconds: float = 300.0     # patience for a new deployment's first answer (capacity 1 is slow)
    hosting_prices: str | None = None        # JSON {base model or sku: USD per hour}, over shared.models' estimates
    results_wait_seconds: float = 900.0      # a succeeded job's results file: wait this long, then go on without
    operator_tenant_id: str | None = None    # the Entra ID tenant whose tokens the operator API accepts
    operator_api_audience: str | None = None # the operator API's client id / App ID URI (comma-separated)
    operator_authority: str = "https://login.microsoftonline.com"   # locally: the emulator

    def access_settings(self) -> AccessSettings:
        """What the operator API verifies tokens against; ConfigError if the API is not configured."""
        from shared.access import AccessSettings
        if not self.operator_tenant_id or not self.operator_api_audience:
            raise ConfigError("OPERATOR_TENANT_ID and OPERATOR_API_AUDIENCE must be set for the operator API")
        audiences = tuple(a.strip() for a in self.operator_api_audience.split(",") if a.strip())
        return AccessSettings(tenant=self.operator_tenant_id, audiences=audiences,
                              authority=self.operator_authority, ca_bundle=self.ca_bundle)

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
        return Settings(
            storage_connection=conn,
            blob_service_uri=blob_uri,
            queue_service_uri=env.get("DatasetStorage__queueServiceUri"),
            table_service_uri=env.get("DatasetStorage__tableServiceUri"),
            transport=transport,
            servicebus_namespace=namespace,
            hub=hub,
            arm_endpoint=env.get("ARM_ENDPOINT", "https://management.azure.com").rstrip("/"),
            credential=credential,
            ca_bundle=env.get("FTOPS_CA_BUNDLE") or None,
            datasets_container=env.get("DATASETS_CONTAINER", "datasets"),
            reports_container=env.get("REPORTS_CONTAINER", "reports"),
            quarantine_container=env.get("QUARANTINE_CONTAINER", "quarantine"),
            train_queue=env.get("TRAIN_QUEUE", "ftops-train"),
            evaluate_queue=env.get("EVALUATE_QUEUE", "ftops-evaluate"),
            deploy_queue=env.get("DEPLOY_QUEUE", "ftops-deploy"),
            commands_queue=env.get("COMMANDS_QUEUE", "ftops-commands"),
            events_topic=env.get("EVENTS_TOPIC", "ftops-events"),
            table_prefix=env.get("FTOPS_TABLE_PREFIX", ""),
            spokes_config=env.get("SPOKES_CONFIG") or None,
            default_base_model=env.get("DEFAULT_BASE_MODEL", "gpt-4.1-mini-2025-04-14"),
            intake_wait_seconds=_float(env, "INTAKE_WAIT_SECONDS", 60.0),
            hub_file_retention=env.get("HUB_FILE_RETENTION", "delete"),
            poll_concurrency=max(1, int(_float(env, "POLL_CONCURRENCY", 8))),
            hub_multipart_threshold_mb=max(1, int(_float(env, "HUB_MULTIPART_THRESHOLD_MB", 100))),
            keepalive_concurrency=max(1, int(_float(env, "KEEPALIVE_CONCURRENCY", 16))),
            keepalive_schedule=env.get("KEEPALIVE_SCHEDULE") or "0 0 3 * * *",
            smoke_timeout_seconds=_float(env, "SMOKE_TIMEOUT_SECONDS", 300.0),
            hosting_prices=env.get("HOSTING_PRICES") or None,
            results_wait_seconds=max(0.0, _float(env, "RESULTS_WAIT_SECONDS", 900.0)),
            operator_tenant_id=env.get("OPERATOR_TENANT_ID") or None,
            operator_api_audience=env.get("OPERATOR_API_AUDIENCE") or None,
            operator_authority=(env.get("OPERATOR_AUTHORITY") or "https://login.microsoftonline.com").rstrip("/"),
        )

    def load_spokes_json(self) -> dict:
        """The spokes configuration as parsed JSON: inline JSON or a path to a file."""
        return load_spokes_json(self.spokes_config)


def load_spokes_json(raw: str | None) -> dict:
    """SPOKES_CONFIG (inline JSON or a path to a JSON file) parsed; ConfigError names what is wrong."""
    if not raw:
        raise ConfigError("SPOKES_CONFIG must be set (inline JSON or a path to a JSON file)")
    try:
        text = raw if raw.lstrip().startswith("{") else Path(raw).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SPOKES_CONFIG: cannot read {raw}: {exc.strerror or exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"SPOKES_CONFIG is not valid JSON: {exc}") from exc


def _hub_api_version(env: Mapping[str, str]) -> str:
    from shared.hub_api import DEFAULT, UnsupportedOnSurface, surface
    version = env.get("HUB_API_VERSION") or DEFAULT
    try:
        surface(version)
    except UnsupportedOnSurface as exc:
        raise ConfigError(str(exc)) from None
    return version


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    try:
        return float(env.get(key, default))
    except ValueError as exc:
        raise ConfigError(f"{key} must be a number, not {env.get(key)!r}") from exc


def _resource_part(resource_id: str, segment: str) -> str:
    parts = resource_id.strip("/").split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() == segment.lower():
            return parts[i + 1]
    raise ConfigError(f"HUB_RESOURCE_ID {resource_id!r} has no {segment} segment")
