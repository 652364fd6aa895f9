"""Builds clients and settings once; handlers get them passed in (tests hand in Azurite and the emulator).

Heavy SDK imports stay inside the builders so a cold start only pays for what a function uses.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.azure.bus import LocalQueuePublisher, Publisher, ServiceBusPublisher
from shared.azure.identity import COGNITIVE_SCOPE, make_credential
from shared.run.config import ConfigError, Settings
from shared.store.registry import Registry

if TYPE_CHECKING:
    from shared.app import ports
    from shared.azure.chat import ChatFn, JudgeFn
    from shared.run.topology import Topology

log = logging.getLogger(__name__)


# Every SDK client waits a bounded time (the SDKs' defaults: openai 600 s per try × its retries, azure-core
# 300 s per read): a hung hub or storage account fails the call, which is then retried, instead of holding a
# worker (or the poll tick) for as long as it hangs.
CONNECT_TIMEOUT_S = 10.0
STORAGE_READ_TIMEOUT_S = 60.0    # Table/Blob/Queue: per socket read (a large blob streams in many)
HUB_TIMEOUT_S = 120.0            # the hub's authoring API (an upload writes in chunks, each within this)
ARM_READ_TIMEOUT_S = 60.0
# the SDKs take these as keyword arguments of their own (typed per client): passed through as they are
STORAGE_TIMEOUTS: dict[str, Any] = {"connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": STORAGE_READ_TIMEOUT_S}


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK = SystemClock()


@dataclass
class Deps:
    """Every port a handler uses (shared.app.ports), built once by `build_deps`; unit tests build it from the
    in-memory fakes (tests/unit/fakes.py), integration tests from Azurite and the emulator."""
    settings: Settings
    blobs: ports.Blobs
    registry: ports.Registry
    publisher: Publisher
    credential: ports.CredentialFactory
    topology: Topology | None = None   # SPOKES_CONFIG, checked and parsed once (None: the setting is unset)
    clock: ports.Clock = SYSTEM_CLOCK
    hub_port: ports.HubConnector | None = None   # None: the configured hub, through `hub_client`
    chat_port: ports.Chat | None = None          # None: chat completions through `openai_client`
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def require_topology(self) -> Topology:
        if self.topology is None:
            raise ConfigError("SPOKES_CONFIG must be set (inline JSON or a path to a JSON file)")
        return self.topology

    def hub(self, *, max_retries: int = 6) -> ports.Hub:
        """The hub's fine-tuning API; `max_retries` SDK retries per call."""
        if self.hub_port is not None:
            return self.hub_port(max_retries=max_retries)
        from shared.azure.hub import Hub
        return Hub.from_deps(self, max_retries=max_retries)

    @property
    def chat(self) -> ports.Chat:
        return self.chat_port if self.chat_port is not None else _OpenAIChat(self)

    def openai_client(self, endpoint: str | None = None, *, tenant_id: str | None = None,
                      api_key: str | None = None, max_retries: int = 6, client_id: str | None = None,
                      v1: bool = False) -> Any:
        """An AzureOpenAI client for chat completions on the deployments of the hub (default) or a spoke
        endpoint, on the GA inference api-version; the SDK retries 429/5xx with backoff and honors
        Retry-After. Fine-tuning and files go through `hub_client`. `v1`: an `OpenAI` client on the v1 API
        (`<endpoint>/openai/v1/`), for what only v1 serves (stored completions)."""
        from shared.run.hub_api import INFERENCE_API_VERSION
        endpoint = endpoint or self.settings.hub.endpoint
        key = f"openai|{endpoint}|{tenant_id}|{client_id}|{max_retries}|{v1}"
        with self._lock:
            if key not in self._cache:
                from openai import AzureOpenAI, OpenAI
                auth = self._openai_auth(endpoint, api_key, tenant_id, client_id)
                if v1:
                    self._cache[key] = OpenAI(base_url=f"{endpoint.rstrip('/')}/openai/v1/",
                                              api_key=auth.get("api_key") or auth["azure_ad_token_provider"],
                                              max_retries=max_retries, http_client=self._http_client(),
                                              timeout=_openai_timeout(HUB_TIMEOUT_S))
                else:
                    self._cache[key] = AzureOpenAI(azure_endpoint=endpoint, api_version=INFERENCE_API_VERSION,
                                                   max_retries=max_retries, http_client=self._http_client(),
                                                   timeout=_openai_timeout(HUB_TIMEOUT_S), **auth)
            return self._cache[key]

    def hub_client(self, *, max_retries: int = 6) -> Any:
        """The client for the hub's authoring API (files, fine-tuning), on the surface HUB_API_VERSION names
        (shared.run.hub_api): the v1 API through `OpenAI(base_url=<hub>/openai/v1/)`, whose `api_key` may be a
        token provider (Entra ID, refreshed per request), or a dated api-version through `AzureOpenAI`."""
        hub = self.settings.hub
        key = f"hub|{hub.endpoint}|{hub.api_version}|{max_retries}"
        with self._lock:
            if key not in self._cache:
                from openai import AzureOpenAI, OpenAI

                from shared.run.hub_api import V1
                auth = self._openai_auth(hub.endpoint, None, None, None)
                if hub.api_version == V1:
                    secret = auth.get("api_key") or auth["azure_ad_token_provider"]
                    self._cache[key] = OpenAI(base_url=f"{hub.endpoint}/openai/v1/", api_key=secret,
                                              max_retries=max_retries, http_client=self._http_client(),
                                              timeout=_openai_timeout(HUB_TIMEOUT_S))
                else:
                    self._cache[key] = AzureOpenAI(azure_endpoint=hub.endpoint, api_version=hub.api_version,
                                                   max_retries=max_retries, http_client=self._http_client(),
                                                   timeout=_openai_timeout(HUB_TIMEOUT_S), **auth)
            return self._cache[key]

    def _http_client(self) -> Any:
        if not self.settings.ca_bundle:
            return None
        import ssl

        from openai import DefaultHttpxClient
        # local only: trust the emulator's throw-away CA
        return DefaultHttpxClient(verify=ssl.create_default_context(cafile=self.settings.ca_bundle))

    def _openai_auth(self, endpoint: str, api_key: str | None, tenant_id: str | None,
                     client_id: str | None) -> dict[str, Any]:
        hub = self.settings.hub
        if api_key or (endpoint == hub.endpoint and hub.api_key):
            return {"api_key": api_key or hub.api_key}
        from azure.identity import get_bearer_token_provider
        # a spoke in another tenant names its credential (client_id), as for ARM
        cred = self.credential(tenant_id=tenant_id or hub.tenant, client_id=client_id)
        return {"azure_ad_token_provider": get_bearer_token_provider(cred, COGNITIVE_SCOPE)}

    def arm_client(self, subscription: str, *, tenant_id: str | None = None, client_id: str | None = None,
                   auxiliary_tenants: tuple[str, ...] = ()) -> Any:
        """A CognitiveServicesManagementClient for one subscription (and tenant, for cross-tenant spokes)."""
        key = f"arm|{subscription}|{tenant_id}|{client_id}|{auxiliary_tenants}"
        with self._lock:
            if key not in self._cache:
                from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
                from azure.mgmt.core.policies import AuxiliaryAuthenticationPolicy

                from shared.azure.identity import ARM_SCOPE
                kwargs: dict[str, Any] = {"base_url": self.settings.arm_endpoint, "polling_interval": 1,
                                          "connection_timeout": CONNECT_TIMEOUT_S, "read_timeout": ARM_READ_TIMEOUT_S}
                if self.settings.ca_bundle:
                    kwargs["connection_verify"] = self.settings.ca_bundle
                if auxiliary_tenants:
                    # ARM takes auxiliary tokens only from the same app as the primary one: the spoke's
                    # multi-tenant app, signed in to the hub's tenant (infra/scripts/cross-tenant-app.sh).
                    aux = [self.credential(tenant_id=t, client_id=client_id) for t in auxiliary_tenants]
                    kwargs["per_call_policies"] = [AuxiliaryAuthenticationPolicy(aux, ARM_SCOPE)]
                cred = self.credential(tenant_id=tenant_id, client_id=client_id)
                self._cache[key] = CognitiveServicesManagementClient(cred, subscription, **kwargs)
            return self._cache[key]

    @functools.cached_property
    def arm_deployments(self) -> ports.ArmDeployments:
        """Model deployments on any account through ARM (the spokes', the hub's evaluation ones)."""
        from shared.azure.arm_deployments import ArmDeployments
        return ArmDeployments(self.arm_client)

    @functools.cached_property
    def spokes(self) -> ports.Spokes:
        """The spokes port: deploy, read, delete, smoke-test on one target at a time."""
        from shared.azure.spokes import Spokes
        return Spokes(self.settings, self.arm_deployments, self.openai_client)


