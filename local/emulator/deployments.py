"""ARM deployment rules: where a fine-tuned model may be deployed, the per-account quota, provisioning."""

from __future__ import annotations

import re
from typing import Any

from .auth import SOURCE_ACTION, check_rights
from .core import Emulator
from .state import Account, ApiError, DeploymentRecord, Operation

DEVELOPER_LIFETIME_S = 24 * 3600   # Learn fine-tuning-deploy: Developer deployments live 24 hours
BASE_SKUS = {"standard", "globalstandard", "datazonestandard", "developertier", "provisionedmanaged",
             "globalprovisionedmanaged", "globalbatch", "datazonebatch", "datazoneprovisionedmanaged"}


def _model_owner(emu: Emulator, target: Account, model: dict[str, Any], aux_tenants: list[str],
                 caller: str | None = None, aux: dict[str, str] | None = None) -> bool:
    """Check where a model comes from; returns whether it is fine-tuned. Raises ApiError when refused.

    A model from another account needs the caller's rights there too (Learn fine-tuning-deploy: the
    identity "must have access to both the source and destination"): the main token's principal for
    `source` (same tenant), the source tenant's auxiliary token's principal for `sourceAccount`."""
    name = str(model.get("name") or "")
    found = emu.find_model(name)
    source, source_account = model.get("source"), model.get("sourceAccount")
    if found is None:
        if emu.looks_finetuned(name):
            raise ApiError(400, "DeploymentModelNotSupported", f"The model '{name}' was not found.")
        return False  # a base model: deployable anywhere
    owner = emu.accounts[found[0].account]
    if owner.name == target.name and not source and not source_account:
        return True
    named_id = source or source_account
    named = emu.account_by_id(str(named_id)) if named_id else None
    if named is None or named.name != owner.name:
        raise ApiError(
            400, "DeploymentModelNotSupported",
            f"The model '{name}' was not found in account '{target.name}'"
            + (f" nor in source '{named_id}'." if named_id else "; name its account in properties.model.source."),
        )
    if source:
        if owner.tenant != target.tenant:
            raise ApiError(
                400, "InvalidResourceProperties",
                f"The source account '{source}' is in another tenant; use properties.model.sourceAccount "
                "with an x-ms-authorization-auxiliary token for that tenant.",
            )
        check_rights(caller, owner, SOURCE_ACTION)
        return True
    if owner.tenant != target.tenant and owner.tenant not in aux_tenants:
        raise ApiError(
            401, "InvalidAuthenticationTokenTenant",
            f"An auxiliary token for tenant '{owner.tenant}' (the tenant of '{source_account}') is required "
            "in the x-ms-authorization-auxiliary header.",
        )
    check_rights(caller if owner.tenant == target.tenant else (aux or {}).get(owner.tenant), owner, SOURCE_ACTION)
    return True


# Learn fine-tuning-deploy "Deployment Types": where a fine-tuned model of each base model may be deployed,
# by sku ("*": every region). Other skus (data zone, batch, global provisioned) are not offered for them.
_EUS2, _NCUS, _SWC, _SWW = "eastus2", "northcentralus", "swedencentral", "switzerlandwest"
_GPT41 = ("gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano")
FINE_TUNED_DEPLOYMENT: dict[str, dict[str, frozenset[str]]] = {
    "standard": {"o4-mini": frozenset({_EUS2, _SWC}), "gpt-4o": frozenset({_EUS2, _SWC}),
                 "gpt-4o-mini": frozenset({_NCUS, _SWC}), "gpt-35-turbo": frozenset({_EUS2, _NCUS, _SWC, _SWW}),
                 **{m: frozenset({_NCUS, _SWC}) for m in _GPT41}},
    "globalstandard": {m: frozenset({"*"}) for m in ("o4-mini", "gpt-4o", "gpt-4o-mini", *_GPT41)},
    "developertier": {m: frozenset({"*"}) for m in _GPT41},
    "provisionedmanaged": {"gpt-4.1": frozenset({_SWC}), "gpt-4o": frozenset({_NCUS, _SWC}),
                           "gpt-4o-mini": frozenset({_NCUS, _SWC})},
}
_VERSION = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


