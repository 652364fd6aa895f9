"""The spokes configuration: environments in order, each with the spoke accounts a run is deployed to.

Checked once at start-up (the bootstrap keeps it in Deps), so a wrong setting stops the app with a message naming the exact
setting path (`SPOKES_CONFIG: environments[2].targets[0].region is missing`) instead of failing half-way
through a deployment.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic import Field as PydanticField

from shared.run.config import ConfigError, Settings
from shared.run.models import DEPLOYMENT_TYPES, DEVELOPER, UnknownModelError, model_facts

SETTING = "SPOKES_CONFIG"
DEFAULT_QUOTA = 10   # fine-tuned deployments per resource: Azure's default limit (Learn quotas-limits, 2026-02-17; it was 5)
# Deployment types that can host a fine-tuned model (fine-tuning-deploy "Deployment types"; ARM sku names
# are case-insensitive): Standard, Global Standard, Developer, Provisioned. Data-zone and global provisioned
# types are not listed for fine-tuned models, so they are refused.
SKUS = {kind.lower(): kind for kind in DEPLOYMENT_TYPES}
ACCEPT_DEVELOPER = "accepts_developer_expiry"   # environment key: Developer targets live 24 h, and that is fine
_ENV_KEYS = {"name", "requires_approval", "approvers", "allow_single_region", "targets", "retire", ACCEPT_DEVELOPER,
             "harvest"}
_RETIRE_KEYS = {"approval_denied", "failed", "superseded", "awaiting_approval_days"}
_TARGET_REQUIRED = ("subscription", "resource_group", "account", "region", "tenant", "sku", "capacity")
_TARGET_KEYS = set(_TARGET_REQUIRED) | {"credential", "quota"}
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_OBJECT_ID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class Target:
    """One spoke account of an environment."""
    subscription: str
    resource_group: str
    account: str
    region: str
    tenant: str
    sku: str
    capacity: int
    client_id: str | None = None   # multi-tenant app whose federated credential is the app's identity
    quota: int = DEFAULT_QUOTA     # fine-tuned deployments this resource may hold

    @property
    def resource_id(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.CognitiveServices/accounts/{self.account}")

    def describe(self) -> dict[str, str]:
        return {"account": self.account, "region": self.region, "subscription": self.subscription,
                "tenant": self.tenant}


@dataclass(frozen=True)
class RetirePolicy:
    """Which of an environment's deployments are retired automatically (shared.stages.retirement): they bill by the
    hour for runs that will never reach the last environment. The defaults retire all of them."""
    approval_denied: bool = True                     # the run's promotion was denied
    failed: bool = True                              # the run failed later (a deployment, a retrain)
    superseded: bool = True                          # a newer run under the same deployment name is deployed
    awaiting_approval_days: float | None = 7.0       # waiting for approval longer than this; None: never


class HarvestPolicy(BaseModel):
    """The flywheel for one environment (shared.stages.harvest; docs/flywheel.md): off unless configured."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    sources: tuple[Literal["stored_completions", "traffic"], ...] = ("stored_completions", "traffic")
    metadata: dict[str, str] = {}              # stored completions: only those with these metadata pairs
    max_exchanges: int = PydanticField(2000, ge=1, le=100_000)   # read per tick and deployment name
    max_age_days: float = PydanticField(14.0, gt=0, le=30)       # older exchanges are skipped
    min_examples: int = PydanticField(100, ge=10, le=1_000_000)  # curated examples that make a run
    privacy: Literal["drop", "mask"] = "drop"  # an exchange with personal data or a secret
    min_rating: float | None = None            # traffic lines with a lower `rating` are dropped
    leakage_threshold: float = PydanticField(0.6, gt=0, le=1)    # Jaccard of word 3-grams with held-out prompts
    teacher: str | None = PydanticField(None, max_length=64)     # a hub deployment that relabels (distillation)
    student_base_model: str | None = PydanticField(None, max_length=64)   # the next run's base model
    max_cost_ratio: float | None = PydanticField(None, gt=0, le=1)  # student cost / champion cost per 1,000 requests
    cross_tenant: bool = False                 # harvest spokes outside the hub's tenant (data leaves that tenant)
    judge: str | None = PydanticField(None, max_length=64)       # a hub deployment that grades answers, no reference
    judge_rubric: str | None = PydanticField(None, max_length=2000)
    min_judge_score: float | None = PydanticField(None, ge=0, le=1)   # grader filter: the judge's score to keep one
    drift_examples: int | None = PydanticField(None, ge=5, le=1000)   # drift watch: examples per check and leg
    drift_starts_harvest: bool = True          # a drifted deployment is harvested at once

    @model_validator(mode="after")
    def _judge_named(self) -> HarvestPolicy:
        if self.min_judge_score is not None and not self.judge:
            raise ValueError("min_judge_score filters by a judge's score: name the judge (a deployment on the hub)")
        return self