def storage_clients(settings: Settings, credential: ports.CredentialFactory) -> tuple[Any, Any]:
    """(BlobServiceClient, TableServiceClient) of the app's storage account, with bounded waits."""
    from azure.data.tables import TableServiceClient
    from azure.storage.blob import BlobServiceClient
    if settings.storage_connection:
        return (BlobServiceClient.from_connection_string(settings.storage_connection, **STORAGE_TIMEOUTS),
                TableServiceClient.from_connection_string(settings.storage_connection, **STORAGE_TIMEOUTS))
    cred = credential()
    return (BlobServiceClient(_required(settings.blob_service_uri, "DatasetStorage__blobServiceUri"), credential=cred,
                              **STORAGE_TIMEOUTS),
            TableServiceClient(_required(settings.table_service_uri, "DatasetStorage__tableServiceUri"),
                               credential=cred, **STORAGE_TIMEOUTS))


def build_deps(settings: Settings) -> Deps:
    credential = functools.partial(_credential, settings.credential)
    topology = None
    if settings.spokes_config:   # at start-up: a spoke that cannot host the models stops the app, named
        from shared.run.topology import load_topology
        topology = load_topology(settings)
    blobs, tables = storage_clients(settings, credential)
    registry = Registry(tables, prefix=settings.table_prefix)
    registry.ensure_tables()
    if settings.transport == "local":
        from azure.storage.queue import QueueServiceClient
        sent = tables.create_table_if_not_exists(f"{settings.table_prefix}sentmessages")
        queues = QueueServiceClient.from_connection_string(_required(settings.storage_connection, "DatasetStorage"),
                                                           **STORAGE_TIMEOUTS)
        publisher: Publisher = LocalQueuePublisher(queues, sent)
    else:
        namespace = _required(settings.servicebus_namespace, "ServiceBusConnection__fullyQualifiedNamespace")
        publisher = ServiceBusPublisher(namespace, credential(), topic=settings.events_topic)
    for container in (settings.datasets_container, settings.reports_container, settings.quarantine_container,
                      settings.traffic_container):
        _ensure_container(blobs, container)
    return Deps(settings=settings, blobs=blobs, registry=registry, publisher=publisher, credential=credential,
                topology=topology)


