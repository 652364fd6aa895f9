"""The operator API from the command line: the user's own Entra ID sign-in (azure-identity), one HTTPS call
per action, the API's answer (or refusal) printed in one line.

Settings (environment): `FTOPS_API_URL` (the app's API base, `https://<app>.azurewebsites.net/api`),
`OPERATOR_API_SCOPE` (default `api://<OPERATOR_API_AUDIENCE>/.default`). With `FTOPS_CREDENTIAL=local-dev`
the token comes from the local emulator's identity provider for `FTOPS_OPERATOR` (a demo user).
"""
from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.azure.identity import scope_for
from shared.run.command_table import BY_NAME
from shared.run.config import ConfigError

DEMO_OPERATOR = "demo-operator@contoso.example"
LOCAL_DEMO_PASSWORD = "local-demo-only"   # the emulator's demo users only; never valid against Entra ID


class ApiError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


@dataclass
class OperatorClient:
    api_url: str
    credential: Any          # azure.core.credentials.TokenCredential
    scope: str
    ca_bundle: str | None = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            token = self.credential.get_token(self.scope).token
        except OSError as exc:   # the identity provider is unreachable (the sign-in itself failing raises as is)
            raise ApiError(0, f"cannot get a token for {self.scope}: {exc}") from None
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.api_url.rstrip('/')}/{path.lstrip('/')}", data=data, method=method,
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        context = ssl.create_default_context(cafile=self.ca_bundle) if self.ca_bundle else None
        try:
            with urllib.request.urlopen(request, context=context, timeout=120) as answer:
                answered: dict[str, Any] = json.loads(answer.read() or b"{}")
                return answered
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode("utf-8", "replace")[:300] or exc.reason
            raise ApiError(exc.code, message) from None
        except urllib.error.URLError as exc:
            raise ApiError(0, f"cannot reach the operator API at {self.api_url}: {exc.reason}") from None

    def run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"runs/{urllib.parse.quote(run_id)}")

    def approve(self, run_id: str, environment: str, *, ticket: str, comment: str | None = None) -> dict[str, Any]:
        """Approve what the run holds now, naming it: the model, dataset and evaluation report looked at."""
        candidate = self.run(run_id)["candidate"]
        route = BY_NAME["approve"].route or ""
        return self.call("POST", route.format(run_id=urllib.parse.quote(run_id)), {
            "environment": environment, "ticket": ticket, "comment": comment, "model": candidate["model"],
            "dataset_hash": candidate["dataset_hash"],
            "evaluation_report_hash": candidate["evaluation_report_hash"]})


def local_client(api_url: str, env: Mapping[str, str], username: str = DEMO_OPERATOR) -> OperatorClient:
    """A client signed in as a demo user through the emulator's identity provider (one machine only)."""
    from shared.azure.identity import LocalUserCredential
    credential = LocalUserCredential(env["OPERATOR_AUTHORITY"], env["OPERATOR_TENANT_ID"], username,
                                     env.get("FTOPS_OPERATOR_PASSWORD", LOCAL_DEMO_PASSWORD),
                                     ca_bundle=env.get("FTOPS_CA_BUNDLE") or None)
    return OperatorClient(api_url, credential, scope_for(env["OPERATOR_API_AUDIENCE"]))


def client_from_env(env: Mapping[str, str] | None = None) -> OperatorClient:
    env = os.environ if env is None else env
    api_url = env.get("FTOPS_API_URL")
    if not api_url:
        raise ConfigError("FTOPS_API_URL must be set to the operator API (https://<function app>.azurewebsites.net/api)")
    if env.get("FTOPS_CREDENTIAL") == "local-dev":
        for key in ("OPERATOR_AUTHORITY", "OPERATOR_TENANT_ID", "OPERATOR_API_AUDIENCE"):
            if not env.get(key):
                raise ConfigError(f"{key} must be set (the local stack's identity provider)")
        return local_client(api_url, env, env.get("FTOPS_OPERATOR", DEMO_OPERATOR))
    scope = env.get("OPERATOR_API_SCOPE") or (scope_for(env["OPERATOR_API_AUDIENCE"])
                                              if env.get("OPERATOR_API_AUDIENCE") else None)
    if not scope:
        raise ConfigError("OPERATOR_API_SCOPE (api://<operator API client id>/.default) must be set")
    from azure.identity import DefaultAzureCredential
    # a person's own sign-in (Azure CLI, azd, VS Code, …), never the machine's managed identity
    credential = DefaultAzureCredential(exclude_managed_identity_credential=True)
    return OperatorClient(api_url, credential, scope, ca_bundle=env.get("FTOPS_CA_BUNDLE") or None)
