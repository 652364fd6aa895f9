"""The emulator's Entra ID: the OAuth 2.0 authorization code flow with PKCE, as the console uses it in Azure.

From Learn, "Microsoft identity platform and OAuth 2.0 authorization code flow"
(learn.microsoft.com/entra/identity-platform/v2-oauth2-auth-code-flow):
- `GET /{tenant}/oauth2/v2.0/authorize?client_id&response_type=code&redirect_uri&scope&state
  &code_challenge&code_challenge_method=S256[&response_mode=query]`: a sign-in page; the person signs in
  (the demo users, no consent screen: "consent-free" for them), the browser is sent to
  `redirect_uri?code=…&state=…`. A request whose client or redirect URI is not registered is answered on the
  page itself, never redirected (AADSTS700016, AADSTS50011).
- `POST /{tenant}/oauth2/v2.0/token` with `grant_type=authorization_code, client_id, code, redirect_uri,
  code_verifier` and the client's credential: the access token for the signed-in person.

Stricter than Entra, never kinder: PKCE is required with S256 (Entra also takes `plain`, or none for a
confidential client); a code is single-use (AADSTS54005) and lives 10 minutes (Learn: "about 10 minutes");
the client must authenticate with a federated credential (`client_assertion_type=urn:ietf:params:oauth:
client-assertion-type:jwt-bearer`): the app registration has no secret (AADSTS7000215 for one), and the
assertion must be the function app's managed identity's token (here its local stand-in `local-dev.<tenant>`,
local/emulator/auth.py), which the registration's federated credential trusts (AADSTS70021 otherwise).
Redirect URIs match exactly, path case included; on loopback hosts the port is not compared ("Redirect URI
(reply URL) restrictions and limitations", localhost exceptions): the dev host takes any free port.
"""
from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from .auth import DEFAULT_PRINCIPAL, token_principal, token_tenant

CODE_SECONDS = 600
# The operator API's app registration as ftops's script creates it (docs/deploy.md): the console's redirect
# URI (here on the dev host's loopback address) and one federated credential, the app's managed identity.
REDIRECT_URIS = ("http://127.0.0.1/api/console/signin/callback", "http://localhost/api/console/signin/callback")
FEDERATED_SUBJECT = DEFAULT_PRINCIPAL   # the function app's managed identity (local-dev tokens name it `app`)
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
# RFC 7636 §4.2: an S256 challenge is BASE64URL(SHA256(verifier)) without padding: 43 base64url characters
S256_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass
class Grant:
    """What one sign-in granted: redeemable once, by this client, at this redirect URI, with this verifier."""
    client_id: str
    redirect_uri: str
    challenge: str
    scope: str
    username: str
    tenant: str
    expires: float
    redeemed: bool = False


class Codes:
    """Pending sign-in pages and issued codes (in memory, per emulator)."""

    def __init__(self) -> None:
        self.pending: dict[str, dict[str, str]] = {}
        self.grants: dict[str, Grant] = {}
        self.lock = threading.Lock()


def registered_redirect(uri: str) -> bool:
    try:
        asked = urllib.parse.urlsplit(uri)
        asked_port = asked.port
    except ValueError:
        return False
    for known in map(urllib.parse.urlsplit, REDIRECT_URIS):
        same = (asked.scheme, asked.hostname, asked.path, asked.query) == (known.scheme, known.hostname, known.path,
                                                                          known.query)
        if same and (asked.hostname in LOOPBACK or asked_port == known.port):
            return True
    return False


def _page(status: int, title: str, body: str) -> HTMLResponse:
    return HTMLResponse(f"<!doctype html><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>{body}",
                        status_code=status, headers={"Content-Security-Policy": "default-src 'none'",   # form-action would
                                                     # also bind the redirect back to the app: none
                                                     "Cache-Control": "no-store"})


def _refusal_page(code: str, text: str) -> HTMLResponse:
    return _page(400, "Sign in: request refused", f"<p id=error>{html.escape(code)}: {html.escape(text)}</p>")


def _back(redirect_uri: str, **params: str) -> Response:
    return RedirectResponse(f"{redirect_uri}?{urllib.parse.urlencode(params)}", status_code=302)


