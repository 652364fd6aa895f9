"""HTTP triggers: the operator API (runs, one run, deployments; the commands start (POST runs), claim,
approve, reject, retrain, retire, rollback). The app verifies the caller's Entra ID token itself (shared.azure.access), so the functions are
anonymous at the host: a function key would be a shared secret that names nobody. Routes under the host's
prefix (`/api`).

The commands come from the command table: one trigger per route shape (`runs/{run_id}/{action}`,
`environments/{environment}/{action}`), the command's name bound from the route (route parameters:
https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger#customize-the-http-endpoint).
No two routes here can match the same path, so nothing depends on which of two matching routes the host
prefers (it does not promise a literal segment wins over a parameter: azure-functions-host issue 3153)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import azure.functions as func

if TYPE_CHECKING:
    from shared.operator.api import ApiResponse

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS
# The command table's route shapes (shared.run.command_table.COMMAND_ROUTES; tests/unit/test_function_app.py
# holds them equal): spelled here so that loading the app does not load the table and its message types.
RUN_COMMAND, ENVIRONMENT_COMMAND, START_RUN = "runs/{run_id}/{action}", "environments/{environment}/{action}", "runs"
QUERY_PARAMS = ("limit", "after")   # GET runs pages (shared.operator.api.list_runs)


def _respond(answer: ApiResponse) -> func.HttpResponse:
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if answer.status == 401 else None
    return func.HttpResponse(answer.json(), status_code=answer.status, mimetype="application/json", headers=headers)


def _answer(action: str, req: func.HttpRequest) -> func.HttpResponse:
    from shared.app.bootstrap import get_deps  # at the first request, not when the app loads (cold start)
    from shared.operator.api import handle
    params = {**{k: v for k, v in req.params.items() if k in QUERY_PARAMS}, **req.route_params}
    return _respond(handle(action, authorization=req.headers.get("Authorization"), params=params,
                           body=req.get_body() or b"", deps=get_deps()))


def _command(route: str, req: func.HttpRequest) -> func.HttpResponse:
    from shared.app.bootstrap import get_deps
    from shared.operator.api import handle_command
    return _respond(handle_command(route, authorization=req.headers.get("Authorization"),
                                   params=dict(req.route_params), body=req.get_body() or b"", deps=get_deps()))


@bp.route(route="runs", methods=["GET"], auth_level=ANONYMOUS)
def operator_list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("list_runs", req)


@bp.route(route=START_RUN, methods=["POST"], auth_level=ANONYMOUS)
def operator_start_run(req: func.HttpRequest) -> func.HttpResponse:
    return _command(START_RUN, req)


@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=ANONYMOUS)
def operator_get_run(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("get_run", req)


@bp.route(route="deployments", methods=["GET"], auth_level=ANONYMOUS)
def operator_list_deployments(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("list_deployments", req)


@bp.route(route="history/{environment}", methods=["GET"], auth_level=ANONYMOUS)
def operator_history(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("history", req)


@bp.route(route=RUN_COMMAND, methods=["POST"], auth_level=ANONYMOUS)
def operator_run_command(req: func.HttpRequest) -> func.HttpResponse:
    return _command(RUN_COMMAND, req)


@bp.route(route=ENVIRONMENT_COMMAND, methods=["POST"], auth_level=ANONYMOUS)
def operator_environment_command(req: func.HttpRequest) -> func.HttpResponse:
    return _command(ENVIRONMENT_COMMAND, req)
