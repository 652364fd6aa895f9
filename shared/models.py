"""Per-model facts for fine-tuning: the one place that knows what each base model accepts and costs.

Sources (checked, see docs/validation.md): Azure OpenAI fine-tuning model table (MicrosoftDocs
azure-ai-docs `includes/fine-tune-models.md`), the vision, DPO and RFT how-tos, the fine-tuning cost
management page, and OpenAI's RFT billing guide. Prices are *estimates* for budgeting only: the Azure
pricing page is the authority and varies by region and deployment type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SUPERVISED = "supervised"
DPO = "dpo"
REINFORCEMENT = "reinforcement"
METHODS = (SUPERVISED, DPO, REINFORCEMENT)

# AZURE-FACTS example hosting price for a fine-tuned deployment (USD per hour); an estimate.
_HOSTING_PER_HOUR = 1.70


class UnknownModelError(ValueError):
    """The name does not resolve to a base model ftops knows how to fine-tune."""

    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(_MODELS))
        super().__init__(f"unknown base model {name!r}: ftops can fine-tune {known}")
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
    price_is_estimate: bool = True

    def supports(self, method: str) -> bool:
        return method in self.methods


def _facts(name: str, encoding: str, limit: int, methods: tuple[str, ...], *, vision: bool = False,
           per_1m: float | None = None, per_hour: float | None = None, developer: bool = False) -> ModelFacts:
    return ModelFacts(name, encoding, limit, frozenset(methods), vision, per_1m, per_hour,
                      _HOSTING_PER_HOUR, developer)


_MODELS: dict[str, ModelFacts] = {
    f.name: f
    for f in (
        # cl100k_base and the 16,385-token context of the gpt-35-turbo 0125/1106 rows.
        _facts("gpt-35-turbo", "cl100k_base", 16_385, (SUPERVISED,), per_1m=8.00),
        _facts("gpt-4o-mini", "o200k_base", 65_536, (SUPERVISED,), per_1m=3.30),
        # DPO on Azure: gpt-4o (2024-08-06), gpt-4.1, gpt-4.1-mini; vision: gpt-4o and gpt-4.1 only.
        _facts("gpt-4o", "o200k_base", 65_536, (SUPERVISED, DPO), vision=True, per_1m=27.50),
        _facts("gpt-4.1", "o200k_base", 65_536, (SUPERVISED, DPO), vision=True, per_1m=27.50,
               developer=True),
        _facts("gpt-4.1-mini", "o200k_base", 65_536, (SUPERVISED, DPO), per_1m=5.50, developer=True),
        _facts("gpt-4.1-nano", "o200k_base", 32_768, (SUPERVISED,), per_1m=1.65, developer=True),
        # RFT is billed per hour of training ($100/h for o4-mini in OpenAI's and Azure's price lists).
        _facts("o4-mini", "o200k_base", 65_536, (REINFORCEMENT,), per_hour=100.0),
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
