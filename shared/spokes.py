"""One spoke account through ARM and its data plane: deploy, read, delete, list, count, smoke test.

Everything here acts on a single target; `shared.deployment` decides what to do across an environment.
Where the model comes from decides the request (AZURE-FACTS "Deployments"):
- the hub itself: no source;
- same tenant (same or other subscription/region): `properties.model.source` = the hub's resource id;
- another tenant: `properties.model.sourceAccount` = the hub's resource id, a token for the spoke's tenant
  (the target's credential) plus an `x-ms-authorization-auxiliary` token for the hub's tenant.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from shared.config import HubSettings
from shared.topology import Target

if TYPE_CHECKING:
    from shared.bootstrap import Deps

log = logging.getLogger(__name__)

SMOKE_PROMPT = "Reply with OK."
_GONE_STATES = {"deleting", "deleted"}


MANAGED_TAG, MANAGED_VALUE = "managed_by", "ftops"   # on every deployment ftops creates, beside `run_id`


class SpokeError(RuntimeError):
    """A spoke refused or failed an operation; the message names the account and what happened."""


class NotManagedByFtops(SpokeError):
    """The deployment under that name was not created by ftops: never replace or delete it."""


@dataclass(frozen=True)
class SpokeDeployment:
    """What ARM says is deployed under a name on a spoke."""
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


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    attempts: int
    latency_ms: float
    detail: str

    def evidence(self) -> dict[str, Any]:
        return {"ok": self.ok, "attempts": self.attempts, "latency_ms": round(self.latency_ms, 1),
                "detail": self.detail[:200]}


def looks_fine_tuned(model: str) -> bool:
    return ".ft-" in model or model.startswith(("ft:", "ftchkpt-"))


def is_cross_tenant(target: Target, hub: HubSettings) -> bool:
    return bool(hub.tenant) and target.tenant != hub.tenant


def arm(deps: Deps, target: Target) -> Any:
    """The ARM client for a spoke: its tenant and credential, plus the hub tenant's auxiliary token when the
    model crosses tenants (ARM checks both tenants' tokens on that PUT)."""
    hub = deps.settings.hub
    aux = (hub.tenant,) if is_cross_tenant(target, hub) and hub.tenant else ()
    return deps.arm_client(target.subscription, tenant_id=target.tenant, client_id=target.client_id,
                           auxiliary_tenants=aux)


def model_body(target: Target, hub: HubSettings, model: str) -> dict[str, Any]:
    """`properties.model` for a fine-tuned model from the hub (wire names, for audit and tests)."""
    body: dict[str, Any] = {"format": "OpenAI", "name": model, "version": "1"}
    if target.resource_id.lower() == hub.resource_id.lower():
        return body
    body["sourceAccount" if is_cross_tenant(target, hub) else "source"] = hub.resource_id
    return body


def deploy(deps: Deps, target: Target, name: str, model: str, *, tags: dict[str, str],
           sku: str | None = None, capacity: int | None = None) -> SpokeDeployment:
    """Create or replace deployment `name` and wait for provisioning; SpokeError if it does not succeed."""
    from azure.mgmt.cognitiveservices.models import Deployment, DeploymentModel, DeploymentProperties, Sku
    refuse_if_foreign(deps, target, name, "replace")
    wire = model_body(target, deps.settings.hub, model)
    body = Deployment(
        sku=Sku(name=sku or target.sku, capacity=capacity or target.capacity),
        tags={**(tags or {}), MANAGED_TAG: MANAGED_VALUE},
        properties=DeploymentProperties(model=DeploymentModel(
            format="OpenAI", name=model, version="1", source=wire.get("source"),
            source_account=wire.get("sourceAccount"))))
    try:
        result = _put_patiently(arm(deps, target), target, name, body)
    except HttpResponseError as exc:
        raise SpokeError(f"{target.account} ({target.region}): deploying {model!r} as {name!r} failed: "
                         f"{_reason(exc)}{_rights_hint(exc, target, deps.settings.hub)}") from exc
    deployed = _from_sdk(result)
    if deployed.provisioning_state.lower() != "succeeded":
        raise SpokeError(f"{target.account} ({target.region}): deployment {name!r} ended in state "
                         f"{deployed.provisioning_state!r}")
    return deployed


PUT_ATTEMPTS = 3   # after the SDK's own retries (3 per status): a busy ARM must not fail a whole environment


def _put_patiently(client: Any, target: Target, name: str, body: Any) -> Any:
    """PUT and wait; a 429/5xx that outlasted the SDK's retries is tried again (a PUT is idempotent)."""
    for attempt in range(1, PUT_ATTEMPTS + 1):
        try:
            return client.deployments.begin_create_or_update(target.resource_group, target.account, name,
                                                             body).result()
        except HttpResponseError as exc:
            if attempt == PUT_ATTEMPTS or not (exc.status_code == 429 or (exc.status_code or 0) >= 500):
                raise
            log.warning("%s: PUT %s answered %s; trying again (%d of %d)", target.account, name,
                        exc.status_code, attempt + 1, PUT_ATTEMPTS)
            time.sleep(2.0 * attempt * random.uniform(0.8, 1.2))
    raise AssertionError("unreachable")


def get(deps: Deps, target: Target, name: str) -> SpokeDeployment | None:
    """The deployment, or None if there is none (or it is being deleted)."""
    try:
        result = arm(deps, target).deployments.get(target.resource_group, target.account, name)
    except ResourceNotFoundError:
        return None
    except HttpResponseError as exc:
        if exc.status_code == 404:
            return None
        raise
    found = _from_sdk(result)
    return None if found.provisioning_state.lower() in _GONE_STATES else found


def delete(deps: Deps, target: Target, name: str) -> bool:
    """Delete and wait; False if there was nothing to delete."""
    refuse_if_foreign(deps, target, name, "delete")
    try:
        arm(deps, target).deployments.begin_delete(target.resource_group, target.account, name).result()
    except ResourceNotFoundError:
        return False
    except HttpResponseError as exc:
        if exc.status_code == 404:
            return False
        raise SpokeError(f"{target.account} ({target.region}): deleting {name!r} failed: {_reason(exc)}") from exc
    return True


def foreign(deps: Deps, target: Target, name: str) -> str | None:
    """A clear message if `name` on this spoke exists and was not created by ftops, else None."""
    existing = get(deps, target, name)
    if existing is None or existing.tags.get(MANAGED_TAG) == MANAGED_VALUE:
        return None
    return (f"{target.account} ({target.region}): deployment {name!r} exists and is not managed by ftops "
            f"(no tag {MANAGED_TAG}={MANAGED_VALUE}; it serves {existing.model!r}); ftops never replaces or "
            "deletes it: choose another deployment_name in run.json")


def refuse_if_foreign(deps: Deps, target: Target, name: str, action: str) -> None:
    problem = foreign(deps, target, name)
    if problem:
        raise NotManagedByFtops(f"not going to {action}: {problem}")


def list_all(deps: Deps, target: Target) -> list[SpokeDeployment]:
    client = arm(deps, target)
    return [_from_sdk(d) for d in client.deployments.list(target.resource_group, target.account)]


def check_quota(deps: Deps, target: Target, name: str) -> str | None:
    """A clear message if deploying `name` would exceed the spoke's fine-tuned deployment quota, else None.
    Replacing `name` in place does not add one, so it is not counted."""
    current = [d for d in list_all(deps, target)
               if d.fine_tuned and d.name != name and d.provisioning_state.lower() not in _GONE_STATES]
    if len(current) >= target.quota:
        names = ", ".join(sorted(d.name for d in current))
        return (f"{target.account} ({target.region}) already has {len(current)} fine-tuned deployments "
                f"({names}); its quota is {target.quota}: retire a run or raise the quota first")
    return None


_endpoints: dict[str, str] = {}
_endpoints_lock = threading.Lock()


def endpoint(deps: Deps, target: Target) -> str:
    """The spoke's data-plane endpoint (`properties.endpoint` of the account), read once per process."""
    key = target.resource_id.lower() + "|" + deps.settings.arm_endpoint
    with _endpoints_lock:
        cached = _endpoints.get(key)
    if cached:
        return cached
    account = arm(deps, target).accounts.get(target.resource_group, target.account)
    url = (getattr(account.properties, "endpoint", None) or "").rstrip("/")
    if not url:
        raise SpokeError(f"{target.account}: ARM returned no properties.endpoint for the account")
    with _endpoints_lock:
        _endpoints[key] = url
    return url


def chat_client(deps: Deps, target: Target, *, max_retries: int = 2) -> Any:
    return deps.openai_client(endpoint(deps, target), tenant_id=target.tenant, client_id=target.client_id,
                              max_retries=max_retries)


def ping(client: Any, name: str, *, timeout: float = 60.0) -> str:
    """A minimal real chat completion (what Azure counts as use); returns the answer text."""
    response = client.with_options(timeout=timeout).chat.completions.create(
        model=name, messages=[{"role": "user", "content": SMOKE_PROMPT}], max_completion_tokens=16)
    if not response.choices:
        raise SpokeError(f"deployment {name!r} answered without choices")
    return response.choices[0].message.content or ""


def smoke_test(deps: Deps, target: Target, name: str, *, timeout_s: float,
               first_delay_s: float = 1.0) -> SmokeResult:
    """A real chat completion, retried patiently: right after provisioning a deployment can answer 404 or
    429/5xx for a while. Errors that waiting cannot fix (auth, bad request) fail at once."""
    import openai
    retryable = (openai.NotFoundError, openai.RateLimitError, openai.InternalServerError,
                 openai.APIConnectionError, openai.APITimeoutError, openai.ConflictError)
    client = chat_client(deps, target)
    started, attempts, delay = time.monotonic(), 0, first_delay_s
    while True:
        attempts += 1
        t0 = time.monotonic()
        try:
            answer = ping(client, name)
            return SmokeResult(True, attempts, (time.monotonic() - t0) * 1000, answer)
        except retryable as exc:
            last = f"{type(exc).__name__}: {exc}"
        except openai.APIError as exc:
            return SmokeResult(False, attempts, (time.monotonic() - t0) * 1000, f"{type(exc).__name__}: {exc}")
        if time.monotonic() - started + delay > timeout_s:
            return SmokeResult(False, attempts, (time.monotonic() - t0) * 1000,
                               f"no answer within {timeout_s:.0f}s; last error {last}")
        time.sleep(delay * random.uniform(0.8, 1.2))   # jitter: many targets retry at once
        delay = min(delay * 2, 30.0)


def _from_sdk(d: Any) -> SpokeDeployment:
    props = getattr(d, "properties", None)
    model = getattr(props, "model", None)
    sku = getattr(d, "sku", None)
    return SpokeDeployment(
        name=d.name, model=getattr(model, "name", None) or "",
        provisioning_state=str(getattr(props, "provisioning_state", None) or "Unknown"),
        sku=getattr(sku, "name", None) or "Standard", capacity=getattr(sku, "capacity", None) or 1,
        tags=dict(getattr(d, "tags", None) or {}), source=getattr(model, "source", None),
        source_account=getattr(model, "source_account", None))


def _rights_hint(exc: HttpResponseError, target: Target, hub: HubSettings) -> str:
    """What to grant when ARM refused for rights: deploying from the hub needs them on both accounts."""
    if exc.status_code != 403:
        return ""
    who = f"the identity with client id {target.client_id}" if target.client_id else "the app's managed identity"
    return (f" — {who} needs a role that can deploy on {target.account} and read the hub {hub.resource_id} "
            "(Cognitive Services OpenAI Contributor on both: a model deployed across subscriptions or tenants "
            "needs rights on the source and the destination)")


def _reason(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None) or exc.message or str(exc)
    return f"{exc.status_code} {code}: {message}" if code else f"{exc.status_code}: {message}"
