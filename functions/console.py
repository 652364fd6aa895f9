"""HTTP triggers: the operator's console (server-rendered pages over the operator API; shared.operator.console).
Anonymous at the host like the operator API: the person signs in and every read and action goes through
the operator API's token checks. Routes under the host's prefix (`/api/console`)."""
import azure.functions as func

bp = func.Blueprint()
ANONYMOUS = func.AuthLevel.ANONYMOUS


def _answer(view: str, req: func.HttpRequest, **params: str) -> func.HttpResponse:
    from shared.app.bootstrap import get_deps  # at the first request, not when the app loads (cold start)
    from shared.operator.console import ConsoleRequest, handle
    request = ConsoleRequest(method=req.method, url=req.url, params={**req.route_params, **params},
                             query=dict(req.params), headers=dict(req.headers), body=req.get_body() or b"")
    answer = handle(view, request, get_deps)
    return func.HttpResponse(answer.body, status_code=answer.status, headers=answer.headers, mimetype=answer.mimetype)


@bp.route(route="console", methods=["GET"], auth_level=ANONYMOUS)
def console_runs(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("runs", req)


@bp.route(route="console/signin", methods=["GET", "POST"], auth_level=ANONYMOUS)
def console_sign_in(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("signin", req)


@bp.route(route="console/signin/entra", methods=["GET"], auth_level=ANONYMOUS)
def console_sign_in_entra(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("signin_entra", req)


@bp.route(route="console/signin/callback", methods=["GET"], auth_level=ANONYMOUS)
def console_sign_in_callback(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("signin_callback", req)


@bp.route(route="console/signout", methods=["POST"], auth_level=ANONYMOUS)
def console_sign_out(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("signout", req)


@bp.route(route="console/deployments", methods=["GET"], auth_level=ANONYMOUS)
def console_deployments(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("deployments", req)


@bp.route(route="console/assets/{name}", methods=["GET"], auth_level=ANONYMOUS)
def console_asset(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("asset", req)


@bp.route(route="console/runs/{run_id}", methods=["GET"], auth_level=ANONYMOUS)
def console_run(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("run", req)


@bp.route(route="console/runs/{run_id}/reports/{name}", methods=["GET"], auth_level=ANONYMOUS)
def console_report(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("report", req)


@bp.route(route="console/runs/{run_id}/{action}", methods=["POST"], auth_level=ANONYMOUS)
def console_act(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("act", req)


@bp.route(route="console/environments/{environment}/rollback", methods=["POST"], auth_level=ANONYMOUS)
def console_rollback(req: func.HttpRequest) -> func.HttpResponse:
    return _answer("act", req, action="rollback")