@dataclass(frozen=True)
class Environment:
    name: str
    requires_approval: bool
    approvers: tuple[str, ...]
    allow_single_region: bool
    targets: tuple[Target, ...]
    retire: RetirePolicy = RetirePolicy()
    accepts_developer_expiry: bool = False   # Developer targets allowed: their deployments die after 24 h
    harvest: HarvestPolicy | None = None     # the flywheel (None: off)

    @property
    def regions(self) -> list[str]:
        return sorted({t.region for t in self.targets})

    def allows_approver(self, object_id: str) -> bool:
        """The app role gives the right; a non-empty `approvers` list narrows it to these object ids."""
        return not self.approvers or object_id.strip().lower() in {a.lower() for a in self.approvers}


@dataclass(frozen=True)
class Topology:
    environments: tuple[Environment, ...]
    _by_name: dict[str, Environment] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({e.name: e for e in self.environments})

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.environments]

    def environment(self, name: str) -> Environment | None:
        return self._by_name.get(name)

    def targets(self) -> Iterator[tuple[Environment, Target]]:
        for env in self.environments:
            for target in env.targets:
                yield env, target

    def target(self, account: str) -> Target | None:
        """Accounts are unique across environments (checked at load), so the name finds the spoke."""
        return next((t for _, t in self.targets() if t.account == account), None)


