"""Fake but strict credentials: `Bearer local-dev.<tenant>[.<principal>]` stands for a token issued by that
tenant to that principal (an app's client id; without one, the function app's own managed identity, `app`)."""

from __future__ import annotations

from starlette.requests import Request

from .state import Account, ApiError

TOKEN_PREFIX = "local-dev."
DEFAULT_PRINCIPAL = "app"


def _token(value: str | None) -> tuple[str, str] | None:
    """(tenant, principal) of `Bearer local-dev.<tenant>[.<principal>]`, or None when not in that form."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX) or len(token) == len(TOKEN_PREFIX):
        return None
    tenant, _, principal = token[len(TOKEN_PREFIX):].partition(".")
    return (tenant, principal or DEFAULT_PRINCIPAL) if tenant else None


def token_tenant(value: str | None) -> str | None:
    """Tenant of `Bearer local-dev.<tenant>[.<principal>]`, or None when the header is not in that form."""
    parsed = _token(value)
    return parsed[0] if parsed else None


def token_principal(value: str | None) -> str | None:
    parsed = _token(value)
    return parsed[1] if parsed else None


def aux_principals(request: Request) -> dict[str, str]:
    """Tenant → principal of each auxiliary token."""
    header = request.headers.get("x-ms-authorization-auxiliary", "")
    return dict(t for t in (_token(part) for part in header.split(",")) if t)


def authorization_failed(principal: str, account: Account, action: str) -> ApiError:
    """ARM's answer to a caller without a role on the scope (RBAC), in its usual words."""
    return ApiError(403, "AuthorizationFailed",
                    f"The client '{principal}' with object id '{principal}' does not have authorization to perform "
                    f"action '{action}' over scope '{account.resource_id}' or the scope is invalid. If access was "
                    "recently granted, please refresh your credentials.")


def check_rights(principal: str | None, account: Account, action: str) -> None:
    """An account that lists `contributors` lets only those principals act on it (None: any of its tenant)."""
    if account.contributors is not None and principal not in account.contributors:
        raise authorization_failed(principal or "?", account, action)


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
    check_rights(token_principal(auth), account, _ACTIONS.get(request.method, "Microsoft.CognitiveServices/accounts/read"))


_ACTIONS = {"PUT": "Microsoft.CognitiveServices/accounts/deployments/write",
            "DELETE": "Microsoft.CognitiveServices/accounts/deployments/delete"}
SOURCE_ACTION = "Microsoft.CognitiveServices/accounts/read"   # reading the source's model (exact action unpublished)
