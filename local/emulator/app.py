"""The Starlette app: data plane + ARM routes behind a fault/latency/request-log layer, and /_emulator control."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import arm, authorize, dataplane, identity, webhooks
from .core import Emulator
from .faults import CONTROL, FaultLayer, error_response
from .state import Account, ApiError, Topology


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _not_found(request: Request, exc: Exception) -> Response:
    code = "ResourceNotFound" if request.url.path.startswith("/subscriptions/") else "404"
    return error_response(ApiError(404, code, "Resource not found"))


# --- control -----------------------------------------------------------------------------------------
def _emu(request: Request) -> Emulator:
    return request.app.state.emulator  # type: ignore[no-any-return]


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    return json.loads(raw) if raw else {}


def state_view(emu: Emulator) -> dict[str, Any]:
    with emu.lock:
        emu.tick()
        now = emu.now()

        def dep_view(d: Any) -> dict[str, Any]:
            account = emu.accounts[d.account]
            return {"account": d.account, "region": account.region, "deployment": d.name,
                    "model": d.model.get("name"), "sku": d.sku.get("name"), "capacity": d.sku.get("capacity"),
                    "tags": d.tags, "state": d.state, "finetuned": d.finetuned,
                    "source": d.model.get("source"), "source_account": d.model.get("sourceAccount"),
                    "last_used_at": d.last_used_at}

        deps = sorted(emu.deployments.values(), key=lambda d: (d.account, d.name))
        return {
            "now": now,
            "jobs_created": emu.jobs_created,
            "jobs": [{"id": j.id, "account": j.account, "status": j.status, "model": j.model,
                      "fine_tuned_model": j.fine_tuned_name if j.status == "succeeded" else None,
                      "status_override": emu.faults.status_override.get(j.id),
                      "ended_wall": emu.job_ended_wall.get(j.id)}
                     for j in sorted(emu.jobs.values(), key=lambda j: j.created_at)],
            "files": len(emu.files),
            "deployments": [dep_view(d) for d in deps if emu.accounts[d.account].role == "spoke"],
            "hub_deployments": [dep_view(d) for d in deps if emu.accounts[d.account].role == "hub"],
            "accounts": [a.to_dict() for a in emu.accounts.values()],
            "webhook_endpoints": [{k: v for k, v in e.items() if k != "signing_secret"}
                                  for e in emu.webhook_endpoints.values()],
            "webhooks": list(emu.webhook_log.values()),
        }


async def control_state(request: Request) -> Response:
    return JSONResponse(state_view(_emu(request)))


async def control_faults(request: Request) -> Response:
    emu = _emu(request)
    if request.method == "POST":
        with emu.lock:
            emu.faults.update(await _body(request))
    return JSONResponse(vars(emu.faults))


async def control_config(request: Request) -> Response:
    emu = _emu(request)
    if request.method == "POST":
        with emu.lock:
            for key, value in (await _body(request)).items():
                if key not in emu.durations.__dataclass_fields__:
                    raise ApiError(400, "UnknownSetting", f"unknown setting {key!r}")
                setattr(emu.durations, key, value)
    return JSONResponse(vars(emu.durations))


async def control_advance(request: Request) -> Response:
    emu = _emu(request)
    emu.advance(float((await _body(request)).get("seconds", 0)))
    return JSONResponse({"now": emu.now()})


async def control_accounts(request: Request) -> Response:
    emu = _emu(request)
    if request.method == "POST":
        try:
            emu.add_account(Account.from_dict(await _body(request)))
        except ValueError as exc:
            raise ApiError(400, "InvalidAccount", str(exc)) from None
    return JSONResponse({"accounts": [a.to_dict() for a in emu.accounts.values()]})


async def control_vanish(request: Request) -> Response:
    body = await _body(request)
    if not _emu(request).vanish(str(body.get("account")), str(body.get("deployment"))):
        raise ApiError(404, "DeploymentNotFound", "no such deployment")
    return JSONResponse({"vanished": True})


async def control_reset(request: Request) -> Response:
    _emu(request).reset()
    return JSONResponse({"reset": True})


async def control_requests(request: Request) -> Response:
    emu = _emu(request)
    if request.method == "DELETE":
        emu.clear_requests()
    return JSONResponse({"requests": list(emu.request_log), **emu.request_stats()})


def control_routes() -> list[Route]:
    return [
        Route(CONTROL + "/state", control_state, methods=["GET"]),
        Route(CONTROL + "/faults", control_faults, methods=["GET", "POST"]),
        Route(CONTROL + "/config", control_config, methods=["GET", "POST"]),
        Route(CONTROL + "/advance", control_advance, methods=["POST"]),
        Route(CONTROL + "/accounts", control_accounts, methods=["GET", "POST"]),
        Route(CONTROL + "/vanish", control_vanish, methods=["POST"]),
        Route(CONTROL + "/reset", control_reset, methods=["POST"]),
        Route(CONTROL + "/requests", control_requests, methods=["GET", "DELETE"]),
    ]


def build_app(emulator: Emulator | Topology) -> Starlette:
    emu = emulator if isinstance(emulator, Emulator) else Emulator(emulator)
    app = Starlette(
        routes=control_routes() + identity.routes(CONTROL) + arm.routes() + dataplane.routes() + webhooks.routes(),
        exception_handlers={ApiError: _api_error, 404: _not_found, 405: _not_found},
    )
    app.state.emulator = emu
    app.state.identity = identity.IdentityProvider()
    app.state.codes = authorize.Codes()
    app.add_middleware(FaultLayer, emulator=emu)  # type: ignore[arg-type]
    return app
