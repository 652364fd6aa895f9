"""The emulator as Entra ID: discovery, keys and a token endpoint that refuses as Entra ID words it."""
from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import jwt
import pytest

from local.emulator.identity import API_CLIENT_ID, API_SCOPE, DEMO_PASSWORD

pytestmark = pytest.mark.integration


def ask(emulator: Any, **form: str) -> tuple[int, dict[str, Any]]:
    body = {"grant_type": "password", "client_id": "cli", "scope": API_SCOPE,
            "username": "demo-operator@contoso.example", "password": DEMO_PASSWORD, **form}
    request = urllib.request.Request(f"{emulator.base_url}/tenant-contoso/oauth2/v2.0/token",
                                     data=urllib.parse.urlencode(body).encode())
    try:
        with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=emulator.ca_file)) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(("form", "code"), [
    ({"password": "guess"}, "AADSTS50126"), ({"username": "eve@contoso.example"}, "AADSTS50034"),
    ({"scope": "api://other/.default"}, "AADSTS500011"), ({"grant_type": "client_credentials"}, "AADSTS70003")])
def test_a_wrong_sign_in_is_refused_with_the_entra_error_code(emulator: Any, form: dict[str, str], code: str) -> None:
    status, body = ask(emulator, **form)
    assert status == 400 and body["error_description"].startswith(code)


def test_a_demo_user_gets_an_rs256_token_verifiable_with_the_published_keys(emulator: Any) -> None:
    context = ssl.create_default_context(cafile=emulator.ca_file)
    discovery = f"{emulator.base_url}/tenant-contoso/v2.0/.well-known/openid-configuration"
    with urllib.request.urlopen(discovery, context=context) as answer:
        document = json.loads(answer.read())
    status, body = ask(emulator)
    assert status == 200 and body["token_type"] == "Bearer"
    keys = jwt.PyJWKClient(document["jwks_uri"], ssl_context=context)
    claims = jwt.decode(body["access_token"], keys.get_signing_key_from_jwt(body["access_token"]).key,
                        algorithms=["RS256"], audience=API_CLIENT_ID, issuer=document["issuer"])
    assert document["issuer"] == f"{emulator.base_url}/tenant-contoso/v2.0"
    assert claims["roles"] == ["Approver.prod", "Operator", "Reader"] and claims["tid"] == "tenant-contoso"
    assert claims["oid"] == "6f1c2d3e-0000-4000-8000-0000000000a1" and claims["name"] == "Demo Operator"
