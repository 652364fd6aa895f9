"""Estimated hosting cost of the fine-tuned deployments ftops keeps: each is billed by the hour whether it
is used or not, which is why superseded models are replaced in place and `retire` exists.

Prices come from `shared.run.models` (per base model, an estimate); a `HOSTING_PRICES` setting
(JSON `{"<base model or sku>": <USD per hour>}`) overrides them for a site's negotiated prices.
Developer-tier deployments have no hosting fee.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from shared.run.models import UnknownModelError, canonical_model_name, model_facts

if TYPE_CHECKING:
    from shared.store.registry import DeploymentRecord

DEFAULT_PER_HOUR = 1.70   # AZURE-FACTS example price, for models shared.run.models does not know
_FREE_SKUS = {"developertier"}


def hourly_price(record: DeploymentRecord, overrides: Mapping[str, float] | None = None) -> float:
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    if record.sku.lower() in _FREE_SKUS:
        return 0.0
    if record.sku.lower() in overrides:
        return float(overrides[record.sku.lower()])
    try:
        base = canonical_model_name(record.model)
    except UnknownModelError:
        return float(overrides.get("default", DEFAULT_PER_HOUR))
    if base in overrides:
        return float(overrides[base])
    return model_facts(base).hosting_price_per_hour


def daily_hosting_cost(records: Iterable[DeploymentRecord], prices: Mapping[str, float] | None = None
                       ) -> dict[str, Any]:
    """Estimated USD per day for each active deployment and in total (for `ftops status`)."""
    rows: list[dict[str, Any]] = []
    for r in records:
        if r.state != "active":
            continue
        hourly = hourly_price(r, prices)
        rows.append({"slot": r.slot, "environment": r.environment, "account": r.account, "region": r.region,
                     "deployment": r.deployment, "run_id": r.run_id, "model": r.model, "sku": r.sku,
                     "per_hour": round(hourly, 4), "per_day": round(hourly * 24, 2)})
    return {"currency": "USD", "estimate": True, "deployments": rows,
            "total_per_day": round(sum(row["per_day"] for row in rows), 2)}


def prices_from_settings(settings: Any) -> dict[str, float]:
    raw = settings.hosting_prices
    if not raw:
        return {}
    from shared.run.config import ConfigError
    try:
        data = json.loads(raw)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, AttributeError) as exc:
        raise ConfigError(f"HOSTING_PRICES must be a JSON object of USD per hour: {exc}") from exc
