"""The fault/latency/request-log layer in front of the data plane and ARM routes (never /_emulator)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import aux_tenants, token_tenant
from .core import Emulator
from .identity import is_identity_path
from .state import ApiError

CONTROL = "/_emulator"
_OPERATION_MARKERS = ("/operationStatuses/", "/operationResults/")


def error_response(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def account_of(emu: Emulator, path: str) -> str | None:
    """The account a request is about: `/{account}/openai/...`, `.../accounts/{account}[/...]`, or the account
    of an ARM async operation. None when the path names none (the request then fails routing anyway)."""
    if not path.startswith("/subscriptions/"):
        first = path.strip("/").split("/", 1)[0]
        return first or None
    if "/accounts/" in path:
        return path.split("/accounts/", 1)[1].split("/", 1)[0] or None
    for marker in _OPERATION_MARKERS:
        if marker in path:
            op = emu.operations.get(path.split(marker, 1)[1].split("/", 1)[0])
            return op.account if op is not None else None
    return None


class FaultLayer:
    """Logs every non-control request (start, end, duration, requests in flight) and injects the configured
    faults before routing it."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app, self.emu = app, emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL) or is_identity_path(scope["path"]):
            return await self.app(scope, receive, send)
        request = Request(scope)
        surface = "arm" if scope["path"].startswith("/subscriptions/") else "data"
        account = account_of(self.emu, scope["path"])
        entry: dict[str, Any] = {
            "time": self.emu.now(), "end": None, "duration_ms": None, "method": scope["method"],
            "path": scope["path"], "query": scope.get("query_string", b"").decode(), "surface": surface,
            "account": account, "auth_tenant": token_tenant(request.headers.get("authorization")),
            "api_key": bool(request.headers.get("api-key")),
            "has_aux": "x-ms-authorization-auxiliary" in request.headers,
            "aux_tenants": aux_tenants(request), "status": None,
        }
        scope["emulator.log"] = entry
        started = time.monotonic()
        self.emu.request_started(entry)
        try:
            await self._serve(scope, receive, send, entry, surface, account)
        finally:
            entry["end"] = self.emu.now()
            entry["duration_ms"] = round((time.monotonic() - started) * 1000, 1)
            self.emu.request_finished(entry)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any], surface: str,
                     account: str | None) -> None:
        faults = self.emu.faults
        targeted = not faults.accounts or account in faults.accounts
        if targeted and faults.latency_ms > 0:
            await asyncio.sleep(faults.latency_ms / 1000)
        injected = self._decide(surface) if targeted and faults.scope in ("all", surface) else None
        if injected is not None:
            entry["fault"] = injected.status
            entry["status"] = injected.status
            return await error_response(injected)(scope, receive, send)

        hold = self._take_hold(scope)

        async def logging_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                if hold:
                    await self._held()
            await send(message)

        await self.app(scope, receive, logging_send)

    def _take_hold(self, scope: Scope) -> bool:
        """Whether this request's response is held (`Faults.hold`); counts it against the hold's `count`."""
        with self.emu.lock:
            hold = self.emu.faults.hold
            if (not hold or hold["count"] <= 0 or hold["path"] not in scope["path"]
                    or (hold["method"] and hold["method"] != scope["method"])):
                return False
            hold["count"] -= 1
            return True

    async def _held(self) -> None:
        """Wait, the request's effect done and its response unsent, until the hold is cleared."""
        faults = self.emu.faults
        with self.emu.lock:
            faults.held += 1
            faults.held_total += 1
        try:
            while self.emu.faults.hold is not None:
                await asyncio.sleep(0.05)
        finally:
            with self.emu.lock:
                faults.held -= 1

    def _decide(self, surface: str) -> ApiError | None:
        f = self.emu.faults
        with self.emu.lock:
            retry = {"Retry-After": "1", "retry-after-ms": str(f.retry_after_ms),
                     "x-ms-retry-after-ms": str(f.retry_after_ms)}
            too_many = ApiError(
                429, "429" if surface == "data" else "TooManyRequests",
                "Requests have exceeded the rate limit of your current pricing tier. Please retry after 1 second.",
                headers=retry,
            )
            server = ApiError(500, "InternalServerError", "The server had an error processing your request.")
            if f.next_429 > 0:
                f.next_429 -= 1
                return too_many
            if f.next_500 > 0:
                f.next_500 -= 1
                return server
            if f.rate_429 and self.emu.rng.random() < f.rate_429:
                return too_many
            if f.rate_500 and self.emu.rng.random() < f.rate_500:
                return server
        return None
