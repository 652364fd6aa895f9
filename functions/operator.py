"""HTTP triggers: the operator API (approve, reject, rollback, retire; runs and one run). The app verifies
the caller's Entra ID token itself (shared.access), so the functions are anonymous at the host: a function
key would be a shared secret that names nobody. Routes under the host's prefix (`/api`)."""
import azure.functions as func

from shared.bootstrap import get_deps
from shared.operator_api import handle

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


def _answer(action: str, req: func.HttpRequest) -> func.HttpResponse:
    answer = handle(action, authorization=req.headers.get("Authorization"), params=dict(req.route_params),
                    body=req.get_body() or b"", deps=get_deps())
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if answer.status == 401 else None
    return func.HttpResponse(answer.json(), status_code=answer.status, mimetype="application/json", headers=headers)


@bp.route(route="runs", methods=["GET"], auth_level=ANONYMOUS)
def operator_list_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("list_runs", req)


@bp.route(route="runs/{run_id}", methods=["GET"], auth_level=ANONYMOUS)
def operator_get_run(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("get_run", req)


@bp.route(route="runs/{run_id}/approve", methods=["POST"], auth_level=ANONYMOUS)
def operator_approve(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("approve", req)


@bp.route(route="runs/{run_id}/reject", methods=["POST"], auth_level=ANONYMOUS)
def operator_reject(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("reject", req)


@bp.route(route="runs/{run_id}/retrain", methods=["POST"], auth_level=ANONYMOUS)
def operator_retrain(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("retrain", req)


@bp.route(route="runs/{run_id}/retire", methods=["POST"], auth_level=ANONYMOUS)
def operator_retire(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("retire", req)


@bp.route(route="environments/{environment}/rollback", methods=["POST"], auth_level=ANONYMOUS)
def operator_rollback(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("rollback", req)
