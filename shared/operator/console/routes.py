"""The console's routes: one request in, the view it names out; the Origin and form-token checks every
POST passes first. functions/console.py names the view."""
from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shared.operator.console import entra, pages, run_page, signin
from shared.operator.console.app import Api, ConsoleRequest, ConsoleResponse, asset, csrf_for, page, redirect
from shared.run.config import ConfigError

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)

VIEWS: dict[str, Callable[[ConsoleRequest, Api], ConsoleResponse]] = {
    "runs": pages.runs, "run": run_page.run, "deployments": pages.deployments, "report": pages.report,
    "act": run_page.act,
}


def handle(view: str, request: ConsoleRequest, deps_factory: Callable[[], Deps],
           api: Callable[[Any, str], Api] = Api) -> ConsoleResponse:
    """One console request: `view` names the route (functions/console.py); `api` (tests: a fake) reaches
    the operator API as the signed-in person."""
    if view == "asset":
        return asset(request.params.get("name", ""))
    origin = request.header("Origin")
    # `Origin: null` is what a sandboxed frame or a data: URL sends: never the console's own page
    if request.method == "POST" and origin is not None and (origin.strip().lower() == "null" or
                                                            urlsplit(origin).netloc != request.header("Host")):
        return page(403, pages.problem(request, 403, "This form was sent from another site; it is refused."))
    try:
        deps = deps_factory()
        if view == "signin":
            return signin.sign_in(request, deps)
        if view == "signin_entra":
            return entra.start(request, deps)
        if view == "signin_callback":
            return entra.callback(request, deps)
        token = request.token()
        if view == "signout":
            return signin.sign_out(request, token)
        if token is None:
            return redirect(f"{request.base}/signin")
        if request.method == "POST" and not hmac.compare_digest(request.form().get("form_token", ""), csrf_for(token)):
            return page(403, pages.problem(request, 403, "This form is stale or did not come from the console; "
                                                         "open the page again."))
        return VIEWS[view](request, api(deps, token))
    except ConfigError as exc:
        log.error("console: not configured: %s", exc)
        return page(503, pages.problem(request, 503, f"The console is not configured: {exc}"))
    except ValueError as exc:
        return page(400, pages.problem(request, 400, str(exc)))
