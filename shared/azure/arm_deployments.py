"""One client for model deployments on Azure OpenAI accounts through ARM: the spokes' deployments
(shared.azure.spokes) and the hub's temporary evaluation deployments (shared.evaluation.hubdeploy) both go
through it, so a PUT, its patience and its errors are written once.

Every failure comes out as one family, `DeploymentError`, sorted once by `error_from_arm`:
- `DeploymentTransient`: 408/409/429/5xx, timeouts, ARM unreachable. Retrying (the message) may succeed.
- `DeploymentQuota`: ARM refused for quota (`InsufficientQuota`: the region's tokens-per-minute, or the
  account's deployment count). Waiting may help, or nothing will.
- `DeploymentRefused`: any other refusal (bad sku, model not deployable, forbidden): a retry will not help.
- `NotManagedByFtops`: the name is taken by a deployment ftops did not create; never replaced or deleted.
Callers decide what a kind means for them (a spoke rolls the environment back, an evaluation skips a
checkpoint or waits for quota); no SDK exception leaves this module.
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from shared.run.models import ModelLifecycle

log = logging.getLogger(__name__)

MANAGED_TAG, MANAGED_VALUE = "managed_by", "ftops"   # on every deployment ftops serves, beside `run_id`
GONE_STATES = frozenset({"deleting", "deleted"})
PUT_ATTEMPTS = 3   # after the SDK's own retries (3 per status): a busy ARM must not fail a whole environment


class DeploymentError(RuntimeError):
    """ARM refused or failed a deployment operation; the message names the account and what happened."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class DeploymentTransient(DeploymentError):
    """Throttled, busy or unreachable: the same request may succeed later."""


class DeploymentQuota(DeploymentError):
    """ARM refused for quota (`InsufficientQuota`): wait for room within a bound, then give up."""


class DeploymentRefused(DeploymentError):
    """ARM said no for a reason a retry cannot fix (model not deployable, bad sku, forbidden)."""


class NotManagedByFtops(DeploymentRefused):
    """The deployment under that name was not created by ftops: never replace or delete it."""


@dataclass(frozen=True)
class ArmAccount:
    """An Azure OpenAI account as ARM addresses it, with the credential that reaches it."""
    subscription: str
    resource_group: str
    name: str
    label: str                                   # how messages name it ("acct (region)")
    tenant: str | None = None
    client_id: str | None = None                 # a cross-tenant spoke's multi-tenant app
    auxiliary_tenants: tuple[str, ...] = ()      # tenants whose tokens ARM also checks (cross-tenant source)


@dataclass(frozen=True)
class ArmDeployment:
    """What ARM says is deployed under a name on an account."""
    name: str
    model: str
    provisioning_state: str
    sku: str
    capacity: int
    tags: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    source_account: str | None = None

    @property
    def fine_tuned(self) -> bool:
        # Base models have no source; fine-tuned ones either name their account or carry the ft marker.
        return bool(self.source or self.source_account) or looks_fine_tuned(self.model)

    @property
    def gone(self) -> bool:
        return self.provisioning_state.lower() in GONE_STATES

    @property
    def managed_by_ftops(self) -> bool:
        return self.tags.get(MANAGED_TAG) == MANAGED_VALUE


def looks_fine_tuned(model: str) -> bool:
    return ".ft-" in model or model.startswith(("ft:", "ftchkpt-"))


