"""Azure OpenAI data plane per account: `/{account}/openai/...` (and the `/openai/v1/...` spelling)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import knowledge, stored, surfaces
from .auth import check_data_plane
from .core import Emulator
from .state import Account, ApiError, UploadRecord

UPLOAD_TTL = 3600


def _emu(request: Request) -> Emulator:
    return request.app.state.emulator  # type: ignore[no-any-return]


def _account(request: Request) -> Account:
    account = _emu(request).account(request.path_params["account"])
    check_data_plane(request, account)
    request.scope["emulator.account"] = account.name
    return account


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError:
        raise ApiError(400, "invalidPayload", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalidPayload", "The request body must be a JSON object.")
    return body


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name → (filename, bytes). A small parser: starlette's form() needs python-multipart, not installed."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise ApiError(400, "invalidPayload", "Expected multipart/form-data with a boundary.")
    fields: dict[str, tuple[str | None, bytes]] = {}
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        name = filename = None
        for line in head.decode("utf-8", "replace").split("\r\n"):
            if line.lower().startswith("content-disposition:"):
                for item in line.split(";")[1:]:
                    key, _, value = item.strip().partition("=")
                    if key == "name":
                        name = value.strip('"')
                    elif key == "filename":
                        filename = value.strip('"')
        if name is not None:
            fields[name] = (filename, data.removesuffix(b"\r\n"))
    return fields


def _page(items: list[dict[str, Any]], after: str | None, limit: int) -> dict[str, Any]:
    if after:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    return {"object": "list", "data": items[:limit], "has_more": len(items) > limit}


def _limit(request: Request) -> int:
    try:
        return max(1, min(100, int(request.query_params.get("limit", "20"))))
    except ValueError:
        raise ApiError(400, "invalidPayload", "limit must be an integer.", param="limit") from None


# --- files ------------------------------------------------------------------------------------------
async def create_file(request: Request) -> Response:
    account = _account(request)
    fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
    if "file" not in fields:
        raise ApiError(400, "invalidPayload", "The 'file' field is required.", param="file")
    purpose = fields.get("purpose", (None, b""))[1].decode()
    if purpose not in ("fine-tune", "assistants", "batch", "vision", "user_data", "evals"):
        raise ApiError(400, "invalidPayload", f"Invalid purpose '{purpose}'.", param="purpose")
    filename, content = fields["file"]
    surfaces.check_file_fields(surfaces.of(request), set(fields))
    text = {k: v[1].decode("utf-8", "replace") for k, v in fields.items() if k != "file"}
    expires_in = surfaces.check_file_expiry(surfaces.of(request), text)
    record = _emu(request).add_file(account.name, filename or "upload.jsonl", purpose, content, expires_in=expires_in)
    return JSONResponse(record.to_json(_emu(request).now()), status_code=201)


async def list_files(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    purpose = request.query_params.get("purpose")
    files = sorted((f for f in emu.files.values() if f.account == account.name and purpose in (None, f.purpose)
                    and not f.expired(emu.now())),
                   key=lambda f: f.created_at, reverse=True)
    return JSONResponse({"object": "list", "data": [f.to_json(emu.now()) for f in files], "has_more": False})


async def get_file(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    return JSONResponse(emu.file(account.name, request.path_params["file_id"]).to_json(emu.now()))


async def delete_file(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.delete_file(account.name, request.path_params["file_id"])
    return JSONResponse({"id": request.path_params["file_id"], "object": "file", "deleted": True})


async def file_content(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    record = emu.file(account.name, request.path_params["file_id"])
    kind = "text/csv" if record.filename.endswith(".csv") else "application/octet-stream"
    return Response(record.content, media_type=kind)


# --- uploads ----------------------------------------------------------------------------------------
def _upload_json(emu: Emulator, upload_id: str) -> dict[str, Any]:
    up = emu.uploads[upload_id]
    body: dict[str, Any] = {
        "id": up.id, "object": "upload", "bytes": up.bytes, "created_at": int(up.created_at),
        "expires_at": int(up.created_at + UPLOAD_TTL), "filename": up.filename, "purpose": up.purpose,
        "status": up.status, "file": None,
    }
    if up.file_id and up.file_id in emu.files:
        body["file"] = emu.files[up.file_id].to_json(emu.now())
    return body


def _upload(request: Request, account: Account) -> Any:
    emu = _emu(request)
    up = emu.uploads.get(request.path_params["upload_id"])
    if up is None or up.account != account.name:
        raise ApiError(404, "NotFound", f"Upload '{request.path_params['upload_id']}' not found.")
    return up


async def create_upload(request: Request) -> Response:
    account, emu, body = _account(request), _emu(request), await _json(request)
    surfaces.check_fields(body, surfaces.upload_start_fields(request.scope["emulator.surface"]))
    for key in ("bytes", "filename", "mime_type", "purpose"):
        if body.get(key) in (None, ""):
            raise ApiError(400, "invalidPayload", f"'{key}' is required.", param=key)
    if int(body["bytes"]) > 8 * 1024**3:
        raise ApiError(400, "invalidPayload", "An upload can hold at most 8 GB.", param="bytes")
    up = UploadRecord(id=emu.new_id("upload", "_"), account=account.name, filename=body["filename"],
                      purpose=body["purpose"], mime_type=body["mime_type"], bytes=int(body["bytes"]),
                      created_at=emu.now())
    emu.uploads[up.id] = up
    return JSONResponse(_upload_json(emu, up.id))


async def add_part(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    up = _upload(request, account)
    if up.status != "pending":
        raise ApiError(400, "invalidPayload", f"Upload is {up.status}; parts can only be added while pending.")
    fields = parse_multipart(request.headers.get("content-type", ""), await request.body())
    if "data" not in fields:
        raise ApiError(400, "invalidPayload", "The 'data' field is required.", param="data")
    part_id = emu.new_id("part", "_")
    up.parts[part_id] = fields["data"][1]
    return JSONResponse({"id": part_id, "object": "upload.part", "created_at": int(emu.now()), "upload_id": up.id})


async def complete_upload(request: Request) -> Response:
    account, emu, body = _account(request), _emu(request), await _json(request)
    surfaces.check_fields(body, surfaces.UPLOAD_COMPLETE)
    up = _upload(request, account)
    if up.status != "pending":
        raise ApiError(400, "invalidPayload", f"Upload is already {up.status}.")
    part_ids = body.get("part_ids") or []
    unknown = [p for p in part_ids if p not in up.parts]
    if unknown:
        raise ApiError(400, "invalidPayload", f"Unknown part ids: {unknown}.", param="part_ids")
    content = b"".join(up.parts[p] for p in part_ids)
    if len(content) != up.bytes:
        raise ApiError(400, "invalidPayload",
                       f"The parts hold {len(content)} bytes; the upload was created for {up.bytes}.")
    if body.get("md5") and hashlib.md5(content).hexdigest() != body["md5"]:
        raise ApiError(400, "invalidPayload", "The md5 checksum does not match the uploaded bytes.", param="md5")
    up.file_id = emu.add_file(account.name, up.filename, up.purpose, content).id
    up.status, up.parts = "completed", {}
    return JSONResponse(_upload_json(emu, up.id))


async def cancel_upload(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    up = _upload(request, account)
    if up.status != "pending":
        raise ApiError(400, "invalidPayload", f"Upload is already {up.status}.")
    up.status, up.parts = "cancelled", {}
    return JSONResponse(_upload_json(emu, up.id))


# --- fine-tuning jobs -------------------------------------------------------------------------------
async def create_job(request: Request) -> Response:
    account, emu, body = _account(request), _emu(request), await _json(request)
    surface = request.scope["emulator.surface"]
    surfaces.check_job_body(surface, body)
    job = emu.create_job(account.name, body, suffix_max=surfaces.SUFFIX_MAX[surface])
    return JSONResponse(emu.job_json(job), status_code=201)


async def list_jobs(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.tick()
    jobs = sorted((j for j in emu.jobs.values() if j.account == account.name), key=lambda j: j.created_at,
                  reverse=True)
    page = _page([emu.job_json(j) for j in jobs], request.query_params.get("after"), _limit(request))
    return JSONResponse(page)


async def get_job(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.tick()
    return JSONResponse(emu.job_json(emu.job(account.name, request.path_params["job_id"])))


async def job_action(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    action = {"cancel": emu.cancel_job, "pause": emu.pause_job, "resume": emu.resume_job}
    job = action[request.url.path.rsplit("/", 1)[-1]](account.name, request.path_params["job_id"])
    return JSONResponse(emu.job_json(job))


async def job_events(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.tick()
    job = emu.job(account.name, request.path_params["job_id"])
    events = [e.to_json() for e in job.all_events(emu.now())]
    return JSONResponse(_page(events, request.query_params.get("after"), _limit(request)))


async def job_checkpoints(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.tick()
    job = emu.job(account.name, request.path_params["job_id"])
    page = _page(job.checkpoints(emu.now()), request.query_params.get("after"), _limit(request))
    data = page["data"]
    page.update(first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None)
    return JSONResponse(page)


# --- chat ---------------------------------------------------------------------------------------------
async def chat_completions(request: Request) -> Response:
    account, emu, body = _account(request), _emu(request), await _json(request)
    return _chat(request, account, emu, body, request.path_params["deployment"])


async def chat_completions_v1(request: Request) -> Response:
    """The v1 spelling: `POST /openai/v1/chat/completions` names the deployment in `model`."""
    account, emu, body = _account(request), _emu(request), await _json(request)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "invalid_request_error", "'model' (the deployment name) is required.", param="model")
    return _chat(request, account, emu, body, name)


def _chat(request: Request, account: Account, emu: Emulator, body: dict[str, Any], name: str) -> Response:
    store, metadata = stored.check_request(body, request.scope["emulator.surface"], surfaces.V1, surfaces.GA)
    dep = emu.deployment(account.name, name)
    if dep is None or dep.state != "Succeeded" or emu.now() < dep.serving_at:
        if dep is not None:
            request.scope["emulator.log"]["fault"] = "not-ready"
        raise ApiError(404, "DeploymentNotFound",
                       "The API deployment for this resource does not exist. If you created the deployment "
                       "within the last 5 minutes, please wait a moment and try again.")
    warming = dep.warm_at - emu.now()
    if warming > 0:  # just provisioned: Azure answers 429 for a while before a new deployment serves
        request.scope["emulator.log"]["fault"] = "warmup"
        ms = str(emu.faults.retry_after_ms)
        raise ApiError(429, "429", f"The deployment '{name}' is warming up; retry in {warming:.1f} seconds.",
                       headers={"Retry-After": "1", "retry-after-ms": ms, "x-ms-retry-after-ms": ms})
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "invalidPayload", "'messages' must be a non-empty array.", param="messages")
    dep.last_used_at = emu.now()
    question = " ".join(knowledge._content_text(m.get("content")) for m in messages if m.get("role") == "user")
    model_name = str(dep.model.get("name", name))
    found = emu.find_model(model_name)
    learned = knowledge.recall(question, found[0].examples, found[0].id, found[1]) if found is not None else None
    content: str | None = ((learned.answer if learned is not None else "") or knowledge.grading_answer(question)
                           or knowledge.judging_answer(question) or knowledge.generic_answer(question))
    calls: list[dict[str, Any]] = []
    if learned is not None and learned.tool_calls and body.get("tools"):   # calls only tools it was offered
        offered = {t.get("function", {}).get("name") for t in body["tools"] if isinstance(t, dict)}
        calls = [{"id": "call_" + hashlib.sha256(f"{question}{i}".encode()).hexdigest()[:24], "type": "function",
                  "function": dict(c)} for i, c in enumerate(learned.tool_calls) if c["name"] in offered]
        content = (learned.answer or None) if calls else content
    text = content or ""
    prompt_filter = knowledge.content_filter(question)
    if any(c["filtered"] for c in prompt_filter.values()):   # Azure refuses a filtered prompt with a 400
        raise ApiError(400, "content_filter", "The response was filtered due to the prompt triggering Azure "
                       "OpenAI's content management policy.", param="prompt")
    answer_filter = knowledge.content_filter(text)
    finish = "tool_calls" if calls else "stop"
    if any(c["filtered"] for c in answer_filter.values()):
        content, calls, finish = None, [], "content_filter"
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    prompt_tokens = sum(knowledge.approx_tokens(json.dumps(m)) for m in messages)
    completion_tokens = knowledge.approx_tokens(text or json.dumps(calls))
    completion = {
        "id": "chatcmpl-" + emu.new_id("", "")[:29],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "system_fingerprint": "fp_emulator",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": prompt_filter}],
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None,
                     "content_filter_results": answer_filter}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }
    if store:
        with emu.lock:
            stored.keep(emu.stored, account.name, completion, messages, metadata)
    return JSONResponse(completion)


# --- stored completions (v1 only) --------------------------------------------------------------------
async def list_stored(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        return stored.list_completions(emu.stored, account.name, request)


async def get_stored(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        return stored.get_completion(emu.stored, account.name, request.path_params["completion_id"])


async def stored_messages(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        return stored.completion_messages(emu.stored, account.name, request.path_params["completion_id"], request)


async def delete_stored(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        return stored.delete_completion(emu.stored, account.name, request.path_params["completion_id"])


def _gated(endpoint: Any, excluded: frozenset[str]) -> Any:
    """The endpoint behind the api-version check: a surface whose spec lacks the path answers 404."""
    async def handler(request: Request) -> Response:
        surface = surfaces.of(request)
        if surface in excluded:
            raise ApiError(404, "404", "Resource not found")
        request.scope["emulator.surface"] = surface
        return await endpoint(request)
    return handler


def routes() -> list[Route]:
    none, no_pause, no_uploads = frozenset(), surfaces.NO_PAUSE, surfaces.NO_UPLOADS
    dated = frozenset({surfaces.GA, surfaces.PREVIEW})
    table = [
        ("/files", create_file, ["POST"], none), ("/files", list_files, ["GET"], none),
        ("/files/{file_id}", get_file, ["GET"], none), ("/files/{file_id}", delete_file, ["DELETE"], none),
        ("/files/{file_id}/content", file_content, ["GET"], none),
        ("/uploads", create_upload, ["POST"], no_uploads),
        ("/uploads/{upload_id}/parts", add_part, ["POST"], no_uploads),
        ("/uploads/{upload_id}/complete", complete_upload, ["POST"], no_uploads),
        ("/uploads/{upload_id}/cancel", cancel_upload, ["POST"], no_uploads),
        ("/fine_tuning/jobs", create_job, ["POST"], none), ("/fine_tuning/jobs", list_jobs, ["GET"], none),
        ("/fine_tuning/jobs/{job_id}", get_job, ["GET"], none),
        ("/fine_tuning/jobs/{job_id}/cancel", job_action, ["POST"], none),
        ("/fine_tuning/jobs/{job_id}/pause", job_action, ["POST"], no_pause),
        ("/fine_tuning/jobs/{job_id}/resume", job_action, ["POST"], no_pause),
        ("/fine_tuning/jobs/{job_id}/events", job_events, ["GET"], none),
        ("/fine_tuning/jobs/{job_id}/checkpoints", job_checkpoints, ["GET"], none),
        ("/deployments/{deployment}/chat/completions", chat_completions, ["POST"], frozenset({surfaces.V1})),
        # the v1 spec's chat completions (deployment in `model`) and stored completions; not on dated versions here
        ("/chat/completions", chat_completions_v1, ["POST"], dated),
        ("/chat/completions", list_stored, ["GET"], dated),
        ("/chat/completions/{completion_id}", get_stored, ["GET"], dated),
        ("/chat/completions/{completion_id}", delete_stored, ["DELETE"], dated),
        ("/chat/completions/{completion_id}/messages", stored_messages, ["GET"], dated),
    ]
    out = []
    for prefix, v1 in (("/{account}/openai", False), ("/{account}/openai/v1", True)):
        for path, endpoint, methods, excluded in table:
            if v1 and surfaces.V1 in excluded:
                continue   # not in the v1 spec: no route, so 404 like any unknown path
            out.append(Route(prefix + path, _gated(endpoint, excluded), methods=methods))
    return out
