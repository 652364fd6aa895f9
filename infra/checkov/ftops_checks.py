"""ftops's own checkov checks for the resource types checkov has no Bicep checks for (Service Bus, Event Grid,
Application Insights, Log Analytics, managed identities, role assignments and definitions), so that checkov
evaluates every Bicep file of infra/ with a resource in it. Loaded with `--external-checks-dir infra/checkov`
(tests/unit/test_infra_tools.py, docs/deploy.md "The checks in make test"). Each check reads the resource as
checkov's Bicep parser (pycep) gives it: a literal where the Bicep has one, a parse tree for an expression.
"""
from __future__ import annotations

import re
from typing import Any

from checkov.bicep.checks.resource.base_resource_check import BaseResourceCheck
from checkov.common.models.enums import CheckCategories, CheckResult

# Built-in roles that would let the app change what it should only use (ids from Learn "Azure built-in roles").
BROAD_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9",  # User Access Administrator
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168",  # Role Based Access Control Administrator
    "25fbc0a9-bd7c-42a3-aa1a-3b75d497ee68",  # Cognitive Services Contributor
    "17d1049b-9a84-46fb-8f53-869881c3d3ab",  # Storage Account Contributor
}
ISO_DURATION = re.compile(r"P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+S)?)?")


def body(conf: dict[str, Any]) -> dict[str, Any]:
    """The resource's object whether it is declared once, conditionally or in a loop."""
    while isinstance(conf, dict) and "config" in conf and ("loop_type" in conf or "condition" in conf):
        conf = conf["config"]
    return conf if isinstance(conf, dict) else {}


def props(conf: dict[str, Any]) -> dict[str, Any]:
    value = body(conf).get("properties")
    return value if isinstance(value, dict) else {}


class _Check(BaseResourceCheck):
    """A check is its id, name, resource types and category, and `passes(conf)`."""
    def __init__(self, id: str, name: str, resources: tuple[str, ...], category: CheckCategories) -> None:
        super().__init__(name=name, id=id, categories=(category,), supported_resources=resources)

    def passes(self, conf: dict[str, Any]) -> bool:
        raise NotImplementedError

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        return CheckResult.PASSED if self.passes(conf) else CheckResult.FAILED


class ServiceBusEntraOnly(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_1", "Service Bus accepts Entra ID only (no SAS keys) over TLS 1.2",
                         ("Microsoft.ServiceBus/namespaces",), CheckCategories.IAM)

    def passes(self, conf: dict[str, Any]) -> bool:
        p = props(conf)
        return p.get("disableLocalAuth") is True and p.get("minimumTlsVersion") == "1.2"


class ServiceBusMessagesBounded(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_2", "Service Bus queues and subscriptions let messages expire and cap redelivery",
                         ("Microsoft.ServiceBus/namespaces/queues", "Microsoft.ServiceBus/namespaces/topics/subscriptions"),
                         CheckCategories.GENERAL_SECURITY)

    def passes(self, conf: dict[str, Any]) -> bool:
        p = props(conf)
        ttl, deliveries = p.get("defaultMessageTimeToLive"), p.get("maxDeliveryCount")
        return (isinstance(ttl, str) and ISO_DURATION.fullmatch(ttl) is not None
                and isinstance(deliveries, int) and 1 <= deliveries <= 10)


class MonitoringEntraOnly(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_3", "Application Insights and Log Analytics accept Entra ID ingestion only",
                         ("Microsoft.Insights/components", "Microsoft.OperationalInsights/workspaces"),
                         CheckCategories.IAM)

    def passes(self, conf: dict[str, Any]) -> bool:
        p = props(conf)
        features = p["features"] if isinstance(p.get("features"), dict) else {}
        return p.get("DisableLocalAuth") is True or features.get("disableLocalAuth") is True


class NarrowRoleAssignment(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_4", "A role assignment names its scope, is for a service principal and is no broad role",
                         ("Microsoft.Authorization/roleAssignments",), CheckCategories.IAM)

    def passes(self, conf: dict[str, Any]) -> bool:
        b, p = body(conf), props(conf)
        role = str(p.get("roleDefinitionId", ""))
        return (bool(b.get("scope")) and p.get("principalType") == "ServicePrincipal"
                and not any(guid in role for guid in BROAD_ROLES))


class NarrowCustomRole(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_5", "A custom role lists its actions (no wildcard, nothing of Microsoft.Authorization)",
                         ("Microsoft.Authorization/roleDefinitions",), CheckCategories.IAM)

    def passes(self, conf: dict[str, Any]) -> bool:
        permissions = props(conf).get("permissions")
        if not isinstance(permissions, list) or not permissions:
            return False
        text = repr(permissions)
        return bool("*" not in text and "Microsoft.Authorization" not in text and props(conf).get("assignableScopes"))


class EventGridTopicHasIdentity(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_6", "An Event Grid system topic has a managed identity (dead-lettering without keys)",
                         ("Microsoft.EventGrid/systemTopics",), CheckCategories.IAM)

    def passes(self, conf: dict[str, Any]) -> bool:
        identity = body(conf).get("identity")
        return isinstance(identity, dict) and identity.get("type") in {"SystemAssigned", "UserAssigned"}


class Tagged(_Check):
    def __init__(self) -> None:
        super().__init__("CKV_FTOPS_7", "The resource carries the deployment's tags (azd-env-name, app)",
                         ("Microsoft.ManagedIdentity/userAssignedIdentities", "Microsoft.EventGrid/systemTopics",
                          "Microsoft.ServiceBus/namespaces", "Microsoft.Insights/components",
                          "Microsoft.OperationalInsights/workspaces"), CheckCategories.CONVENTION)

    def passes(self, conf: dict[str, Any]) -> bool:
        return bool(body(conf).get("tags"))


CHECKS = [ServiceBusEntraOnly(), ServiceBusMessagesBounded(), MonitoringEntraOnly(), NarrowRoleAssignment(),
          NarrowCustomRole(), EventGridTopicHasIdentity(), Tagged()]