async def authorize(request: Request) -> Response:
    from .identity import API_CLIENT_ID, USERS
    tenant, codes = request.path_params["tenant"], _codes(request)
    if request.method == "POST":
        form = {k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        with codes.lock:
            asked = codes.pending.get(form.get("request", ""))
        if asked is None:
            return _refusal_page("AADSTS90014", "The sign-in request expired or is unknown: start again.")
        user = USERS.get(form.get("username", "").strip().lower())
        from .identity import DEMO_PASSWORD
        if user is None or user.tenant != tenant or form.get("password") != DEMO_PASSWORD:
            return _sign_in_form(form["request"], tenant, "AADSTS50126: Error validating credentials due to invalid "
                                                          "username or password.")
        code = secrets.token_urlsafe(32)
        with codes.lock:
            codes.pending.pop(form["request"], None)
            codes.grants[code] = Grant(asked["client_id"], asked["redirect_uri"], asked["code_challenge"],
                                       asked["scope"], user.username, tenant, time.time() + CODE_SECONDS)
        return _back(asked["redirect_uri"], code=code, state=asked.get("state", ""))
    q = dict(request.query_params)
    if q.get("client_id") != API_CLIENT_ID:
        return _refusal_page("AADSTS700016", f"Application with identifier '{q.get('client_id', '')[:80]}' was not "
                                             f"found in the directory '{tenant}'.")
    redirect_uri = q.get("redirect_uri", "")
    if not registered_redirect(redirect_uri):
        return _refusal_page("AADSTS50011", f"The redirect URI '{redirect_uri[:200]}' specified in the request does "
                                            f"not match the redirect URIs configured for the application "
                                            f"'{API_CLIENT_ID}'.")
    state = q.get("state", "")
    if q.get("response_type") != "code":
        return _back(redirect_uri, error="unsupported_response_type", state=state,
                     error_description="AADSTS700054: response_type 'code' is expected here.")
    if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
        return _back(redirect_uri, error="invalid_request", state=state,
                     error_description="AADSTS9002325: Proof Key for Code Exchange with S256 is required.")
    if not S256_CHALLENGE.fullmatch(q["code_challenge"]):
        return _back(redirect_uri, error="invalid_request", state=state,
                     error_description="AADSTS501491: Invalid size of Code_Challenge parameter.")
    scopes = q.get("scope", "").split()
    api = [s for s in scopes if s.startswith(f"api://{API_CLIENT_ID}/")]
    if not api or any(s not in ("openid", "profile", "offline_access", *api) for s in scopes):
        return _back(redirect_uri, error="invalid_scope", state=state,
                     error_description=f"AADSTS70011: The provided value for scope {q.get('scope', '')[:200]!r} is "
                                       "not valid for this emulator's one API.")
    request_id = secrets.token_urlsafe(16)
    with codes.lock:
        codes.pending[request_id] = {"client_id": API_CLIENT_ID, "redirect_uri": redirect_uri, "state": state,
                                     "code_challenge": q["code_challenge"], "scope": " ".join(scopes)}
    return _sign_in_form(request_id, tenant)


def _sign_in_form(request_id: str, tenant: str, error: str | None = None) -> HTMLResponse:
    shown = f"<p id=error>{html.escape(error)}</p>" if error else ""
    return _page(401 if error else 200, f"Sign in to {tenant}",
                 f"{shown}<form method=post><input type=hidden name=request value=\"{html.escape(request_id)}\">"
                 "<label for=username>Email</label><input id=username name=username autocomplete=username>"
                 "<label for=password>Password</label><input id=password name=password type=password>"
                 "<button id=next type=submit>Sign in</button></form>")


def redeem(request: Request, form: dict[str, str], tenant: str) -> tuple[Any, str] | Response:
    """The authorization_code grant: (the signed-in demo user, the granted scope) or Entra's refusal."""
    from .identity import USERS, _aad_error
    if form.get("client_secret"):
        return _aad_error(401, "invalid_client", "AADSTS7000215", "Invalid client secret provided (this app "
                                                                  "registration has no secret).")
    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        return _aad_error(401, "invalid_client", "AADSTS7000218", "The request body must contain the following "
                                                                  "parameter: 'client_assertion' or 'client_secret'.")
    bearer = f"Bearer {form['client_assertion']}"
    if (token_tenant(bearer), token_principal(bearer)) != (tenant, FEDERATED_SUBJECT):
        return _aad_error(401, "invalid_client", "AADSTS70021", "No matching federated identity record found for "
                                                                "presented assertion.")
    codes = _codes(request)
    with codes.lock:
        grant = codes.grants.get(form.get("code", ""))
        if grant is not None and not grant.redeemed and grant.expires > time.time():
            problem = _mismatch(grant, form, tenant)
            if problem is None:
                grant.redeemed = True
                return USERS[grant.username], grant.scope
            return _aad_error(400, "invalid_grant", *problem)
    if grant is not None and grant.redeemed:
        return _aad_error(400, "invalid_grant", "AADSTS54005", "OAuth2 Authorization code was already redeemed.")
    return _aad_error(400, "invalid_grant", "AADSTS70008", "The provided authorization code or refresh token has "
                                                           "expired or is not valid.")


def _mismatch(grant: Grant, form: dict[str, str], tenant: str) -> tuple[str, str] | None:
    if form.get("client_id") != grant.client_id or tenant != grant.tenant:
        return "AADSTS700005", "Provided Authorization Code is intended to use against other tenant or client."
    if form.get("redirect_uri") != grant.redirect_uri:
        return "AADSTS50148", "The redirect_uri does not match the one of the authorization request."
    verifier = form.get("code_verifier", "")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    if not verifier or challenge != grant.challenge:
        return "AADSTS501481", "The Code_Verifier does not match the code_challenge supplied in the authorization request."
    return None


def _codes(request: Request) -> Codes:
    return request.app.state.codes  # type: ignore[no-any-return]
