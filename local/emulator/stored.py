"""Stored completions: `store: true` on a chat completion keeps it, with its request messages and `metadata`,
for listing and retrieval through the v1 API (Learn, "Azure OpenAI stored completions & distillation"; the
Foundry REST reference "List chat completions", "Get chat completion", "Get chat completion messages",
"Delete chat completion": `GET/DELETE /openai/v1/chat/completions[/{id}[/messages]]`).

What Azure refuses, refused here: `store`/`metadata` on an api-version that predates stored completions
(first in 2024-10-01-preview; the GA 2024-10-21 inference spec has neither: 400 "Unrecognized request
argument supplied"), `metadata` that is not a map of at most 16 string pairs with keys ≤ 64 and values
≤ 512 characters (OpenAI's `Metadata` schema), `store` that is not a boolean, an unknown `order`, a `limit`
outside 1–100, and a completion id the account never stored (404).
"""

from __future__ import annotations

import copy
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .state import ApiError

MAX_METADATA_PAIRS = 16
MAX_KEY = 64
MAX_VALUE = 512
_METADATA_FILTER = re.compile(r"^metadata\[(.+)\]$")


def check_request(body: dict[str, Any], surface: str, v1: str, ga: str) -> tuple[bool, dict[str, str] | None]:
    """(store?, metadata) of a chat completion request, refused as Azure refuses them."""
    for field in ("store", "metadata"):
        if field in body and surface == ga:
            raise ApiError(400, "BadRequest", f"Unrecognized request argument supplied: {field}", param=field)
    store = body.get("store", False)
    if not isinstance(store, bool):
        raise ApiError(400, "invalid_request_error", "'store' must be a boolean.", param="store")
    metadata = body.get("metadata")
    if metadata is None:
        return store, None
    if not isinstance(metadata, dict) or len(metadata) > MAX_METADATA_PAIRS:
        raise ApiError(400, "invalid_request_error",
                       f"'metadata' must be an object of at most {MAX_METADATA_PAIRS} pairs.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > MAX_KEY or len(value) > MAX_VALUE:
            raise ApiError(400, "invalid_request_error",
                           f"metadata keys are strings of at most {MAX_KEY} characters and values strings of at "
                           f"most {MAX_VALUE}.", param="metadata")
    return store, dict(metadata)


def keep(stored: dict[str, dict[str, Any]], account: str, completion: dict[str, Any],
         messages: list[dict[str, Any]], metadata: dict[str, str] | None) -> None:
    entry = copy.deepcopy(completion)
    entry["metadata"] = metadata or {}
    entry["request_id"] = completion["id"]
    stored[completion["id"]] = {"account": account, "completion": entry,
                                "messages": [{"id": f"{completion['id']}-{i}", **copy.deepcopy(m)}
                                             for i, m in enumerate(messages)]}


def _order(request: Request) -> str:
    order = request.query_params.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ApiError(400, "invalid_request_error", "order must be 'asc' or 'desc'.", param="order")
    return order


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "20")
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "invalid_request_error", "limit must be an integer.", param="limit") from None
    if not 1 <= limit <= 100:
        raise ApiError(400, "invalid_request_error", "limit must be between 1 and 100.", param="limit")
    return limit


def _page(items: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    limit, after = _limit(request), request.query_params.get("after")
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    data = items[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit}


def list_completions(stored: dict[str, dict[str, Any]], account: str, request: Request) -> Response:
    order = _order(request)
    model = request.query_params.get("model")
    wanted = {m.group(1): v for k, v in request.query_params.multi_items() if (m := _METADATA_FILTER.match(k))}
    items = [e["completion"] for e in stored.values() if e["account"] == account
             and (model is None or e["completion"]["model"] == model)
             and all(e["completion"]["metadata"].get(k) == v for k, v in wanted.items())]
    if order == "desc":   # newest first; within one second, the order they were stored in
        items.reverse()
    items.sort(key=lambda c: c["created"], reverse=order == "desc")
    return JSONResponse(_page(items, request))


def _entry(stored: dict[str, dict[str, Any]], account: str, completion_id: str) -> dict[str, Any]:
    entry = stored.get(completion_id)
    if entry is None or entry["account"] != account:
        raise ApiError(404, "not_found", f"No stored chat completion found with id '{completion_id}'.")
    return entry


def get_completion(stored: dict[str, dict[str, Any]], account: str, completion_id: str) -> Response:
    return JSONResponse(_entry(stored, account, completion_id)["completion"])


def completion_messages(stored: dict[str, dict[str, Any]], account: str, completion_id: str,
                        request: Request) -> Response:
    messages = list(_entry(stored, account, completion_id)["messages"])
    if _order(request) == "desc":
        messages.reverse()
    return JSONResponse(_page(messages, request))


def delete_completion(stored: dict[str, dict[str, Any]], account: str, completion_id: str) -> Response:
    _entry(stored, account, completion_id)
    del stored[completion_id]
    return JSONResponse({"object": "chat.completion.deleted", "id": completion_id, "deleted": True})
