"""Per-model facts for fine-tuning: the one place that knows what each base model accepts and costs.

Sources (checked, see docs/validation.md and docs/azure-sources.md): Azure OpenAI fine-tuning model table
(MicrosoftDocs azure-ai-docs `includes/fine-tune-models.md`: versions, token limits), the deployment page
(`how-to/fine-tuning-deploy.md` "Deployment types": where a fine-tuned model may be deployed), the vision,
DPO and RFT how-tos, the fine-tuning cost management page, and OpenAI's RFT billing guide. Prices are *estimates* for budgeting only: the Azure
pricing page is the authority and varies by region and deployment type.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

SUPERVISED = "supervised"
DPO = "dpo"
REINFORCEMENT = "reinforcement"
METHODS = (SUPERVISED, DPO, REINFORCEMENT)

# what a run trains when neither its run.json nor DEFAULT_BASE_MODEL says (a versioned id: see the table)
DEFAULT_BASE_MODEL = "gpt-4.1-mini-2025-04-14"

# AZURE-FACTS example hosting price for a fine-tuned deployment (USD per hour); an estimate.
_HOSTING_PER_HOUR = 1.70


# Deployment types (ARM sku names) a fine-tuned model can be deployed as (fine-tuning-deploy "Deployment types").
STANDARD = "Standard"
GLOBAL_STANDARD = "GlobalStandard"
DEVELOPER = "DeveloperTier"
PROVISIONED = "ProvisionedManaged"
DEPLOYMENT_TYPES = (STANDARD, GLOBAL_STANDARD, DEVELOPER, PROVISIONED)
ANY_REGION = "*"   # Global Standard and Developer: "available from all Azure OpenAI regions"


class UnknownModelError(ValueError):
    """The name does not resolve to a base model ftops knows how to fine-tune."""

    def __init__(self, name: str, why: str | None = None) -> None:
        known = ", ".join(sorted(_MODELS))
        super().__init__(why or f"unknown base model {name!r}: ftops can fine-tune {known}")
        self.model = name


@dataclass(frozen=True)
class ModelFacts:
    name: str  # canonical base model name as Azure spells it (gpt-35-turbo, gpt-4.1-mini, ...)
    encoding: str  # tiktoken encoding name
    max_tokens_per_example: int  # training example context length; longer examples are truncated
    methods: frozenset[str]  # fine-tuning methods the service accepts for this base model
    vision: bool  # image content parts allowed in training data
    training_price_per_1m: float | None  # USD per 1M billed training tokens (SFT/DPO), estimate
    training_price_per_hour: float | None  # USD per training hour (RFT is billed by time), estimate
    hosting_price_per_hour: float  # USD per hour for a fine-tuned deployment, estimate
    developer_tier: bool  # Developer (evaluation) deployments allowed: gpt-4.1 family
    versions: tuple[str, ...] = ()  # fine-tunable versions, newest first; the first is the default
    # deployment type → regions where a fine-tuned model of this base may be deployed (ANY_REGION: all)
    deployable: tuple[tuple[str, frozenset[str]], ...] = ()
    price_is_estimate: bool = True

    def supports(self, method: str) -> bool:
        return method in self.methods

    @property
    def default_id(self) -> str:
        """The versioned model id Azure's examples send (`gpt-4.1-mini-2025-04-14`)."""
        return f"{self.name}-{self.versions[0]}" if self.versions else self.name

    def deployment_regions(self, sku: str) -> frozenset[str] | None:
        """Regions where a fine-tuned model of this base deploys as `sku`; None: not as this type at all."""
        wanted = sku.lower()
        return next((regions for kind, regions in self.deployable if kind.lower() == wanted), None)

    def deployable_in(self, sku: str, region: str) -> bool:
        regions = self.deployment_regions(sku)
        return regions is not None and (ANY_REGION in regions or region.lower() in regions)


_EUS2, _NCUS, _SWC, _SWW = "eastus2", "northcentralus", "swedencentral", "switzerlandwest"


