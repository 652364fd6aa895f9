"""The emulator as the Microsoft identity platform (Entra ID) for the operator API, one machine only.

Per tenant, as Entra ID publishes them (Learn: "OpenID Connect on the Microsoft identity platform",
"Access token claims reference", "Microsoft identity platform and OAuth 2.0 Resource Owner Password
Credentials"):
- `GET /{tenant}/v2.0/.well-known/openid-configuration`: issuer `<base>/{tenant}/v2.0`, `jwks_uri`,
  `token_endpoint`;
- `GET /{tenant}/discovery/v2.0/keys`: the RSA signing keys (`kty, use, kid, n, e`);
- `POST /{tenant}/oauth2/v2.0/token` (form: `grant_type=password, client_id, scope, username, password`):
  an RS256 v2.0 access token for a named demo user (`aud` = the API's client id, `iss`, `tid`, `oid`,
  `name`, `preferred_username`, `roles` = the user's app roles, `iat`, `nbf`, `exp`, `ver`);
- `GET|POST /{tenant}/oauth2/v2.0/authorize` and `grant_type=authorization_code` on the token endpoint: the
  authorization code flow with PKCE (local/emulator/authorize.py), as the console signs people in.
Refusals as Entra words them: unknown user (AADSTS50034), wrong password (AADSTS50126), unknown API
(AADSTS500011), unsupported grant (AADSTS70003). Control (tests only): `POST /_emulator/identity/token`
mints a token with overrides (tenant, audience, lifetime, roles) to prove the app refuses it.
"""
from __future__ import annotations

import base64
import re
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .authorize import authorize

DEMO_TENANT = "tenant-contoso"
# The operator API's app registration (its client id is the `aud` of v2.0 access tokens for it).
API_CLIENT_ID = "c0ffee00-0000-4000-8000-00000000f7a9"
API_SCOPE = f"api://{API_CLIENT_ID}/.default"
DEMO_PASSWORD = "local-demo-only"   # never valid anywhere but this emulator
TOKEN_LIFETIME = 3600
_PATH = re.compile(r"^/[^/]+/(v2\.0/\.well-known/openid-configuration|discovery/v2\.0/keys|oauth2/v2\.0/(token|authorize))$")


@dataclass(frozen=True)
class DemoUser:
    username: str
    oid: str
    name: str
    roles: tuple[str, ...]
    tenant: str = DEMO_TENANT


# Named demo users and their app roles on the operator API (docs/operator-api.md lists the roles).
USERS = {u.username: u for u in (
    DemoUser("demo-operator@contoso.example", "6f1c2d3e-0000-4000-8000-0000000000a1", "Demo Operator",
             ("Approver.prod", "Operator", "Reader")),
    DemoUser("demo-scientist@contoso.example", "6f1c2d3e-0000-4000-8000-0000000000b2", "Demo Data Scientist",
             ("Reader",)),
    DemoUser("demo-approver2@contoso.example", "6f1c2d3e-0000-4000-8000-0000000000c3", "Second Approver",
             ("Approver.prod", "Reader")),
    DemoUser("demo-reader@contoso.example", "6f1c2d3e-0000-4000-8000-0000000000d4", "Demo Reader", ("Reader",)),
)}


def is_identity_path(path: str) -> bool:
    """Identity endpoints are another service (login.microsoftonline.com): the hub's faults don't apply."""
    return _PATH.match(path) is not None


class IdentityProvider:
    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {"keys": [{"kty": "RSA", "use": "sig", "kid": self.kid, "n": _b64(numbers.n), "e": _b64(numbers.e)}]}

    def mint(self, base_url: str, user: DemoUser, *, audience: str = API_CLIENT_ID, tenant: str | None = None,
             lifetime: int = TOKEN_LIFETIME, roles: tuple[str, ...] | None = None, issued_at: int | None = None,
             app_only: bool = False, azp: str = "ftops-cli") -> str:
        tenant = tenant or user.tenant
        now = int(time.time()) if issued_at is None else issued_at
        claims = {"aud": audience, "iss": f"{base_url}/{tenant}/v2.0", "iat": now, "nbf": now,
                  "exp": now + lifetime, "tid": tenant, "oid": user.oid, "sub": user.oid, "name": user.name,
                  "preferred_username": user.username, "roles": list(user.roles if roles is None else roles),
                  "ver": "2.0", "azp": azp,
                  # a user's (delegated) token names the API scope it was granted; an app-only token has none
                  "scp": None if app_only else "user_impersonation"}
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _idp(request: Request) -> IdentityProvider:
    return request.app.state.identity  # type: ignore[no-any-return]


