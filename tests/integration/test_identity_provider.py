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


# --- the authorization code flow with PKCE (local/emulator/authorize.py) --------------------------------
REDIRECT = "http://127.0.0.1:7071/api/console/signin/callback"
VERIFIER = "v" * 64


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def browse(emulator: Any, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, Any, str]:
    """(status, headers, text) as a browser that does not follow redirects sees them."""
    opener = urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(
        context=ssl.create_default_context(cafile=emulator.ca_file)))
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    try:
        with opener.open(urllib.request.Request(f"{emulator.base_url}{path}", data=data, method=method)) as answer:
            return answer.status, answer.headers, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def authorize_path(**changes: str) -> str:
    import base64
    import hashlib
    challenge = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()
    query = {"client_id": API_CLIENT_ID, "response_type": "code", "redirect_uri": REDIRECT, "state": "s-1",
             "scope": f"openid api://{API_CLIENT_ID}/user_impersonation", "code_challenge": challenge,
             "code_challenge_method": "S256", **changes}
    return f"/tenant-contoso/oauth2/v2.0/authorize?{urllib.parse.urlencode(query)}"


def signed_in_code(emulator: Any, user: str = "demo-operator@contoso.example") -> str:
    status, _, page = browse(emulator, "GET", authorize_path())
    assert status == 200 and 'name=password' in page
    request_id = page.split('name=request value="', 1)[1].split('"', 1)[0]
    status, headers, _ = browse(emulator, "POST", "/tenant-contoso/oauth2/v2.0/authorize",
                                {"request": request_id, "username": user, "password": DEMO_PASSWORD})
    back = urllib.parse.urlsplit(headers["Location"])
    assert status == 302 and f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    query = dict(urllib.parse.parse_qsl(back.query))
    assert query["state"] == "s-1"
    return query["code"]


def redeem(emulator: Any, code: str, **changes: str) -> tuple[int, dict[str, Any]]:
    return ask(emulator, **{"grant_type": "authorization_code", "client_id": API_CLIENT_ID, "code": code,
                            "redirect_uri": REDIRECT, "code_verifier": VERIFIER, "scope": "",
                            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                            "client_assertion": "local-dev.tenant-contoso", "username": "", "password": "",
                            **changes})


def test_the_authorization_code_flow_signs_a_demo_user_in_once_with_pkce_and_a_federated_credential(
        emulator: Any) -> None:
    code = signed_in_code(emulator)
    status, body = redeem(emulator, code)
    assert status == 200, body
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["oid"], claims["aud"], claims["scp"]) == ("6f1c2d3e-0000-4000-8000-0000000000a1", API_CLIENT_ID,
                                                             "user_impersonation")
    status, body = redeem(emulator, code)   # a code is redeemed once
    assert status == 400 and body["error_description"].startswith("AADSTS54005")


@pytest.mark.parametrize(("changes", "code"), [
    ({"code_verifier": "w" * 64}, "AADSTS501481"), ({"code_verifier": ""}, "AADSTS501481"),
    ({"redirect_uri": "http://127.0.0.1:7071/api/console/other"}, "AADSTS50148"),
    ({"client_secret": "s3cret"}, "AADSTS7000215"), ({"client_assertion": ""}, "AADSTS7000218"),
    ({"client_assertion": "local-dev.tenant-contoso.someone-else"}, "AADSTS70021"),
    ({"client_assertion": "local-dev.tenant-fabrikam"}, "AADSTS70021"),
], ids=["wrong-verifier", "no-verifier", "other-redirect", "secret", "no-assertion", "other-identity",
        "other-tenant"])
def test_a_code_is_redeemed_only_with_its_verifier_redirect_and_the_trusted_identity(
        emulator: Any, changes: dict[str, str], code: str) -> None:
    status, body = redeem(emulator, signed_in_code(emulator), **changes)
    assert status in (400, 401) and body["error_description"].startswith(code), body


@pytest.mark.parametrize(("changes", "code"), [
    ({"client_id": "someone-elses-app"}, "AADSTS700016"),
    ({"redirect_uri": "https://evil.example/api/console/signin/callback"}, "AADSTS50011"),
    ({"redirect_uri": "http://127.0.0.1:7071/API/console/signin/callback"}, "AADSTS50011"),   # path case matters
])
def test_an_unregistered_client_or_redirect_uri_is_refused_on_the_page_never_redirected(
        emulator: Any, changes: dict[str, str], code: str) -> None:
    status, headers, page = browse(emulator, "GET", authorize_path(**changes))
    assert status == 400 and "Location" not in headers and code in page


def test_an_authorization_request_without_pkce_goes_back_with_the_error(emulator: Any) -> None:
    status, headers, _ = browse(emulator, "GET", authorize_path(code_challenge_method="plain"))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["Location"]).query))
    assert status == 302 and query["error"] == "invalid_request" and query["state"] == "s-1"


def test_a_challenge_no_s256_hash_could_be_goes_back_with_the_size_error(emulator: Any) -> None:
    """RFC 7636 §4.2: an S256 challenge is the base64url of a SHA-256, 43 characters; Entra: AADSTS501491."""
    status, headers, _ = browse(emulator, "GET", authorize_path(code_challenge="too-short"))
    assert status == 302, status
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["Location"]).query))
    assert query["error"] == "invalid_request" and query["error_description"].startswith("AADSTS501491")