def _required(value: str | None, key: str) -> str:
    if not value:
        raise ConfigError(f"{key} must be set")
    return value


class _OpenAIChat:
    """The Chat port on the openai SDK, on the hub's deployments."""

    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    def reply_fn(self, base_model: str) -> ChatFn:
        from shared.azure.chat import openai_chat_fn
        return openai_chat_fn(self._deps.openai_client(), base_model)

    def judge_fn(self) -> JudgeFn:
        from shared.azure.chat import openai_judge_fn
        return openai_judge_fn(self._deps.openai_client())


@functools.cache
def _openai_timeout(read: float) -> Any:
    from openai import Timeout
    return Timeout(read, connect=CONNECT_TIMEOUT_S)


def _credential(kind: str, tenant_id: str | None = None, client_id: str | None = None) -> Any:
    return make_credential(kind, tenant_id=tenant_id, client_id=client_id)


def _ensure_container(blobs: Any, name: str) -> None:
    from azure.core.exceptions import ResourceExistsError
    try:
        blobs.create_container(name)
    except ResourceExistsError:
        pass


_deps: Deps | None = None
_deps_lock = threading.Lock()


def get_deps() -> Deps:
    """The process-wide dependencies, built on first use from the environment (function app settings)."""
    global _deps
    with _deps_lock:
        if _deps is None:
            _deps = build_deps(Settings.from_env())
        return _deps