class ArmDeployments:
    """Deployments on any account; `arm_client` is `Deps.arm_client` (one SDK client per credential)."""

    def __init__(self, arm_client: Callable[..., Any], *, sleep: Callable[[float], None] = time.sleep) -> None:
        self._arm_client, self._sleep = arm_client, sleep

    def client(self, at: ArmAccount) -> Any:
        """The SDK client (CognitiveServicesManagementClient) signed in for `at`."""
        return self._arm_client(at.subscription, tenant_id=at.tenant, client_id=at.client_id,
                                auxiliary_tenants=at.auxiliary_tenants)

    def put(self, at: ArmAccount, name: str, model: Mapping[str, str | None], *, sku: str, capacity: int,
            tags: Mapping[str, str], doing: str, attempts: int = PUT_ATTEMPTS, api_version: str | None = None,
            rights_hint: str = "") -> ArmDeployment:
        """Create or replace `name` and wait until ARM is done. A 429/5xx that outlasted the SDK's retries
        is tried again up to `attempts` times (a PUT is idempotent). `doing` starts the error's message;
        `rights_hint` ends it when ARM refused for rights (403)."""
        from azure.core.exceptions import HttpResponseError
        from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku
        body = Deployment(sku=Sku(name=sku, capacity=capacity), tags=dict(tags),
                          properties=DeploymentProperties(model=DeploymentModel(format="OpenAI", **model)))
        kwargs = {"api_version": api_version} if api_version else {}
        client = self.client(at)
        for attempt in range(1, attempts + 1):
            try:
                result = client.deployments.begin_create_or_update(at.resource_group, at.name, name, body,
                                                                   **kwargs).result()
                return _from_sdk(result, name)
            except HttpResponseError as exc:
                if attempt == attempts or not (exc.status_code == 429 or (exc.status_code or 0) >= 500):
                    raise error_from_arm(exc, doing, rights_hint) from exc
                log.warning("%s: PUT %s answered %s; trying again (%d of %d)", at.name, name, exc.status_code,
                            attempt + 1, attempts)
                self._sleep(2.0 * attempt * random.uniform(0.8, 1.2))
            except Exception as exc:
                raise error_from_arm(exc, doing) from exc
        raise AssertionError("unreachable")

    def get(self, at: ArmAccount, name: str) -> ArmDeployment | None:
        """The deployment, or None if there is none (or it is being deleted)."""
        try:
            result = self.client(at).deployments.get(at.resource_group, at.name, name)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise error_from_arm(exc, f"{at.label}: reading deployment {name!r} failed") from exc
        found = _from_sdk(result, name)
        return None if found.gone else found

    def list_all(self, at: ArmAccount) -> list[ArmDeployment]:
        try:
            return [_from_sdk(d, "") for d in self.client(at).deployments.list(at.resource_group, at.name)]
        except Exception as exc:
            raise error_from_arm(exc, f"{at.label}: listing deployments failed") from exc

    def delete(self, at: ArmAccount, name: str) -> bool:
        """Delete and wait; False if there was nothing to delete."""
        try:
            self.client(at).deployments.begin_delete(at.resource_group, at.name, name).result()
        except Exception as exc:
            if _not_found(exc):
                return False
            raise error_from_arm(exc, f"{at.label}: deleting {name!r} failed") from exc
        return True

    def delete_all(self, at: ArmAccount, names: Sequence[str]) -> list[str]:
        """Start every delete, then wait for each; the names that could not be deleted. Never raises an
        error (it runs in finally blocks and must not hide the error in flight)."""
        from azure.core.exceptions import ResourceNotFoundError
        client = self.client(at)
        pollers, failed = [], []
        for name in names:
            try:
                pollers.append((name, client.deployments.begin_delete(at.resource_group, at.name, name)))
            except ResourceNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001
                log.warning("could not delete deployment %s on %s: %s", name, at.name, exc)
                failed.append(name)
        for name, poller in pollers:
            try:
                poller.result()
            except ResourceNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                log.warning("deleting deployment %s on %s failed: %s", name, at.name, exc)
                failed.append(name)
        return failed

    def foreign(self, at: ArmAccount, name: str) -> str | None:
        """A clear message if `name` exists on the account and was not created by ftops, else None."""
        return foreign_problem(at.label, name, self.get(at, name))

    def refuse_if_foreign(self, at: ArmAccount, name: str, action: str) -> None:
        problem = self.foreign(at, name)
        if problem:
            raise NotManagedByFtops(f"not going to {action}: {problem}")

    def quota_problem(self, at: ArmAccount, name: str, quota: int) -> str | None:
        """A clear message if one more fine-tuned deployment than `quota` would be on the account, else
        None. Replacing `name` in place does not add one, so it is not counted."""
        current = [d for d in self.list_all(at) if d.fine_tuned and d.name != name and not d.gone]
        if len(current) >= quota:
            names = ", ".join(sorted(d.name for d in current))
            return (f"{at.label} already has {len(current)} fine-tuned deployments "
                    f"({names}); its quota is {quota}: retire a run or raise the quota first")
        return None

    def location(self, at: ArmAccount) -> str:
        """The account's region (ARM `location`), where the Models API lists what it offers."""
        try:
            return str(self.client(at).accounts.get(at.resource_group, at.name).location)
        except Exception as exc:
            raise error_from_arm(exc, f"{at.name}: reading the account failed") from exc

    def model_lifecycles(self, at: ArmAccount, location: str) -> dict[str, ModelLifecycle]:
        """`name-version` → retirement dates of the models a region offers (ARM Models API,
        `GET …/locations/{location}/models`, `model.deprecation.fineTune|inference`)."""
        try:
            listed = list(self.client(at).models.list(location))
        except Exception as exc:
            raise error_from_arm(exc, f"listing the models of {location}") from exc
        found: dict[str, ModelLifecycle] = {}
        for item in listed:
            model = getattr(item, "model", None)
            if model is None or not model.name or not model.version:
                continue
            deprecation = getattr(model, "deprecation", None)
            found[f"{model.name}-{model.version}"] = ModelLifecycle(
                model.name, model.version, fine_tune=_day(getattr(deprecation, "fine_tune", None)),
                inference=_day(getattr(deprecation, "inference", None)))
        return found

    def endpoint(self, at: ArmAccount) -> str:
        """The account's data-plane endpoint (`properties.endpoint`)."""
        try:
            account = self.client(at).accounts.get(at.resource_group, at.name)
        except Exception as exc:
            raise error_from_arm(exc, f"{at.name}: reading the account failed") from exc
        url = (getattr(account.properties, "endpoint", None) or "").rstrip("/")
        if not url:
            raise DeploymentRefused(f"{at.name}: ARM returned no properties.endpoint for the account")
        return url


