"""Credentials: managed identity in Azure; fixed local tokens for the one-machine emulator."""
from __future__ import annotations

import os
import time
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo

ARM_SCOPE = "https://management.azure.com/.default"
COGNITIVE_SCOPE = "https://cognitiveservices.azure.com/.default"



def api_uri(audience: str) -> str:
    """The operator API's App ID URI, from its client id or App ID URI (the first of OPERATOR_API_AUDIENCE)."""
    first = audience.split(",")[0].strip()
    return first if "://" in first else f"api://{first}"


def scope_for(audience: str) -> str:
    """The `.default` scope of the operator API named by its client id or App ID URI (the first, if several):
    what the console's sign-in and the `ftops` CLI ask a token for."""
    return f"{api_uri(audience)}/.default"


class LocalDevCredential:
    """Tokens the emulator understands (`local-dev.<tenant>[.<client id>]`): never valid anywhere else.

    The tenant is in the token so the emulator can check that a cross-tenant deployment really carried a
    token for each tenant, as Azure does; the client id (a spoke's credential) so it can check that
    principal's rights on the source hub too. Without one the token stands for the app's own identity.
    """

    def __init__(self, tenant_id: str = "local-tenant", client_id: str | None = None) -> None:
        self.tenant_id = tenant_id
        self.client_id = client_id

    def _token(self, tenant: str | None) -> str:
        return f"local-dev.{tenant or self.tenant_id}" + (f".{self.client_id}" if self.client_id else "")

    def get_token(self, *scopes: str, tenant_id: str | None = None, **_: Any) -> AccessToken:
        return AccessToken(self._token(tenant_id), int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: dict[str, Any] | None = None) -> AccessTokenInfo:
        return AccessTokenInfo(self._token((options or {}).get("tenant_id")), int(time.time()) + 3600)

    def close(self) -> None:
        pass


def make_credential(kind: str, *, tenant_id: str | None = None, client_id: str | None = None) -> Any:
    """`default`: DefaultAzureCredential (managed identity first in Azure); `local-dev`: emulator tokens.

    A spoke in another tenant names a client id: a multi-tenant app registration whose federated
    credential is the function app's managed identity.
    """
    if kind == "local-dev":
        return LocalDevCredential(tenant_id or "local-tenant", client_id)
    from azure.identity import ClientAssertionCredential, DefaultAzureCredential, ManagedIdentityCredential
    if client_id and tenant_id:
        # The app's identity is user-assigned: name it (AZURE_CLIENT_ID, set by infra/main.bicep), or the
        # platform would look for a system-assigned one. DefaultAzureCredential reads the same variable.
        mi = ManagedIdentityCredential(client_id=os.environ.get("AZURE_CLIENT_ID") or None)
        return ClientAssertionCredential(
            tenant_id, client_id, lambda: mi.get_token("api://AzureADTokenExchange/.default").token)
    return DefaultAzureCredential()


class LocalUserCredential:
    """A person's sign-in on one machine: the emulator's identity provider issues a real RS256 token for a
    named demo user (OAuth 2.0 resource owner password grant, as Entra ID's token endpoint takes it).
    Never for Azure: there the CLI uses the user's own sign-in through azure-identity."""

    def __init__(self, authority: str, tenant: str, username: str, password: str, *, ca_bundle: str | None = None,
                 client_id: str = "ftops-cli") -> None:
        self.authority, self.tenant, self.username = authority.rstrip("/"), tenant, username
        self._password, self._ca, self._client_id = password, ca_bundle, client_id

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        from azure.core.exceptions import ClientAuthenticationError
        try:
            body = token_endpoint(self.authority, self.tenant, {
                "grant_type": "password", "client_id": self._client_id, "scope": " ".join(scopes),
                "username": self.username, "password": self._password}, ca_bundle=self._ca)
        except ClientAuthenticationError as exc:
            raise ClientAuthenticationError(f"sign-in as {self.username} failed: {exc.message}") from None
        return AccessToken(body["access_token"], int(time.time()) + int(body.get("expires_in", 3600)))

    def close(self) -> None:
        pass


def token_endpoint(authority: str, tenant: str, form: dict[str, str], *, ca_bundle: str | None = None
                   ) -> dict[str, Any]:
    """POST a grant (`form`) to `<authority>/<tenant>/oauth2/v2.0/token`: the token endpoint's answer, or
    ClientAuthenticationError with Entra's own description (the password grant on one machine; the console's
    authorization_code grant, Learn "Microsoft identity platform and OAuth 2.0 authorization code flow")."""
    import json
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    from azure.core.exceptions import ClientAuthenticationError
    request = urllib.request.Request(f"{authority.rstrip('/')}/{tenant}/oauth2/v2.0/token",
                                     data=urllib.parse.urlencode(form).encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    context = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else None
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as answer:
            return json.loads(answer.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        try:
            detail = str(json.loads(exc.read()).get("error_description", exc.reason))
        except ValueError:
            detail = f"{exc.code} {exc.reason}"
        raise ClientAuthenticationError(detail[:500]) from None