def _facts(name: str, encoding: str, limit: int, methods: tuple[str, ...], *, versions: tuple[str, ...],
           standard: tuple[str, ...], provisioned: tuple[str, ...] = (), global_standard: bool = True,
           vision: bool = False, per_1m: float | None = None, per_hour: float | None = None,
           developer: bool = False) -> ModelFacts:
    deployable: list[tuple[str, frozenset[str]]] = [(STANDARD, frozenset(standard))]
    if global_standard:
        deployable.append((GLOBAL_STANDARD, frozenset({ANY_REGION})))
    if developer:
        deployable.append((DEVELOPER, frozenset({ANY_REGION})))
    if provisioned:
        deployable.append((PROVISIONED, frozenset(provisioned)))
    return ModelFacts(name, encoding, limit, frozenset(methods), vision, per_1m, per_hour,
                      _HOSTING_PER_HOUR, developer, versions, tuple(deployable))


_MODELS: dict[str, ModelFacts] = {
    f.name: f
    for f in (
        # cl100k_base and the 16,385-token context of the gpt-35-turbo 0125/1106 rows; Standard in the four
        # fine-tuning regions, no Global Standard row for it on the deployment page.
        _facts("gpt-35-turbo", "cl100k_base", 16_385, (SUPERVISED,), versions=("0125", "1106"),
               standard=(_EUS2, _NCUS, _SWC, _SWW), global_standard=False, per_1m=8.00),
        _facts("gpt-4o-mini", "o200k_base", 65_536, (SUPERVISED,), versions=("2024-07-18",),
               standard=(_NCUS, _SWC), provisioned=(_NCUS, _SWC), per_1m=3.30),
        # DPO on Azure: gpt-4o (2024-08-06), gpt-4.1, gpt-4.1-mini; vision: gpt-4o and gpt-4.1 only.
        _facts("gpt-4o", "o200k_base", 65_536, (SUPERVISED, DPO), versions=("2024-08-06",),
               standard=(_EUS2, _SWC), provisioned=(_NCUS, _SWC), vision=True, per_1m=27.50),
        _facts("gpt-4.1", "o200k_base", 65_536, (SUPERVISED, DPO), versions=("2025-04-14",),
               standard=(_NCUS, _SWC), provisioned=(_SWC,), vision=True, per_1m=27.50, developer=True),
        _facts("gpt-4.1-mini", "o200k_base", 65_536, (SUPERVISED, DPO), versions=("2025-04-14",),
               standard=(_NCUS, _SWC), per_1m=5.50, developer=True),
        _facts("gpt-4.1-nano", "o200k_base", 32_768, (SUPERVISED,), versions=("2025-04-14",),
               standard=(_NCUS, _SWC), per_1m=1.65, developer=True),
        # RFT is billed per hour of training ($100/h for o4-mini in OpenAI's and Azure's price lists).
        _facts("o4-mini", "o200k_base", 65_536, (REINFORCEMENT,), versions=("2025-04-16",),
               standard=(_EUS2, _SWC), per_hour=100.0),
    )
}

_ALIASES = {"gpt-3.5-turbo": "gpt-35-turbo"}
# Version suffixes: -2025-04-14 (dated) or -0125 (gpt-35-turbo style).
_VERSION = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{4})$")


def canonical_model_name(name: str) -> str:
    """Base model name for versioned names and fine-tuned ids; raises UnknownModelError."""
    base = name.strip()
    if base.startswith("ft:"):  # OpenAI style: ft:gpt-4.1-mini-2025-04-14:org::id
        base = base[3:].split(":", 1)[0]
    base = base.split(".ft-", 1)[0]  # Azure style: gpt-4.1-mini-2025-04-14.ft-abc[:ckpt-step-10]
    base = base.lower()
    base = _VERSION.sub("", base)
    base = _ALIASES.get(base, base)
    if base not in _MODELS:
        raise UnknownModelError(name)
    return base


def model_facts(name: str) -> ModelFacts:
    """Facts for a base model, a versioned name or a fine-tuned model id."""
    return _MODELS[canonical_model_name(name)]


