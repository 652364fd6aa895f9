"""HTTP trigger: the hub's signed fine-tuning job webhooks (push first; the poll timer is the fallback).
Anonymous at the host: the signature (HUB_WEBHOOK_SECRET) is what authenticates the hub, in the app."""
import azure.functions as func

bp = func.Blueprint()
ROUTE = "hub/webhooks"


@bp.route(route=ROUTE, methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
def hub_webhook(req: func.HttpRequest) -> func.HttpResponse:
    from shared.app.bootstrap import get_deps  # at the first delivery, not when the app loads (cold start)
    from shared.stages.webhooks import receive
    answer = receive(req.get_body() or b"", req.headers, get_deps())
    return func.HttpResponse(answer.json(), status_code=answer.status, mimetype="application/json")