def _aad_error(status: int, error: str, code: str, text: str) -> Response:
    return JSONResponse({"error": error, "error_description": f"{code}: {text}", "error_codes": [int(code.removeprefix("AADSTS"))]},
                        status_code=status)


async def discovery(request: Request) -> Response:
    tenant, base = request.path_params["tenant"], _base(request)
    return JSONResponse({
        "issuer": f"{base}/{tenant}/v2.0",
        "jwks_uri": f"{base}/{tenant}/discovery/v2.0/keys",
        "token_endpoint": f"{base}/{tenant}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base}/{tenant}/oauth2/v2.0/authorize",
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "tenant_region_scope": "EU",
    })


async def keys(request: Request) -> Response:
    return JSONResponse(_idp(request).jwks())


async def token(request: Request) -> Response:
    form = {k: v[0] for k, v in urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace")).items()}
    tenant = request.path_params["tenant"]
    if form.get("grant_type") == "authorization_code":
        from .authorize import redeem
        granted = redeem(request, form, tenant)
        if isinstance(granted, Response):
            return granted
        user, scope = granted
        access = _idp(request).mint(_base(request), user, azp=str(form.get("client_id")))
        return JSONResponse({"token_type": "Bearer", "scope": scope, "expires_in": TOKEN_LIFETIME,
                             "ext_expires_in": TOKEN_LIFETIME, "access_token": access})
    if form.get("grant_type") != "password":
        return _aad_error(400, "unsupported_grant_type", "AADSTS70003",
                          "The app requested an unsupported grant type (this emulator issues ROPC and "
                          "authorization_code tokens only).")
    if not form.get("client_id"):
        return _aad_error(400, "invalid_request", "AADSTS900144", "The request body must contain 'client_id'.")
    scope = str(form.get("scope") or "")
    resource = scope.removesuffix("/.default").removeprefix("api://")
    if not scope.endswith("/.default") or resource != API_CLIENT_ID:
        return _aad_error(400, "invalid_resource", "AADSTS500011",
                          f"The resource principal named {scope!r} was not found in the tenant named {tenant}.")
    user = USERS.get(str(form.get("username") or "").lower())
    if user is None or user.tenant != tenant:
        return _aad_error(400, "invalid_grant", "AADSTS50034",
                          f"The user account {form.get('username')!r} does not exist in the {tenant} directory.")
    if form.get("password") != DEMO_PASSWORD:
        return _aad_error(400, "invalid_grant", "AADSTS50126", "Error validating credentials due to invalid "
                                                               "username or password.")
    access = _idp(request).mint(_base(request), user)
    return JSONResponse({"token_type": "Bearer", "scope": scope, "expires_in": TOKEN_LIFETIME,
                         "ext_expires_in": TOKEN_LIFETIME, "access_token": access})


async def control_token(request: Request) -> Response:
    """Tests only: a token signed with the real key but with chosen claims (expired, other audience…)."""
    body = await request.json() if await request.body() else {}
    user = USERS.get(str(body.get("user", "")).lower())
    if user is None:
        return JSONResponse({"error": f"unknown demo user {body.get('user')!r}"}, status_code=400)
    expires_in = int(body.get("expires_in", TOKEN_LIFETIME))   # ≤ 0: expired that many seconds ago
    issued = int(time.time()) - TOKEN_LIFETIME if expires_in <= 0 else None
    lifetime = TOKEN_LIFETIME + expires_in if expires_in <= 0 else expires_in
    roles = tuple(body["roles"]) if body.get("roles") is not None else None
    access = _idp(request).mint(_base(request), user, audience=str(body.get("audience") or API_CLIENT_ID),
                                tenant=body.get("tenant"), lifetime=lifetime, roles=roles, issued_at=issued,
                                app_only=bool(body.get("app_only")))
    return JSONResponse({"access_token": access, "kid": _idp(request).kid})


async def control_users(request: Request) -> Response:
    return JSONResponse({"tenant": DEMO_TENANT, "api_client_id": API_CLIENT_ID, "scope": API_SCOPE,
                         "users": [{"username": u.username, "oid": u.oid, "name": u.name, "roles": list(u.roles)}
                                   for u in USERS.values()]})


def routes(control_prefix: str) -> list[Route]:
    return [
        Route("/{tenant}/v2.0/.well-known/openid-configuration", discovery, methods=["GET"]),
        Route("/{tenant}/discovery/v2.0/keys", keys, methods=["GET"]),
        Route("/{tenant}/oauth2/v2.0/token", token, methods=["POST"]),
        Route("/{tenant}/oauth2/v2.0/authorize", authorize, methods=["GET", "POST"]),
        Route(control_prefix + "/identity/token", control_token, methods=["POST"]),
        Route(control_prefix + "/identity/users", control_users, methods=["GET"]),
    ]
