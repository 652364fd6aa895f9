"""The spokes port (`Deps.spokes`): one spoke account through the ARM deployment client
(shared.azure.arm_deployments, whose errors it raises) and its data plane: deploy, read, delete, list, count,
smoke test.

Everything here acts on a single target; `shared.stages.deployment` decides what to do across an environment.
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
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.azure.arm_deployments import (
    MANAGED_TAG,
    MANAGED_VALUE,
    ArmAccount,
    ArmDeployment,
    DeploymentError,
)
from shared.run.config import HubSettings, Settings
from shared.run.topology import Target

if TYPE_CHECKING:
    from shared.app.ports import ArmDeployments

log = logging.getLogger(__name__)

SMOKE_PROMPT = "Reply with OK."


@dataclass(frozen=True)
class SmokeResult:
    ok: bool
    attempts: int
    latency_ms: float
    detail: str

    def evidence(self) -> dict[str, Any]:
        return {"ok": self.ok, "attempts": self.attempts, "latency_ms": round(self.latency_ms, 1),
                "detail": self.detail[:200]}


def is_cross_tenant(target: Target, hub: HubSettings) -> bool:
    return bool(hub.tenant) and target.tenant != hub.tenant


def label(target: Target) -> str:
    """How messages name a spoke."""
    return f"{target.account} ({target.region})"


def account(target: Target, hub: HubSettings) -> ArmAccount:
    """The spoke as ARM addresses it: its tenant and credential, plus the hub tenant's auxiliary token when
    the model crosses tenants (ARM checks both tenants' tokens on that PUT)."""
    aux = (hub.tenant,) if is_cross_tenant(target, hub) and hub.tenant else ()
    return ArmAccount(target.subscription, target.resource_group, target.account,
                      label(target), tenant=target.tenant, client_id=target.client_id,
                      auxiliary_tenants=aux)


def model_body(target: Target, hub: HubSettings, model: str) -> dict[str, Any]:
    """`properties.model` for a fine-tuned model from the hub (wire names, for audit and tests)."""
    body: dict[str, Any] = {"format": "OpenAI", "name": model, "version": "1"}
    if target.resource_id.lower() == hub.resource_id.lower():
        return body
    body["sourceAccount" if is_cross_tenant(target, hub) else "source"] = hub.resource_id
    return body


class Spokes:
    """The spokes port (`Deps.spokes`): every method acts on one target, through the ARM deployment client
    for the control plane and an openai client for the data plane."""

    def __init__(self, settings: Settings, arm: ArmDeployments, openai_client: Callable[..., Any]) -> None:
        self._settings, self._arm, self._openai_client = settings, arm, openai_client
        self._endpoints: dict[str, str] = {}
        self._endpoints_lock = threading.Lock()

    def _at(self, target: Target) -> ArmAccount:
        return account(target, self._settings.hub)

    def deploy(self, target: Target, name: str, model: str, *, tags: dict[str, str], sku: str | None = None,
               capacity: int | None = None) -> ArmDeployment:
        """Create or replace deployment `name` and wait for provisioning; a DeploymentError if it does not
        succeed, NotManagedByFtops if the name belongs to someone else."""
        at = self._at(target)
        self._arm.refuse_if_foreign(at, name, "replace")
        wire = model_body(target, self._settings.hub, model)
        spec = {"name": model, "version": "1", "source": wire.get("source"), "source_account": wire.get("sourceAccount")}
        deployed = self._arm.put(at, name, spec, sku=sku or target.sku, capacity=capacity or target.capacity,
                                 tags={**(tags or {}), MANAGED_TAG: MANAGED_VALUE},
                                 doing=f"{at.label}: deploying {model!r} as {name!r} failed",
                                 rights_hint=_rights_hint(target, self._settings.hub))
        if deployed.provisioning_state.lower() != "succeeded":
            raise DeploymentError(f"{at.label}: deployment {name!r} ended in state {deployed.provisioning_state!r}")
        return deployed

    def get(self, target: Target, name: str) -> ArmDeployment | None:
        """The deployment, or None if there is none (or it is being deleted)."""
        return self._arm.get(self._at(target), name)

    def delete(self, target: Target, name: str) -> bool:
        """Delete and wait; False if there was nothing to delete. Never someone else's deployment."""
        at = self._at(target)
        self._arm.refuse_if_foreign(at, name, "delete")
        return self._arm.delete(at, name)

    def foreign(self, target: Target, name: str) -> str | None:
        """A clear message if `name` on this spoke exists and was not created by ftops, else None."""
        return self._arm.foreign(self._at(target), name)

    def check_quota(self, target: Target, name: str) -> str | None:
        """A clear message if deploying `name` would exceed the spoke's fine-tuned deployment quota, else None."""
        return self._arm.quota_problem(self._at(target), name, target.quota)

    def endpoint(self, target: Target) -> str:
        """The spoke's data-plane endpoint (`properties.endpoint` of the account), read once (Deps: once per process)."""
        key = target.resource_id.lower() + "|" + self._settings.arm_endpoint
        with self._endpoints_lock:
            cached = self._endpoints.get(key)
        if cached:
            return cached
        url = self._arm.endpoint(self._at(target))
        with self._endpoints_lock:
            self._endpoints[key] = url
        return url

    def chat_client(self, target: Target, *, max_retries: int = 2) -> Any:
        return self._openai_client(self.endpoint(target), tenant_id=target.tenant, client_id=target.client_id,
                                   max_retries=max_retries)

    def stored_completions(self, target: Target, *, model: str, metadata: dict[str, str], after: str | None,
                           limit: int = 100, newest_first: bool = False) -> tuple[list[dict[str, Any]], bool]:
        """One page of the spoke's stored completions of `model` (v1 `GET /chat/completions`, oldest first, or
        newest first for a sample of what is recent), each with its request messages
        (`GET /chat/completions/{id}/messages`); and whether more follow."""
        client = self._openai_client(self.endpoint(target), tenant_id=target.tenant, client_id=target.client_id,
                                     max_retries=3, v1=True)
        page = client.chat.completions.list(model=model, metadata=metadata or None, limit=limit,
                                            order="desc" if newest_first else "asc", **({"after": after} if after else {}))
        found = []
        for completion in page.data:
            messages = [m.model_dump(exclude_none=True) for m in
                        client.chat.completions.messages.list(completion.id, limit=100, order="asc").data]
            found.append({"completion": completion.model_dump(exclude_none=True), "messages": messages})
        return found, bool(page.has_more)

    def ping(self, target: Target, name: str, *, max_retries: int = 2, timeout: float = 60.0) -> str:
        """One minimal real chat completion (what Azure counts as use); returns the answer text."""
        return ping(self.chat_client(target, max_retries=max_retries), name, timeout=timeout)

    def smoke_test(self, target: Target, name: str, *, timeout_s: float, first_delay_s: float = 1.0) -> SmokeResult:
        """A real chat completion, retried patiently: right after provisioning a deployment can answer 404 or
        429/5xx for a while. Errors that waiting cannot fix (auth, bad request) fail at once."""
        import openai
        retryable = (openai.NotFoundError, openai.RateLimitError, openai.InternalServerError,
                     openai.APIConnectionError, openai.APITimeoutError, openai.ConflictError)
        client = self.chat_client(target)
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


def ping(client: Any, name: str, *, timeout: float = 60.0) -> str:
    """A minimal real chat completion on an openai client; returns the answer text."""
    response = client.with_options(timeout=timeout).chat.completions.create(
        model=name, messages=[{"role": "user", "content": SMOKE_PROMPT}], max_completion_tokens=16)
    if not response.choices:
        raise DeploymentError(f"deployment {name!r} answered without choices")
    return response.choices[0].message.content or ""


def _rights_hint(target: Target, hub: HubSettings) -> str:
    """What to grant when ARM refused for rights: deploying from the hub needs them on both accounts."""
    who = f"the identity with client id {target.client_id}" if target.client_id else "the app's managed identity"
    return (f" — {who} needs a role that can deploy on {target.account} and read the hub {hub.resource_id} "
            "(Cognitive Services OpenAI Contributor on both: a model deployed across subscriptions or tenants "
            "needs rights on the source and the destination)")


def at_once[T, R](fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """fn over the targets (or slots) of one environment concurrently, results in order: they are few, a
    thread each, and a deploy waits for the slowest spoke rather than for their sum."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(len(items), 32), thread_name_prefix="spoke") as pool:
        return list(pool.map(fn, items))
