"""Fake but strict credentials: `Bearer local-dev.<tenant>` stands for a token issued by that tenant."""

from __future__ import annotations

from starlette.requests import Request

from .state import Account, ApiError

TOKEN_PREFIX = "local-dev."


def token_tenant(value: str | None) -> str | None:
    """Tenant of `Bearer local-dev.<tenant>`, or None when the header is not in that form."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) == len(TOKEN_PREFIX):
        return None
    return token[len(TOKEN_PREFIX):]


def aux_tenants(request: Request) -> list[str]:
    """Tenants of the tokens in x-ms-authorization-auxiliary ("Bearer a, Bearer b", as azure-mgmt-core sends)."""
    header = request.headers.get("x-ms-authorization-auxiliary", "")
    tenants = [token_tenant(part) for part in header.split(",")]
    return [t for t in tenants if t]


def check_data_plane(request: Request, account: Account) -> None:
    if request.headers.get("api-key", "").strip():
        return
    auth = request.headers.get("authorization")
    tenant = token_tenant(auth)
    if auth and tenant is None and "/openai/v1/" in request.url.path and auth.lower().startswith("bearer "):
        return  # the v1 API takes the key as a bearer token (plain `openai.OpenAI(api_key=...)`)
    if auth and tenant is None:
        raise ApiError(401, "401", "Access denied due to invalid subscription key or wrong API endpoint.")
    if tenant is None:
        raise ApiError(401, "401", "Access denied due to missing subscription key or bearer token.")
    if tenant != account.tenant:
        raise ApiError(
            401, "401",
            f"Access denied: the token is from tenant '{tenant}', the resource is in tenant '{account.tenant}'.",
        )


def check_arm(request: Request, account: Account) -> None:
    auth = request.headers.get("authorization")
    if not auth:
        raise ApiError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
    tenant = token_tenant(auth)
    if tenant is None:
        raise ApiError(401, "InvalidAuthenticationToken", "The access token is invalid.")
    if tenant != account.tenant:
        raise ApiError(
            401, "InvalidAuthenticationTokenTenant",
            f"The access token is from the wrong issuer '{tenant}'. It must match the tenant "
            f"'{account.tenant}' associated with subscription '{account.subscription}'.",
        )