def _day(value: Any) -> date | None:
    """An ISO timestamp (or datetime) from ARM as a calendar day (UTC); None when absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    try:
        return datetime.fromisoformat(str(value)).date()
    except ValueError:
        return None


def foreign_problem(label: str, name: str, existing: ArmDeployment | None) -> str | None:
    """Why ftops must leave `existing` alone (it is someone else's), or None when it may act on it."""
    if existing is None or existing.managed_by_ftops:
        return None
    return (f"{label}: deployment {name!r} exists and is not managed by ftops "
            f"(no tag {MANAGED_TAG}={MANAGED_VALUE}; it serves {existing.model!r}); ftops never replaces or "
            "deletes it: choose another deployment_name in run.json")


def _not_found(exc: Exception) -> bool:
    # the SDK's ResourceNotFoundError and a bare HttpResponseError both carry the status
    return getattr(exc, "status_code", None) == 404


def error_from_arm(exc: BaseException, doing: str, rights_hint: str = "") -> DeploymentError:
    """An ARM (azure-core) exception → the one family, its message `doing: <status> <code>: <ARM's message>`."""
    from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
    if isinstance(exc, DeploymentError):
        return exc
    if isinstance(exc, (ServiceRequestError, ServiceResponseError, TimeoutError, ConnectionError)):
        return DeploymentTransient(f"{doing}: ARM unreachable ({exc})")
    if not isinstance(exc, HttpResponseError):
        return DeploymentTransient(f"{doing}: {type(exc).__name__}: {exc}")
    status = exc.status_code or 0
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None) or ""
    message = getattr(error, "message", None) or exc.message or str(exc)
    text = f"{doing}: {status} {code}: {message}" if code else f"{doing}: {status}: {message}"
    # Quota is shared with other runs' evaluations and deployments: it may free up, or never.
    if "quota" in code.lower():
        return DeploymentQuota(text, status=status, code=code)
    if status in (408, 409, 429) or status >= 500:
        return DeploymentTransient(text, status=status, code=code)
    if status == 403:
        text += rights_hint
    return DeploymentRefused(text, status=status, code=code)


def _from_sdk(d: Any, name: str) -> ArmDeployment:
    props = getattr(d, "properties", None)
    model = getattr(props, "model", None)
    sku = getattr(d, "sku", None)
    return ArmDeployment(
        name=getattr(d, "name", None) or name, model=getattr(model, "name", None) or "",
        provisioning_state=str(getattr(props, "provisioning_state", None) or "Unknown"),
        sku=getattr(sku, "name", None) or "Standard", capacity=getattr(sku, "capacity", None) or 1,
        tags=dict(getattr(d, "tags", None) or {}), source=getattr(model, "source", None),
        source_account=getattr(model, "source_account", None))
