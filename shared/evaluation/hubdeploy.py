"""Temporary evaluation deployments on the hub: which candidates, which sku, what names; create and delete.

Names are derived from the run id, so a retried message PUTs the same deployments again (ARM PUT is
idempotent) instead of leaking new ones. Developer tier (no hosting fee, deleted by Azure after 24 h)
for fine-tuned models of the gpt-4.1 family; Standard capacity 1 otherwise.
"""
from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.azure.arm_deployments import ArmAccount
from shared.azure.chat import ChatFn, RateLimited
from shared.evaluation.examples import Example
from shared.evaluation.runner import Candidate
from shared.run.config import HubSettings

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.app.ports import ArmDeployments

log = logging.getLogger(__name__)

DEVELOPER_SKU = "developertier"
DEVELOPER_CAPACITY = 50                      # the documented example; Developer tier bills tokens, not capacity
DEVELOPER_API_VERSION = "2025-07-01-preview"  # AZURE-FACTS: the api-version Developer tier needs
STANDARD_SKU = "standard"
FINE_TUNED_CAPACITY = 1
BASE_CAPACITY = 10                           # base models: 10K TPM, so 200 questions do not crawl on 429s
MAX_CHECKPOINTS = 2                          # Azure keeps the last three epochs; the third is the final model
_VERSION = re.compile(r"^(?P<name>.+?)-(?P<version>\d{4}-\d{2}-\d{2})$")


def deployment_prefix(run_id: str) -> str:
    """`ev-<slug>-<hash>`: readable in the portal, unique per run, well inside the 64-character limit."""
    slug = re.sub(r"[^a-z0-9]+", "-", run_id.lower()).strip("-")[:28].strip("-") or "run"
    return f"ev-{slug}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def developer_tier_allowed(base_model: str) -> bool:
    from shared.run.models import UnknownModelError, model_facts
    try:
        return model_facts(base_model).developer_tier
    except UnknownModelError:
        return False


def plan_candidates(run_id: str, fine_tuned_model: str, base_model: str,
                    checkpoints: Sequence[object], *, final_step: int | None = None) -> list[Candidate]:
    """Final model first, then base, then the last checkpoints (the order deployments are created in:
    the ones the verdict cannot do without come first).

    Checkpoints are what polling recorded (`shared.azure.hub.Hub.checkpoints`: `id`, `step`, `model`; the API's
    own `step_number` is read too) and are deployed by their checkpoint id (`ftchkpt-…`), as Learn's
    fine-tuning-deploy page documents. A checkpoint at the job's last step is the final model under
    another name: deploying it again would only spend hub quota. That step comes from the training
    metrics, else it is the newest checkpoint's (the last epoch's checkpoint is the final model)."""
    prefix = deployment_prefix(run_id)
    developer = developer_tier_allowed(base_model)
    sku, capacity = (DEVELOPER_SKU, DEVELOPER_CAPACITY) if developer else (STANDARD_SKU, FINE_TUNED_CAPACITY)
    plan = [Candidate("final", "final", fine_tuned_model, f"{prefix}-final", sku, capacity),
            Candidate("base", "base", base_model, f"{prefix}-base", STANDARD_SKU, BASE_CAPACITY)]
    usable: dict[int, str] = {}
    for ckpt in checkpoints:
        if not isinstance(ckpt, Mapping):
            continue
        model = ckpt.get("id") or ckpt.get("fine_tuned_model_checkpoint")
        step = _int(ckpt.get("step", ckpt.get("step_number")))
        if model and model != fine_tuned_model and step is not None:
            usable[step] = str(model)
    last = final_step if final_step is not None else max(usable, default=None)
    kept = sorted(step for step in usable if step != last)[-MAX_CHECKPOINTS:]
    for step in kept:
        plan.append(Candidate(f"checkpoint step {step}", "checkpoint", usable[step], f"{prefix}-ckpt{step}",
                              sku, capacity, step=step))
    return plan


