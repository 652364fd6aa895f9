"""How a person signs in to the console (docs/console.md, "Signing in").

(1) Anywhere: Entra ID in the browser, the authorization code flow with PKCE (entra.py; locally against the
emulator's identity provider). (2) On the local stack only (`FTOPS_CREDENTIAL=local-dev`), a user name and
password form for the emulator's demo users (resource owner password grant, as the CLI does locally).
(3) Anywhere, pasting an access token for the API. Each way, the token is verified exactly as the operator
API verifies it before it is kept in the session cookie; the forms are bound to this browser by a
pre-session cookie (login CSRF).
"""
from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from shared.azure.access import unverified_claims
from shared.operator.console import pages
from shared.operator.console.app import (
    NOTES,
    PRESESSION_COOKIE,
    ConsoleRequest,
    ConsoleResponse,
    cleared_cookie,
    csrf_for,
    page,
    presession,
    presession_cookie,
    redirect,
    session_cookie,
    signin_form_token,
    token_lifetime,
)

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps
    from shared.azure.access import Caller

MAX_TOKEN = 8 * 1024   # an Entra ID access token is a few KB at most


def password_sign_in_offered(deps: Deps) -> bool:
    """Only against the local stack's identity provider; Entra ID sign-in in Azure is the browser's own."""
    return getattr(deps.settings, "credential", "default") == "local-dev"


def sign_in(request: ConsoleRequest, deps: Deps) -> ConsoleResponse:
    offered = password_sign_in_offered(deps)
    if request.method != "POST":
        return _form(request, deps, offered, 200, note=NOTES.get(request.query.get("note", "")))
    form = request.form()
    bound = request.cookie(PRESESSION_COOKIE)
    if not bound or not hmac.compare_digest(form.get("form_token", ""), signin_form_token(bound)):
        return _form(request, deps, offered, 403, error="This sign-in form is stale or did not come from the console "
                                                  "in this browser: sign in again here.")
    try:
        token = _token_from(form, deps, offered=offered)
        caller = _verify(deps, token)
    except _SignInFailed as exc:
        return _form(request, deps, offered, 401, error=str(exc), username=form.get("username", ""))
    exp = unverified_claims(token).get("exp")
    headers = {"Set-Cookie": session_cookie(request, token, token_lifetime(exp))}
    if not caller.may_read():
        return page(403, pages.problem(request, 403, f"Signed in as {caller.name or caller.oid}, who has none of the "
                                                     "app roles Reader, Operator or Approver.<env>: nothing to show."),
                    headers)
    return redirect(f"{request.base}/", headers)


def _form(request: ConsoleRequest, deps: Deps, offered: bool, status: int, **shown: str | None) -> ConsoleResponse:
    """The sign-in page, its forms bound to a new pre-session cookie set with it."""
    from shared.operator.console.entra import offered as entra_offered
    value = presession()
    return page(status, pages.sign_in_page(request, offered=offered, form_token=signin_form_token(value),
                                           entra=entra_offered(deps), **shown),
                {"Set-Cookie": presession_cookie(request, value)})


def sign_out(request: ConsoleRequest, token: str | None) -> ConsoleResponse:
    if request.method == "POST" and token and not hmac.compare_digest(request.form().get("form_token", ""),
                                                                       csrf_for(token)):
        return redirect(f"{request.base}/")
    return redirect(f"{request.base}/signin?note=signed-out", {"Set-Cookie": cleared_cookie(request)})


class _SignInFailed(Exception):
    pass


def _token_from(form: dict[str, str], deps: Deps, *, offered: bool) -> str:
    pasted = form.get("token", "").strip()
    if pasted:
        if len(pasted) > MAX_TOKEN:
            raise _SignInFailed("that is not an access token (too long)")
        return pasted.removeprefix("Bearer ").strip()
    if not offered:
        raise _SignInFailed("paste an access token for the ftops API (see the command above)")
    username, password = form.get("username", "").strip(), form.get("password", "")
    if not username or not password:
        raise _SignInFailed("enter a user name and a password")
    from azure.core.exceptions import ClientAuthenticationError

    from shared.azure.identity import LocalUserCredential, scope_for
    s = deps.settings
    if not s.operator_tenant_id or not s.operator_api_audience:
        raise _SignInFailed("OPERATOR_TENANT_ID and OPERATOR_API_AUDIENCE are not set: the API accepts no sign-in")
    credential = LocalUserCredential(s.operator_authority, s.operator_tenant_id, username, password,
                                     ca_bundle=s.ca_bundle, client_id="ftops-console")
    try:
        return credential.get_token(scope_for(s.operator_api_audience)).token
    except ClientAuthenticationError as exc:
        raise _SignInFailed(str(exc.message)) from None
    except OSError as exc:
        raise _SignInFailed(f"the identity provider cannot be reached: {exc}") from None


def _verify(deps: Deps, token: str) -> Caller:
    from shared.azure.access import AccessDenied
    from shared.operator.api import verifier_for
    try:
        return verifier_for(deps).verify(f"Bearer {token}")
    except AccessDenied as exc:
        raise _SignInFailed(f"the token was refused: {exc.reason}") from None