def parse_topology(data: Any, *, hub_tenant: str | None = None, setting: str = SETTING,
                   base_model: str | None = None) -> Topology:
    """Check the parsed JSON and build the Topology; ConfigError names the first setting at fault.

    With `base_model`, every target must be able to host a fine-tuned model of it (deployment type and
    region, from shared.run.models)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{setting}: must be a JSON object with 'environments'")
    _no_unknown(data, {"environments", "$schema"}, setting, "")
    envs_raw = data.get("environments")
    if not isinstance(envs_raw, list) or not envs_raw:
        raise ConfigError(f"{setting}: environments must be a non-empty list")
    environments: list[Environment] = []
    owners: dict[str, str] = {}   # account → where it was first seen
    for i, raw in enumerate(envs_raw):
        env = _environment(raw, f"environments[{i}]", setting, hub_tenant)
        if any(e.name == env.name for e in environments):
            raise ConfigError(f"{setting}: environments[{i}].name {env.name!r} is used twice")
        for j, t in enumerate(env.targets):
            where = f"environments[{i}].targets[{j}]"
            # One deployment name per run everywhere: an account in two slots would overwrite itself.
            if t.account in owners:
                raise ConfigError(f"{setting}: {where}.account {t.account!r} is already used by {owners[t.account]}")
            owners[t.account] = where
            if base_model:
                problem = target_problem(t, base_model)
                if problem:
                    raise ConfigError(f"{setting}: {where} (spoke {t.account!r}): {problem}")
        environments.append(env)
    return Topology(tuple(environments))


def target_problem(target: Target, base_model: str) -> str | None:
    """Why a fine-tuned model of `base_model` cannot be deployed on this spoke, or None if it can."""
    try:
        facts = model_facts(base_model)
    except UnknownModelError as exc:
        return str(exc)
    regions = facts.deployment_regions(target.sku)
    if regions is None:
        kinds = ", ".join(kind for kind, _ in facts.deployable)
        return (f"a fine-tuned {facts.name} cannot be deployed as {target.sku} "
                f"(deployment types for it: {kinds})")
    if not facts.deployable_in(target.sku, target.region):
        others = [kind for kind, _ in facts.deployable if facts.deployable_in(kind, target.region)]
        return (f"a fine-tuned {facts.name} cannot be deployed as {target.sku} in {target.region} "
                f"({target.sku} regions: {', '.join(sorted(regions))}"
                + (f"; in {target.region}: {', '.join(others)}" if others else "") + ")")
    return None


def load_topology(settings: Settings) -> Topology:
    """The checked topology for these settings; the bootstrap loads it once (shared.app.bootstrap.Deps.topology)."""
    return parse_topology(settings.load_spokes_json(), hub_tenant=settings.hub.tenant,
                          base_model=settings.default_base_model)


def _environment(raw: Any, path: str, setting: str, hub_tenant: str | None) -> Environment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{setting}: {path} must be an object")
    _no_unknown(raw, _ENV_KEYS, setting, path)
    name = _string(raw, "name", path, setting)
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{setting}: {path}.name {name!r} must be lower-case letters, digits, '-' or '_' "
                          "(it becomes part of run states such as deployed:<name>)")
    # prod is gated unless the configuration says otherwise: the safe default for the riskiest environment.
    requires_approval = _bool(raw, "requires_approval", name == "prod", path, setting)
    allow_single = _bool(raw, "allow_single_region", False, path, setting)
    # Who may approve is the app role Approver.<name> in a verified token; this list only narrows it, by
    # Entra object id (never by a name or address, which can look alike).
    approvers_raw = raw.get("approvers", [])
    if not isinstance(approvers_raw, list) or not all(isinstance(a, str) and a.strip() for a in approvers_raw):
        raise ConfigError(f"{setting}: {path}.approvers must be a list of Entra object ids")
    for k, approver in enumerate(approvers_raw):
        if not _OBJECT_ID.fullmatch(approver.strip()):
            raise ConfigError(f"{setting}: {path}.approvers[{k}] {approver!r} is not an Entra object id "
                              "(a GUID); approvers are compared by object id, never by name or address")
    targets_raw = raw.get("targets")
    if targets_raw is None:
        raise ConfigError(f"{setting}: {path}.targets is missing")
    if not isinstance(targets_raw, list) or not targets_raw:
        raise ConfigError(f"{setting}: {path}.targets must be a non-empty list")
    targets = tuple(_target(t, f"{path}.targets[{j}]", setting, hub_tenant) for j, t in enumerate(targets_raw))
    seen: set[str] = set()
    for j, t in enumerate(targets):
        if t.account in seen:
            raise ConfigError(f"{setting}: {path}.targets[{j}].account {t.account!r} is listed twice")
        seen.add(t.account)
    accepts_developer = _bool(raw, ACCEPT_DEVELOPER, False, path, setting)
    for j, t in enumerate(targets):
        if t.sku == DEVELOPER and not accepts_developer:
            raise ConfigError(f"{setting}: {path}.targets[{j}] (spoke {t.account!r}) is a Developer deployment: "
                              "it is deleted 24 hours after creation whatever its use, with no SLA; set "
                              f"{path}.{ACCEPT_DEVELOPER} to true if environment {name!r} accepts that")
    regions = {t.region for t in targets}
    if len(regions) < 2 and not allow_single:
        raise ConfigError(f"{setting}: {path} (environment {name!r}) has targets in one region only "
                          f"({', '.join(sorted(regions))}); add a target in another region or set "
                          f"{path}.allow_single_region to true")
    return Environment(name=name, requires_approval=requires_approval,
                       approvers=tuple(a.strip() for a in approvers_raw), allow_single_region=allow_single,
                       targets=targets, retire=_retire_policy(raw.get("retire", {}), f"{path}.retire", setting),
                       accepts_developer_expiry=accepts_developer,
                       harvest=_harvest_policy(raw.get("harvest"), f"{path}.harvest", setting))


def _harvest_policy(raw: Any, path: str, setting: str) -> HarvestPolicy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ConfigError(f"{setting}: {path} must be an object")
    try:
        return HarvestPolicy.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{setting}: {path}.{where}: {first['msg']}") from None


def _retire_policy(raw: Any, path: str, setting: str) -> RetirePolicy:
    if not isinstance(raw, dict):
        raise ConfigError(f"{setting}: {path} must be an object")
    _no_unknown(raw, _RETIRE_KEYS, setting, path)
    flags = {k: _bool(raw, k, True, path, setting) for k in ("approval_denied", "failed", "superseded")}
    days = raw.get("awaiting_approval_days", RetirePolicy.awaiting_approval_days)
    if days is not None and (isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0):
        raise ConfigError(f"{setting}: {path}.awaiting_approval_days must be a positive number of days, or null "
                          "for never")
    return RetirePolicy(**flags, awaiting_approval_days=None if days is None else float(days))


def _target(raw: Any, path: str, setting: str, hub_tenant: str | None) -> Target:
    if not isinstance(raw, dict):
        raise ConfigError(f"{setting}: {path} must be an object")
    _no_unknown(raw, _TARGET_KEYS, setting, path)
    values = {k: _string(raw, k, path, setting) for k in _TARGET_REQUIRED if k != "capacity"}
    sku = SKUS.get(values["sku"].lower())
    if sku is None:
        raise ConfigError(f"{setting}: {path}.sku {values['sku']!r} is not one of {', '.join(SKUS.values())}")
    capacity = _positive_int(raw, "capacity", path, setting, required=True)
    quota = _positive_int(raw, "quota", path, setting, required=False) or DEFAULT_QUOTA
    client_id = None
    if "credential" in raw:
        cred = raw["credential"]
        if not isinstance(cred, dict):
            raise ConfigError(f"{setting}: {path}.credential must be an object with client_id")
        _no_unknown(cred, {"client_id"}, setting, f"{path}.credential")
        client_id = _string(cred, "client_id", f"{path}.credential", setting)
    if hub_tenant and values["tenant"] != hub_tenant and client_id is None:
        raise ConfigError(f"{setting}: {path}.credential is missing: account {values['account']!r} is in tenant "
                          f"{values['tenant']!r}, not the hub's ({hub_tenant!r}), and needs a credential "
                          "(client_id of a multi-tenant app registration) that can get tokens there")
    return Target(subscription=values["subscription"], resource_group=values["resource_group"],
                  account=values["account"], region=values["region"].lower(), tenant=values["tenant"],
                  sku=sku, capacity=capacity, client_id=client_id, quota=quota)


def _no_unknown(raw: dict[str, Any], allowed: set[str], setting: str, path: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(f"{setting}: {where}{unknown[0]} is not a known setting "
                          f"(known: {', '.join(sorted(allowed))})")


def _string(raw: dict[str, Any], key: str, path: str, setting: str) -> str:
    if key not in raw or raw[key] is None:
        raise ConfigError(f"{setting}: {path}.{key} is missing")
    value = raw[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{setting}: {path}.{key} must be a non-empty string")
    return value.strip()


def _bool(raw: dict[str, Any], key: str, default: bool, path: str, setting: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}: {path}.{key} must be true or false")
    return value


@overload
def _positive_int(raw: dict[str, Any], key: str, path: str, setting: str, *,
                  required: Literal[True]) -> int: ...
@overload
def _positive_int(raw: dict[str, Any], key: str, path: str, setting: str, *,
                  required: bool) -> int | None: ...
def _positive_int(raw: dict[str, Any], key: str, path: str, setting: str, *, required: bool) -> int | None:
    if key not in raw:
        if required:
            raise ConfigError(f"{setting}: {path}.{key} is missing")
        return None
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{setting}: {path}.{key} must be a whole number ≥ 1")
    return value