def _fine_tuned_base(emu: Emulator, name: str) -> str:
    """The base model (no version) of a fine-tuned model or checkpoint id the emulator knows."""
    found = emu.find_model(name)
    base = found[0].model if found else name.split(".ft-", 1)[0]
    return _VERSION.sub("", base.split(".ft-", 1)[0].split(":", 1)[0].lower())


def _check_fine_tuned_sku(emu: Emulator, account: Account, name: str, sku: str) -> None:
    """A fine-tuned model deploys only as the documented types, and as Standard only in listed regions."""
    base = _fine_tuned_base(emu, name)
    regions = FINE_TUNED_DEPLOYMENT.get(sku.lower(), {}).get(base)
    if regions is None:
        raise ApiError(400, "InvalidSkuName", f"The sku '{sku}' is not supported for fine-tuned model '{name}' "
                                              f"(base model {base}).")
    if "*" not in regions and account.region.lower() not in regions:
        raise ApiError(400, "InvalidResourceProperties", f"The specified SKU '{sku}' for model '{name}' is not "
                                                         f"supported in this region '{account.region}'.")


def _quota_name(emu: Emulator, model: dict[str, Any], sku: dict[str, Any], finetuned: bool) -> str:
    """The quota a deployment draws on: tokens per minute of its base model (fine-tunes apart), per sku."""
    name = str(model.get("name") or "")
    if finetuned:
        found = emu.find_model(name)
        base = found[0].model if found else name.split(".ft-", 1)[0]
        name = f"{base.split('.ft-', 1)[0]}-finetune"
    kind = str(sku.get("name") or "Standard")
    return f"{name}" if kind.lower() == "standard" else f"{name} - {kind}"


def _check_tpm_quota(emu: Emulator, account: Account, name: str, model: dict[str, Any], sku: dict[str, Any],
                     finetuned: bool) -> None:
    """ARM's `InsufficientQuota` when the region's TPM quota (per subscription) cannot take the capacity."""
    limit = emu.durations.tpm_quota.get(account.region)
    if limit is None:
        return
    quota = _quota_name(emu, model, sku, finetuned)
    used = 0
    for (acc, other), d in emu.deployments.items():
        holder = emu.accounts[acc]
        if (acc, other) == (account.name, name) or d.state == "Deleting":
            continue
        if holder.subscription == account.subscription and holder.region == account.region and \
                _quota_name(emu, d.model, d.sku, d.finetuned) == quota:
            used += int(d.sku.get("capacity") or 1)
    wanted = int(sku.get("capacity") or 1)
    if used + wanted > limit:
        label = f"Tokens Per Minute (thousands) - {quota}"
        raise ApiError(400, "InsufficientQuota",
                       f"This operation require {wanted} new capacity in quota {label}, which is bigger than the "
                       f"current available capacity {max(0, limit - used)}. The current quota usage is {used} "
                       f"and the quota limit is {limit} for quota {label}.")


