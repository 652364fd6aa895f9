"""A spoke in another tenant is reached as its multi-tenant app (docs/deploy.md, "Spokes in another tenant"):
the ARM token for the spoke's tenant and the hub tenant's auxiliary token both come from that app, as ARM
requires, and a same-tenant spoke uses the managed identity alone."""
from __future__ import annotations

import json

from local.settings import DEMO_SPOKES
from shared.app.bootstrap import Deps
from shared.azure import spokes
from shared.run.config import Settings
from shared.run.topology import parse_topology

HUB_TENANT = "tenant-contoso"


class RecordingCredentials:
    """The credential factory Deps takes: records who asked for which tenant and app."""

    def __init__(self) -> None:
        self.asked: list[tuple[str | None, str | None]] = []

    def __call__(self, tenant_id: str | None = None, client_id: str | None = None):
        self.asked.append((tenant_id, client_id))
        return self

    def get_token(self, *scopes, **kwargs):   # never called: no request is sent in these tests
        raise AssertionError("no token should be requested")


def deps_and_targets():
    settings = Settings.from_env({
        "DatasetStorage__blobServiceUri": "https://acct.blob.core.windows.net",
        "ServiceBusConnection__fullyQualifiedNamespace": "ns.servicebus.windows.net",
        "HUB_ENDPOINT": "https://hub.openai.azure.com",
        "HUB_RESOURCE_ID": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub",
        "HUB_TENANT_ID": HUB_TENANT,
    })
    creds = RecordingCredentials()
    deps = Deps(settings=settings, blobs=None, registry=None, publisher=None, credential=creds)
    topology = parse_topology(json.loads(DEMO_SPOKES.read_text()), hub_tenant=HUB_TENANT)
    return deps, creds, {t.account: t for _, t in topology.targets()}


def test_cross_tenant_spoke_signs_in_as_its_app_in_both_tenants():
    deps, creds, targets = deps_and_targets()
    other = targets["ftops-prod-westeurope"]
    assert other.tenant != HUB_TENANT and other.client_id
    deps.arm_deployments.client(spokes.account(other, deps.settings.hub))
    assert (other.tenant, other.client_id) in creds.asked          # the spoke's tenant
    assert (HUB_TENANT, other.client_id) in creds.asked            # the auxiliary token: same app
    assert all(client == other.client_id for _, client in creds.asked)


def test_same_tenant_spoke_uses_the_managed_identity():
    deps, creds, targets = deps_and_targets()
    deps.arm_deployments.client(spokes.account(targets["ftops-dev-eastus"], deps.settings.hub))
    assert creds.asked == [("tenant-contoso", None)]