def champion_model(deps: Deps, run: Any) -> tuple[str, str] | None:
    """(environment, model) the run's deployment name serves today, from the registry's active slots: the
    last of the run's environments that has one (prod before test before dev: what users get). None when
    nothing is served under that name yet, or it already serves this run's model."""
    from shared.run.rules import deployment_name
    lister = getattr(deps.registry, "list_deployments", None)
    if lister is None:
        return None
    name = deployment_name(run)
    served = {r.environment: r.model for r in lister(state="active") if r.deployment == name}
    for environment in reversed(run.environments or list(served)):
        model = served.get(environment)
        if model:
            return None if model == run.fine_tuned_model else (environment, model)
    return None


def plan_champion(deps: Deps, run: Any, base_model: str) -> Candidate | None:
    """The champion as a candidate: deployed on the hub like the final model (a fine-tuned model lives on
    the hub whatever spoke serves it), under the run's own evaluation prefix."""
    found = champion_model(deps, run)
    if found is None:
        return None
    environment, model = found
    developer = developer_tier_allowed(base_model)
    sku, capacity = (DEVELOPER_SKU, DEVELOPER_CAPACITY) if developer else (STANDARD_SKU, FINE_TUNED_CAPACITY)
    return Candidate("champion", "champion", model, f"{deployment_prefix(run.run_id)}-champ", sku, capacity,
                     environment=environment)


def _model_spec(candidate: Candidate) -> dict[str, str]:
    if candidate.kind != "base":
        return {"name": candidate.model, "version": "1"}   # fine-tuned models and checkpoints: version "1"
    match = _VERSION.match(candidate.model)
    if match:  # gpt-4.1-mini-2025-04-14 → name gpt-4.1-mini, version 2025-04-14
        return {"name": match["name"], "version": match["version"]}
    return {"name": candidate.model}                          # no version: ARM picks the default one


def hub_account(hub: HubSettings) -> ArmAccount:
    """The hub as ARM addresses it (the app's own identity in the hub's tenant)."""
    return ArmAccount(hub.subscription, hub.resource_group, hub.account, hub.account, tenant=hub.tenant)


def create_deployment(deployments: ArmDeployments, hub: ArmAccount, candidate: Candidate, *,
                      tags: Mapping[str, str]) -> None:
    """PUT the deployment and wait until it is provisioned. Raises the ARM client's DeploymentError kinds.
    One attempt: a throttled evaluation is retried as a whole by its message."""
    deployments.put(hub, candidate.deployment, _model_spec(candidate), sku=candidate.sku,
                    capacity=candidate.capacity, tags=tags, attempts=1,
                    api_version=DEVELOPER_API_VERSION if candidate.sku == DEVELOPER_SKU else None,
                    doing=f"deploying {candidate.model} as {candidate.deployment} on {hub.name}")
    log.info("evaluation deployment %s (%s, %s) is ready", candidate.deployment, candidate.model, candidate.sku)


# A minimal real question: the probe is one billed completion per evaluation deployment.
READINESS_PROBE = Example(line=0, messages=[{"role": "user", "content": "Reply with OK."}], reference="OK")


def wait_until_serving(chat: ChatFn, deployment: str, *, timeout_s: float, first_delay_s: float = 0.25,
                       sleep: Callable[[float], None] = time.sleep,
                       clock: Callable[[], float] = time.monotonic) -> int | None:
    """ARM's `Succeeded` is not the data plane's: a new deployment answers 404 (DeploymentNotFound, "if you created
    the deployment within the last 5 minutes, please wait") or 429 for a while. Ask one small real question until
    it is answered; returns the attempts it took, or None when `timeout_s` passed first. Any other error means the
    deployment is reachable: the examples' own calls (and the error gate) judge it."""
    import openai
    started, delay, attempts = clock(), first_delay_s, 0
    while True:
        attempts += 1
        try:
            chat(deployment, READINESS_PROBE)
            return attempts
        except (openai.NotFoundError, RateLimited) as exc:
            waited = getattr(exc, "retry_after", None) or delay
            if clock() - started + waited > timeout_s:
                log.warning("deployment %s still does not answer after %.0f s: %s", deployment, timeout_s, exc)
                return None
            sleep(waited)
            delay = min(delay * 2, 15.0)
        except Exception as exc:   # noqa: BLE001 - served, if badly: the evaluation itself records it
            log.info("deployment %s answers, with an error: %s", deployment, exc)
            return attempts


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