def known_models() -> tuple[str, ...]:
    return tuple(sorted(_MODELS))


def model_version(name: str) -> str | None:
    """The version a base model id names (`gpt-4.1-mini-2025-04-14` → `2025-04-14`), None if unversioned."""
    base = name.strip().split(".ft-", 1)[0]
    match = _VERSION.search(base)
    return match.group(0)[1:] if match else None


def versioned_model_id(name: str) -> str:
    """The versioned id to send for a base model: as given when it names a version (which must be a
    fine-tunable one), else the table's default version. Raises UnknownModelError."""
    facts = model_facts(name)
    version = model_version(name)
    if version is None:
        return facts.default_id
    if facts.versions and version not in facts.versions:
        raise UnknownModelError(name, f"version {version} of {facts.name} cannot be fine-tuned "
                                      f"(fine-tunable: {', '.join(facts.versions)})")
    return f"{facts.name}-{version}"


def same_base_model(a: str, b: str) -> bool:
    """Whether two base model ids name the same model: equal, or one unversioned and the same otherwise
    (what a job echoes may carry the version Azure resolved, `gpt-4.1-mini` → `gpt-4.1-mini-2025-04-14`)."""
    if a == b:
        return True
    try:
        if canonical_model_name(a) != canonical_model_name(b):
            return False
    except UnknownModelError:
        return False
    va, vb = model_version(a), model_version(b)
    return va is None or vb is None or va == vb


# USD per 1M (input, output) tokens at inference, base model then fine-tuned model: OpenAI's published list
# prices (Azure's are alike but vary by region and deployment type). Estimates for the evaluation report's
# cost per 1,000 requests; the Azure pricing page is the authority.
_INFERENCE_PER_1M: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "gpt-35-turbo": ((0.50, 1.50), (3.00, 6.00)),
    "gpt-4o-mini": ((0.15, 0.60), (0.30, 1.20)),
    "gpt-4o": ((2.50, 10.00), (3.75, 15.00)),
    "gpt-4.1": ((2.00, 8.00), (3.00, 12.00)),
    "gpt-4.1-mini": ((0.40, 1.60), (0.80, 3.20)),
    "gpt-4.1-nano": ((0.10, 0.40), (0.20, 0.80)),
    "o4-mini": ((1.10, 4.40), (4.00, 16.00)),
}


def inference_price_per_1m(base_model: str, *, fine_tuned: bool) -> tuple[float, float] | None:
    """(input, output) USD per 1M tokens for a base model or a model fine-tuned from it; None if unknown."""
    try:
        prices = _INFERENCE_PER_1M.get(canonical_model_name(base_model))
    except UnknownModelError:
        return None
    return None if prices is None else prices[1 if fine_tuned else 0]


@dataclass(frozen=True)
class ModelLifecycle:
    """When Azure stops a base model (and every model fine-tuned from it): `fine_tune` closes new training,
    `inference` retires its deployments. From the ARM Models API (`deprecation.fineTune`, `.inference`)."""
    name: str                         # base model name: gpt-4.1-mini
    version: str                      # 2025-04-14
    fine_tune: date | None = None
    inference: date | None = None

    def training_closed(self, today: date) -> bool:
        return self.fine_tune is not None and today >= self.fine_tune

    def days_left(self, today: date) -> int | None:
        """Days until deployments of this model (and its fine-tunes) retire; None when no date is announced."""
        return None if self.inference is None else (self.inference - today).days


def lifecycle_of(model: str, lifecycles: Mapping[str, ModelLifecycle]) -> ModelLifecycle | None:
    """The lifecycle of a base model id or of a model fine-tuned from it (`<base>.ft-…`, a checkpoint), found
    by name and version (`lifecycles` keyed `name-version`); an unversioned id takes its default version."""
    try:
        base = canonical_model_name(model)
    except UnknownModelError:
        return None
    version = model_version(model) or model_version(versioned_model_id(base))
    return lifecycles.get(f"{base}-{version}")
