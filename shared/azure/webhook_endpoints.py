"""The hub's webhook endpoints (Learn "Azure OpenAI in Foundry Models webhooks"): the REST surface Azure
documents for them, `/openai/v1/dashboard/webhook_endpoints` (create: POST `{name, url, event_types}`, list: GET,
update: POST `/{id}`, delete: DELETE `/{id}`); Azure has no portal page and no ARM resource for them, and
Azure's v1 OpenAPI spec does not list them. Called through the hub's own v1 client, so the auth is the hub's
(Entra ID token, or the local API key): Learn's samples show only `api-key`.

`register` is idempotent: an endpoint already there for the same URL is kept (its name and event types put
right if they differ) and no new secret is made, unless `new_secret` asks for one (the secret is shown only
when an endpoint is created, so getting it again means deleting and creating the endpoint).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

PATH = "dashboard/webhook_endpoints"
FINE_TUNING_EVENTS = ["fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled"]
NAME = "ftops"


@dataclass(frozen=True)
class Registration:
    endpoint_id: str
    url: str
    outcome: str                 # created | updated | unchanged | recreated
    secret: str | None = None    # only when created (or recreated): Azure shows it once


def _client(deps: Deps) -> Any:
    from shared.run.config import ConfigError
    from shared.run.hub_api import V1
    if deps.settings.hub.api_version != V1:
        raise ConfigError(f"HUB_API_VERSION must be {V1!r} to manage webhook endpoints: Azure serves them under "
                          f"/openai/v1/ only (it is {deps.settings.hub.api_version!r})")
    return deps.hub_client(max_retries=2)


def list_endpoints(deps: Deps) -> list[dict[str, Any]]:
    answer = _client(deps).get(PATH, cast_to=object)
    return list(answer.get("data") or []) if isinstance(answer, dict) else []


def register(deps: Deps, url: str, *, name: str = NAME, event_types: list[str] | None = None,
             new_secret: bool = False) -> Registration:
    client, wanted = _client(deps), sorted(event_types or FINE_TUNING_EVENTS)
    mine = [e for e in list_endpoints(deps) if e.get("url") == url]
    for extra in mine[1:]:   # one endpoint per URL: another would deliver every event twice
        client.delete(f"{PATH}/{extra['id']}", cast_to=object)
    if mine and new_secret:
        client.delete(f"{PATH}/{mine[0]['id']}", cast_to=object)
    elif mine:
        found = mine[0]
        if found.get("name") == name and sorted(found.get("event_types") or []) == wanted:
            return Registration(found["id"], url, "unchanged")
        client.post(f"{PATH}/{found['id']}", body={"name": name, "url": url, "event_types": wanted}, cast_to=object)
        return Registration(found["id"], url, "updated")
    created = client.post(PATH, body={"name": name, "url": url, "event_types": wanted}, cast_to=object)
    return Registration(created["id"], url, "recreated" if mine else "created", secret=created["signing_secret"])
