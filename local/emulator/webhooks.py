"""Webhook endpoints per account and signed deliveries when a fine-tuning job ends.

Registration is the REST surface Learn documents ("Azure OpenAI in Foundry Models webhooks"):
`POST|GET /{account}/openai/v1/dashboard/webhook_endpoints`, `GET|POST|DELETE …/webhook_endpoints/{id}`;
`{name, url, event_types}`; the answer carries `signing_secret` (`whsec_…`) only when the endpoint is created.
Deliveries follow Standard Webhooks (the spec Learn's sample verifies with `client.webhooks.unwrap`): headers
`webhook-id` (the same on every retry), `webhook-timestamp` (this attempt), `webhook-signature`
(`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>" with the base64 key after whsec_>`); a thin body
`{object: "event", id, type, created_at, data: {id: <job id>}}`; anything but a 2xx within 10 s is a failure,
retried (the `webhook_retry_seconds` config, real seconds). The `webhook_drop_rate` and
`drop_next_webhooks` faults lose a delivery outright (no attempt at all), so the poller's fallback is tested.

Signing is implemented here from the spec, never with the app's code or the openai SDK the app verifies with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .dataplane import _account as account_of
from .dataplane import _emu, _json
from .state import ApiError

if TYPE_CHECKING:
    from .core import Emulator

log = logging.getLogger("local.emulator.webhooks")

# Learn's "Webhook events reference" table (2026-01-31)
EVENT_TYPES = frozenset({
    "response.completed", "response.failed", "response.cancelled", "response.incomplete",
    "batch.completed", "batch.failed", "batch.cancelled", "batch.expired",
    "fine_tuning.job.succeeded", "fine_tuning.job.failed", "fine_tuning.job.cancelled",
    "realtime.call.incoming",
})
DELIVERY_TIMEOUT = 10.0   # Learn: "Keep webhook processing under 10 seconds"
DISPATCH_EVERY = 0.1      # real seconds between the dispatcher's looks at the jobs
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_NAME, MAX_URL = 256, 2048   # OpenAI's API reference, Webhooks › create: name 1…256, url ≤ 2048 characters


def sign(secret: str, webhook_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, webhook_id.encode() + b"." + timestamp.encode() + b"." + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def _public(endpoint: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in endpoint.items() if k not in ("signing_secret", "account")}


def _check_body(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = set(body) - {"name", "url", "event_types"}
    if unknown:
        raise ApiError(400, "invalidPayload", f"Unrecognized request argument supplied: {min(unknown)}")
    for key in ("name", "url", "event_types"):
        if key not in body:
            if partial:
                continue
            raise ApiError(400, "invalidPayload", f"Missing required parameter: '{key}'.", param=key)
        out[key] = body[key]
    if "name" in out and (not isinstance(out["name"], str) or not out["name"].strip() or len(out["name"]) > MAX_NAME):
        raise ApiError(400, "invalidPayload", f"'name' must be a non-empty string of at most {MAX_NAME} characters.",
                       param="name")
    if "url" in out:
        url = out["url"]
        if isinstance(url, str) and len(url) > MAX_URL:
            raise ApiError(400, "invalidPayload", f"'url' must be at most {MAX_URL} characters.", param="url")
        parts = urlsplit(url) if isinstance(url, str) else None
        # Learn: "Use HTTPS for all webhook endpoints". Plain http only to this machine's loopback (the dev host)
        if parts is None or not parts.hostname or not (
                parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK)):
            raise ApiError(400, "invalidPayload", "'url' must be an https URL.", param="url")
    if "event_types" in out:
        types = out["event_types"]
        if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
            raise ApiError(400, "invalidPayload", "'event_types' must be a non-empty list.",
                           param="event_types")
        unknown_types = sorted(set(types) - EVENT_TYPES)
        if unknown_types:
            raise ApiError(400, "invalidPayload", f"Invalid event type: '{unknown_types[0]}'.",
                           param="event_types")
    return out


def _account(request: Request) -> str:
    return account_of(request).name


def _endpoint(emu: Emulator, account: str, endpoint_id: str) -> dict[str, Any]:
    endpoint = emu.webhook_endpoints.get(endpoint_id)
    if endpoint is None or endpoint["account"] != account:
        raise ApiError(404, "NotFound", f"Webhook endpoint '{endpoint_id}' not found.")
    return endpoint


async def create_endpoint(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    fields = _check_body(await _json(request), partial=False)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with emu.lock:
        endpoint = {"id": emu.new_id("wh", "_"), "object": "webhook.endpoint", "created_at": int(emu.now()),
                    "event_types": list(fields["event_types"]), "name": fields["name"],
                    "signing_secret": secret, "signing_secret_hint": f"whsec_...{secret[-4:]}", "url": fields["url"],
                    "account": account}
        emu.webhook_endpoints[endpoint["id"]] = endpoint
    return JSONResponse({**_public(endpoint), "signing_secret": secret})


async def list_endpoints(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        data = [_public(e) for e in emu.webhook_endpoints.values() if e["account"] == account]
    return JSONResponse({"object": "list", "data": data})


async def get_endpoint(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        return JSONResponse(_public(_endpoint(emu, account, request.path_params["endpoint_id"])))


async def update_endpoint(request: Request) -> Response:
    """Learn: name, URL and event types can be updated; the signing secret cannot."""
    account, emu = _account(request), _emu(request)
    fields = _check_body(await _json(request), partial=True)
    with emu.lock:
        endpoint = _endpoint(emu, account, request.path_params["endpoint_id"])
        endpoint.update(fields)
        return JSONResponse(_public(endpoint))


async def delete_endpoint(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    with emu.lock:
        endpoint = _endpoint(emu, account, request.path_params["endpoint_id"])
        del emu.webhook_endpoints[endpoint["id"]]
    return JSONResponse({"id": endpoint["id"], "object": "webhook_endpoint.deleted", "deleted": True})


def routes() -> list[Route]:
    base = "/{account}/openai/v1/dashboard/webhook_endpoints"
    return [Route(base, create_endpoint, methods=["POST"]), Route(base, list_endpoints, methods=["GET"]),
            Route(base + "/{endpoint_id}", get_endpoint, methods=["GET"]),
            Route(base + "/{endpoint_id}", update_endpoint, methods=["POST"]),
            Route(base + "/{endpoint_id}", delete_endpoint, methods=["DELETE"])]


class Dispatcher:
    """A thread that brings the jobs up to the emulator's time (so a job ends when its time comes, not at the
    next request) and delivers each ended job's event to the endpoints of its account that take its type."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="emulator-webhook")
        self._thread = threading.Thread(target=self._run, name="emulator-webhooks", daemon=True)

    def start(self) -> Dispatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        while not self._stop.wait(DISPATCH_EVERY):
            try:
                for delivery in self.emu.take_webhook_deliveries():
                    self._pool.submit(self._deliver, delivery)
            except Exception:   # the dispatcher must outlive one bad look
                log.exception("webhook dispatcher: could not look at the jobs")

    def _deliver(self, delivery: dict[str, Any]) -> None:
        body = json.dumps(delivery["event"], separators=(",", ":")).encode()
        retries = list(self.emu.durations.webhook_retry_seconds)
        for attempt in range(len(retries) + 1):
            if self._stop.is_set():
                return
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "User-Agent": "OpenAI/1.0 (+emulator)",
                       "webhook-id": delivery["webhook_id"], "webhook-timestamp": timestamp,
                       "webhook-signature": sign(delivery["secret"], delivery["webhook_id"], timestamp, body)}
            try:
                request = urllib.request.Request(delivery["url"], data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError as exc:
                status = 0
                log.info("webhook %s to %s: %s", delivery["webhook_id"], delivery["url"], exc)
            self.emu.record_webhook_attempt(delivery["webhook_id"], status)
            if 200 <= status < 300 or attempt == len(retries):
                return
            if self._stop.wait(retries[attempt]):
                return