def create_or_update(
    emu: Emulator, account: Account, name: str, body: dict[str, Any], aux_tenants: list[str], *,
    caller: str | None = None, aux: dict[str, str] | None = None,
) -> tuple[DeploymentRecord, bool, Operation]:
    with emu.lock:
        emu.tick()
        properties = dict(body.get("properties") or {})
        model = properties.get("model") or {}
        sku = dict(body.get("sku") or {"name": "Standard", "capacity": 1})
        if not model.get("name"):
            raise ApiError(400, "InvalidResourceProperties", "properties.model.name is required.")
        if str(sku.get("name", "")).lower() not in BASE_SKUS:
            raise ApiError(400, "InvalidSkuName", f"The sku '{sku.get('name')}' is not supported.")
        finetuned = _model_owner(emu, account, model, aux_tenants, caller, aux)
        if finetuned:
            _check_fine_tuned_sku(emu, account, str(model["name"]), str(sku.get("name", "")))
        elif str(sku.get("name", "")).lower() == "developertier":
            # Developer tier (no SLA, deleted after 24 h) is for evaluating gpt-4.1-family fine-tunes only
            raise ApiError(400, "InvalidSkuName", f"The sku 'DeveloperTier' is not supported for model "
                                                  f"'{model['name']}' (fine-tuned gpt-4.1 family models only).")
        existing = emu.deployments.get((account.name, name))
        _check_tpm_quota(emu, account, name, model, sku, finetuned)
        if finetuned:
            others = [d for (acc, n), d in emu.deployments.items()
                      if acc == account.name and n != name and d.finetuned and d.state != "Deleting"]
            if len(others) >= account.max_finetuned_deployments:
                raise ApiError(
                    400, "InsufficientQuota",
                    f"The account '{account.name}' already has {len(others)} fine-tuned model deployments; "
                    f"the limit is {account.max_finetuned_deployments}.",
                )
        properties.pop("provisioningState", None)
        now = emu.now()
        fail = account.name in emu.faults.fail_deployments_on
        countdown = emu.faults.fail_next_deployments
        if countdown.get(account.name, 0) > 0:  # the next N accepted PUTs here fail, later ones succeed
            countdown[account.name] -= 1
            fail = True
        ready_at = now + emu.durations.deployment
        # a new deployment reaches the data plane after ARM says Succeeded; an update keeps serving
        serving_at = ready_at + (emu.durations.not_ready_seconds if existing is None else 0.0)
        record = DeploymentRecord(
            account=account.name, name=name, sku=sku, properties=properties, tags=body.get("tags"),
            state="Accepted" if existing else "Creating", ready_at=ready_at, fail=fail, finetuned=finetuned,
            serving_at=serving_at, warm_at=serving_at + emu.durations.warmup_seconds,
            expires_at=(existing.expires_at if existing and existing.expires_at else now + DEVELOPER_LIFETIME_S)
            if str(sku.get("name", "")).lower() == "developertier" else None,
        )
        emu.deployments[(account.name, name)] = record
        op = Operation(id=emu.new_id("op", ""), account=account.name, deployment=name, kind="put", created_at=now)
        emu.operations[op.id] = op
        return record, existing is None, op


def delete(emu: Emulator, account: Account, name: str) -> Operation | bool:
    """The delete's operation to poll; True if it finished at once (deletion takes no time), False if there
    was nothing to delete."""
    with emu.lock:
        record = emu.deployment(account.name, name)
        if record is None:
            return False
        now = emu.now()
        if emu.durations.deletion <= 0:   # finished at once: ARM answers 200, no operation to poll
            del emu.deployments[(account.name, name)]
            return True
        record.state, record.delete_at = "Deleting", now + emu.durations.deletion
        op = Operation(id=emu.new_id("op", ""), account=account.name, deployment=name, kind="delete", created_at=now)
        emu.operations[op.id] = op
        return op


def operation_status(emu: Emulator, op: Operation) -> tuple[str, dict[str, Any] | None]:
    """Azure-AsyncOperation status of an operation: InProgress | Succeeded | Failed (+ error)."""
    record = emu.deployment(op.account, op.deployment)
    if op.kind == "delete":
        return ("Succeeded", None) if record is None or record.state != "Deleting" else ("InProgress", None)
    if record is None:  # vanished or deleted while provisioning
        return "Failed", {"code": "DeploymentNotFound", "message": f"Deployment '{op.deployment}' was removed."}
    if record.state == "Failed":
        return "Failed", {"code": "DeploymentFailed",
                          "message": f"The deployment '{op.deployment}' failed to provision (emulated fault)."}
    return ("Succeeded", None) if record.state == "Succeeded" else ("InProgress", None)


def to_json(record: DeploymentRecord, account: Account) -> dict[str, Any]:
    properties = {
        **record.properties,
        "provisioningState": record.state,
        "capabilities": {"chatCompletion": "true"},
    }
    properties.setdefault("versionUpgradeOption", "NoAutoUpgrade")
    properties.setdefault("raiPolicyName", "Microsoft.DefaultV2")
    body: dict[str, Any] = {
        "id": f"{account.resource_id}/deployments/{record.name}",
        "name": record.name,
        "type": "Microsoft.CognitiveServices/accounts/deployments",
        "sku": record.sku,
        "properties": properties,
    }
    if record.tags is not None:
        body["tags"] = record.tags
    return body
