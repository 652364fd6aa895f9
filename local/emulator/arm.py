"""ARM (management plane) for Microsoft.CognitiveServices accounts and deployments; any api-version."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import deployments, surfaces
from .auth import aux_principals, aux_tenants, check_arm, token_principal
from .core import Emulator
from .state import Account, ApiError, Operation

PROVIDER = "/providers/Microsoft.CognitiveServices"
ACCOUNT = "/subscriptions/{sub}/resourceGroups/{rg}" + PROVIDER + "/accounts/{account}"
OPERATIONS = "/subscriptions/{sub}" + PROVIDER + "/locations/{region}"
POLL_SECONDS = "1"  # Retry-After on async operations: ARM pollers honour it, so keep it small


def _emu(request: Request) -> Emulator:
    return request.app.state.emulator  # type: ignore[no-any-return]


def _account(request: Request) -> Account:
    emu, p = _emu(request), request.path_params
    account = emu.accounts.get(p["account"])
    if account is None or account.subscription != p["sub"] or account.resource_group.lower() != p["rg"].lower():
        raise ApiError(
            404, "ResourceNotFound",
            f"The Resource 'Microsoft.CognitiveServices/accounts/{p['account']}' under resource group "
            f"'{p['rg']}' was not found.",
        )
    check_arm(request, account)
    request.scope["emulator.account"] = account.name
    return account


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _op_headers(request: Request, account: Account, op: Operation) -> dict[str, str]:
    root = f"{_base(request)}/subscriptions/{account.subscription}{PROVIDER}/locations/{account.region}"
    query = f"?api-version={request.query_params.get('api-version', '2024-10-01')}"
    return {
        "Azure-AsyncOperation": f"{root}/operationStatuses/{op.id}{query}",
        "Location": f"{root}/operationResults/{op.id}{query}",
        "Retry-After": POLL_SECONDS,
    }


async def get_account(request: Request) -> Response:
    account = _account(request)
    endpoint = f"{_base(request)}/{account.name}/"
    return JSONResponse({
        "id": account.resource_id, "name": account.name, "type": "Microsoft.CognitiveServices/accounts",
        "location": account.region, "kind": "OpenAI", "sku": {"name": "S0"}, "tags": {"role": account.role},
        "properties": {"endpoint": endpoint, "endpoints": {"OpenAI Language Model Instance API": endpoint},
                       "provisioningState": "Succeeded", "customSubDomainName": account.name},
    })


async def list_deployments(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    emu.tick()
    items = [deployments.to_json(d, account) for (acc, _), d in sorted(emu.deployments.items()) if acc == account.name]
    return JSONResponse({"value": items})


async def get_deployment(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    record = emu.deployment(account.name, request.path_params["name"])
    if record is None:
        raise ApiError(404, "DeploymentNotFound", f"Deployment '{request.path_params['name']}' not found.")
    return JSONResponse(deployments.to_json(record, account))


async def put_deployment(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    try:
        body: dict[str, Any] = json.loads(await request.body() or b"{}")
    except json.JSONDecodeError:
        raise ApiError(400, "InvalidRequestContent", "The request content is not valid JSON.") from None
    model = (body.get("properties") or {}).get("model") or {}
    aux = aux_tenants(request)
    request.scope["emulator.log"].update(
        model_name=model.get("name"), model_source=model.get("source"),
        model_source_account=model.get("sourceAccount"), aux_tenants=aux,
    )
    record, created, op = deployments.create_or_update(
        emu, account, request.path_params["name"], body, aux,
        caller=token_principal(request.headers.get("authorization")), aux=aux_principals(request))
    return JSONResponse(deployments.to_json(record, account), status_code=201 if created else 200,
                        headers=_op_headers(request, account, op))


async def delete_deployment(request: Request) -> Response:
    account, emu = _account(request), _emu(request)
    op = deployments.delete(emu, account, request.path_params["name"])
    if op is False:
        return Response(status_code=204)
    if op is True:   # ARM's async operations guideline: a DELETE completed synchronously answers 200
        return Response(status_code=200)
    return Response(status_code=202, headers=_op_headers(request, account, op))


def _operation(request: Request) -> tuple[Emulator, Operation]:
    emu = _emu(request)
    op = emu.operations.get(request.path_params["op"])
    if op is None or emu.accounts[op.account].subscription != request.path_params["sub"]:
        raise ApiError(404, "OperationNotFound", f"Operation '{request.path_params['op']}' not found.")
    check_arm(request, emu.accounts[op.account])
    return emu, op


async def operation_status(request: Request) -> Response:
    emu, op = _operation(request)
    status, error = deployments.operation_status(emu, op)
    body: dict[str, Any] = {"id": str(request.url.path), "name": op.id, "status": status}
    if error:
        body["error"] = error
    headers = {"Retry-After": POLL_SECONDS} if status == "InProgress" else {}
    return JSONResponse(body, headers=headers)


async def operation_result(request: Request) -> Response:
    emu, op = _operation(request)
    status, error = deployments.operation_status(emu, op)
    if status == "InProgress":
        return Response(status_code=202, headers={"Retry-After": POLL_SECONDS, "Location": str(request.url)})
    if error:
        raise ApiError(400, error["code"], error["message"])
    record = emu.deployment(op.account, op.deployment)
    if op.kind == "put" and record is not None:
        return JSONResponse(deployments.to_json(record, emu.accounts[op.account]))
    return Response(status_code=204)


# Fine-tuned model retirements (Learn "Azure OpenAI model retirements", fine-tuned models, 2026-10): deployments
# of gpt-4o / gpt-4o-mini fine-tunes retire 2027-10-01, the gpt-4.1 family 2027-10-14, o4-mini 2027-10-16; new
# fine-tuning closes earlier, "from 2027-04" (the day is the emulator's choice: the first of that month).
RETIREMENTS = {"gpt-4o": "2027-10-01", "gpt-4o-mini": "2027-10-01", "gpt-4.1": "2027-10-14",
               "gpt-4.1-mini": "2027-10-14", "gpt-4.1-nano": "2027-10-14", "o4-mini": "2027-10-16"}
TRAINING_CLOSES = "2027-04-01"


async def list_models(request: Request) -> Response:
    """`GET /subscriptions/{sub}/providers/Microsoft.CognitiveServices/locations/{region}/models`: the models a
    region offers, each `{kind, skuName, model: {format, name, version, deprecation: {fineTune, inference}}}`
    (spec `Model`, `AccountModel`, `ModelDeprecationInfo`). The fine-tunable ones, here."""
    emu, sub = _emu(request), request.path_params["sub"]
    accounts = [a for a in emu.accounts.values() if a.subscription == sub]
    if not accounts:
        raise ApiError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
    check_arm(request, accounts[0])
    value = []
    for model_id in sorted(surfaces.FINE_TUNABLE):
        name, version = model_id.rsplit("-", 3)[0], "-".join(model_id.rsplit("-", 3)[1:])
        if not version[:4].isdigit():   # gpt-35-turbo-0125 style
            name, version = model_id.rsplit("-", 1)
        dates: dict[str, str] = {}
        if name in RETIREMENTS:
            dates = {"fineTune": f"{TRAINING_CLOSES}T00:00:00Z", "inference": f"{RETIREMENTS[name]}T00:00:00Z"}
        dates.update(emu.durations.model_deprecations.get(name, {}))
        model: dict[str, Any] = {"format": "OpenAI", "name": name, "version": version,
                                 "capabilities": {"fineTune": "true"}, "lifecycleStatus": "GenerallyAvailable"}
        if dates:
            model["deprecation"] = dates
        value.append({"kind": "OpenAI", "skuName": "S0", "model": model})
    return JSONResponse({"value": value})


def routes() -> list[Route]:
    return [
        Route(ACCOUNT, get_account, methods=["GET"]),
        Route(ACCOUNT + "/deployments", list_deployments, methods=["GET"]),
        Route(ACCOUNT + "/deployments/{name}", get_deployment, methods=["GET"]),
        Route(ACCOUNT + "/deployments/{name}", put_deployment, methods=["PUT"]),
        Route(ACCOUNT + "/deployments/{name}", delete_deployment, methods=["DELETE"]),
        Route(OPERATIONS + "/models", list_models, methods=["GET"]),
        Route(OPERATIONS + "/operationStatuses/{op}", operation_status, methods=["GET"]),
        Route(OPERATIONS + "/operationResults/{op}", operation_result, methods=["GET"]),
    ]
