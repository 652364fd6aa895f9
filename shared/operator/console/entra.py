"""Signing in to the console with Entra ID in the browser: the OAuth 2.0 authorization code flow with PKCE
(Learn, "Microsoft identity platform and OAuth 2.0 authorization code flow").

1. `GET …/console/signin/entra`: a random `state` and PKCE `code_verifier` go into a short-lived cookie
   (`HttpOnly`, `SameSite=Lax` so that it comes back on Entra's redirect, path `…/console/signin`); the
   browser is sent to `<authority>/<tenant>/oauth2/v2.0/authorize` with the S256 `code_challenge`, the
   operator API's app registration as `client_id`, its scope `user_impersonation`, and the console's
   `…/console/signin/callback` as `redirect_uri`.
2. `GET …/console/signin/callback?code&state`: the state must match the cookie's; the app redeems the code
   at the token endpoint with the verifier and, as its client credential, a federated credential: a token of
   the function app's managed identity for `api://AzureADTokenExchange` (no client secret exists anywhere).
   The access token is verified as the operator API verifies every token, then kept in the session cookie.

The app registration (redirect URI, scope, federated credential) is what infra/scripts/app-registration.sh
creates. Nothing in a URL is shown as text: an error from Entra is named by its OAuth error code only.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import urllib.parse
from typing import TYPE_CHECKING

from shared.operator.console import pages
from shared.operator.console.app import (
    ConsoleRequest,
    ConsoleResponse,
    page,
    redirect,
    session_cookie,
    token_lifetime,
)
from shared.operator.console.layout import Safe, chrome, e, link

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

FLOW_COOKIE = "ftops_console_oauth"
FLOW_SECONDS = 600
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"   # what a federated credential's assertion is for
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_ERROR_CODE = re.compile(r"[a-z_]{1,40}")


def offered(deps: Deps) -> bool:
    s = deps.settings
    return bool(s.operator_tenant_id and s.operator_api_audience)


def client_id(audience: str) -> str:
    """The app registration's client id: the first OPERATOR_API_AUDIENCE (`api://<id>` or `<id>`)."""
    return audience.split(",")[0].strip().removeprefix("api://").rstrip("/")


def scope(audience: str) -> str:
    from shared.azure.identity import api_uri
    return f"openid {api_uri(audience)}/user_impersonation"


def callback_uri(request: ConsoleRequest) -> str:
    parts = urllib.parse.urlsplit(request.url)
    scheme = "https" if request.secure else parts.scheme
    return f"{scheme}://{request.header('Host') or parts.netloc}{request.base}/signin/callback"


def challenge_of(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def start(request: ConsoleRequest, deps: Deps) -> ConsoleResponse:
    from shared.azure.access import access_settings
    settings = access_settings(deps.settings)   # ConfigError (503) when the API is not configured
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(64)
    audience = deps.settings.operator_api_audience or ""
    query = urllib.parse.urlencode({
        "client_id": client_id(audience), "response_type": "code", "redirect_uri": callback_uri(request),
        "response_mode": "query", "scope": scope(audience), "state": state,
        "code_challenge": challenge_of(verifier), "code_challenge_method": "S256"})
    secure = "; Secure" if request.secure else ""
    cookie = (f"{FLOW_COOKIE}={state}.{verifier}; Path={request.base}/signin; Max-Age={FLOW_SECONDS}; HttpOnly; "
              f"SameSite=Lax{secure}")
    return redirect(f"{settings.authority}/{settings.tenant}/oauth2/v2.0/authorize?{query}", {"Set-Cookie": cookie})


def callback(request: ConsoleRequest, deps: Deps) -> ConsoleResponse:
    from azure.core.exceptions import ClientAuthenticationError

    from shared.azure.access import AccessDenied, access_settings, unverified_claims
    from shared.azure.identity import token_endpoint
    from shared.operator.api import verifier_for
    error = request.query.get("error")
    if error:
        code = error if _ERROR_CODE.fullmatch(error) else "unknown"
        return _refused(request, 401, f"Entra ID did not sign you in (OAuth error {code}).")
    state, _, verifier = (request.cookie(FLOW_COOKIE) or "").partition(".")
    if not state or not verifier or not hmac.compare_digest(request.query.get("state", ""), state):
        return _refused(request, 403, "This sign-in did not start in this browser, or took too long: start again.")
    settings = access_settings(deps.settings)
    audience = deps.settings.operator_api_audience or ""
    try:
        # the app's credential: its managed identity's token, which the registration's federated credential trusts
        assertion = deps.credential(tenant_id=settings.tenant).get_token(EXCHANGE_SCOPE).token
        answer = token_endpoint(settings.authority, settings.tenant, {
            "grant_type": "authorization_code", "client_id": client_id(audience),
            "code": request.query.get("code", ""), "redirect_uri": callback_uri(request), "code_verifier": verifier,
            "scope": scope(audience), "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion},
            ca_bundle=settings.ca_bundle)
        token = str(answer["access_token"])
        caller = verifier_for(deps).verify(f"Bearer {token}")
    except ClientAuthenticationError as exc:
        return _refused(request, 401, f"Entra ID refused the sign-in: {exc.message}")
    except (KeyError, OSError) as exc:
        return _refused(request, 503, f"the token endpoint did not answer as expected ({type(exc).__name__})")
    except AccessDenied as exc:
        return _refused(request, 401, f"the token was refused: {exc.reason}")
    headers = {"Set-Cookie": session_cookie(request, token, token_lifetime(unverified_claims(token).get("exp")))}
    # a page, not a redirect: the session cookie is SameSite=Strict, and a redirect at the end of Entra's
    # cross-site navigation would not carry it; a step from this page (same site) does
    home = f"{request.base}/"
    body = Safe(f'<meta http-equiv="refresh" content="0;url={e(home)}"><h1>Signed in</h1>'
                f"<p>as {e(caller.name or caller.oid)}. {link(home, 'Continue to the runs')}</p>")
    return page(200, chrome(request.base, "Signed in", body), headers)


def _refused(request: ConsoleRequest, status: int, text: str) -> ConsoleResponse:
    return page(status, pages.problem(request, status, text))
