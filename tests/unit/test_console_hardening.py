"""The console's sign-in and messages cannot be steered from another page or a URL, and the operator API trusts
tokens only from an Entra ID login host: login CSRF (`Origin: null`, no form token), banner text from
`?note=`/`?done=`, and an `http://` or foreign OPERATOR_AUTHORITY are refused."""
from __future__ import annotations

import re
from typing import Any

import pytest
from fakes import make_deps, settings_for_tests
from test_console import BASE, HOSTILE, OPERATOR, request, run_detail, serve

from shared.azure.access import access_settings
from shared.operator.console import ConsoleRequest, handle
from shared.run.config import ConfigError

DEPS = make_deps(settings_for_tests(credential="local-dev", operator_tenant_id="tenant-contoso",
                                    operator_api_audience="c0ffee00-0000-4000-8000-00000000f7a9",
                                    operator_authority="https://127.0.0.1:1", operator_authority_local="true"))


def sign_in(*, origin: str | None = None, cookie: str | None = None, form_token: str | None = None) -> Any:
    body = "username=demo-operator%40contoso.example&password=x"
    body += f"&form_token={form_token}" if form_token is not None else ""
    headers = {"Host": "127.0.0.1:7071", **({"Origin": origin} if origin is not None else {}),
               **({"Cookie": cookie} if cookie else {})}
    return handle("signin", ConsoleRequest(method="POST", url=f"{BASE}/signin", headers=headers, body=body.encode()),
                  lambda: DEPS)


def shown_form() -> tuple[str, str]:
    """What a browser gets from GET signin: the pre-session cookie and the form's token."""
    page = handle("signin", ConsoleRequest(method="GET", url=f"{BASE}/signin", headers={"Host": "127.0.0.1:7071"}),
                  lambda: DEPS)
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/api/console/signin" in cookie
    tokens = set(re.findall(r'name="form_token" value="([^"]+)"', page.body.decode()))
    assert len(tokens) == 1   # both forms (password, pasted token) carry it
    return cookie.split(";")[0], tokens.pop()


@pytest.mark.parametrize("origin", ["null", "NULL ", "https://evil.example"])
def test_a_sign_in_posted_from_a_sandboxed_or_foreign_page_is_refused(origin: str) -> None:
    cookie, token = shown_form()
    answer = sign_in(origin=origin, cookie=cookie, form_token=token)
    assert answer.status == 403 and "ftops_console=" not in answer.headers.get("Set-Cookie", "")


def test_a_sign_in_without_the_forms_token_bound_to_this_browser_is_refused() -> None:
    cookie, token = shown_form()
    other_cookie, _ = shown_form()
    for attempt in (sign_in(), sign_in(cookie=cookie), sign_in(form_token=token),
                    sign_in(cookie=other_cookie, form_token=token)):   # another browser's form
        assert attempt.status == 403 and "stale or did not come from the console" in attempt.body.decode()
        assert "ftops_console=" not in attempt.headers.get("Set-Cookie", "")
    # the console's own form, in the browser that was shown it, gets as far as the identity provider (none here)
    reached = sign_in(origin="http://127.0.0.1:7071", cookie=cookie, form_token=token)
    assert reached.status == 401 and "identity provider cannot be reached" in reached.body.decode()


def test_the_sign_in_page_says_nothing_the_url_wrote() -> None:
    planted = "Your account is locked: call +1 555 0100 and read out your one-time code"
    page = handle("signin", ConsoleRequest(method="GET", url=f"{BASE}/signin", query={"note": planted},
                                           headers={"Host": "127.0.0.1:7071"}), lambda: DEPS).body.decode()
    assert "555 0100" not in page and "locked" not in page
    known = handle("signin", ConsoleRequest(method="GET", url=f"{BASE}/signin", query={"note": "signed-out"},
                                            headers={"Host": "127.0.0.1:7071"}), lambda: DEPS).body.decode()
    assert "Signed out." in known


def test_a_run_page_shows_no_approved_banner_the_url_invented() -> None:
    waiting = run_detail(OPERATOR)
    planted = serve("run", request("/runs/r1", params={"run_id": "r1"}, query={"done": f"prod approved {HOSTILE}"}),
                    get_run=(200, waiting), list_deployments=(200, {"deployments": []})).body.decode()
    assert "prod approved" not in planted and "the operator API accepted it" not in planted
    real = serve("run", request("/runs/r1", params={"run_id": "r1"}, query={"done": "approved"}),
                 get_run=(200, waiting), list_deployments=(200, {"deployments": []})).body.decode()
    assert "approved: the operator API accepted it" in real


@pytest.mark.parametrize(("authority", "local", "why"), [
    ("http://login.microsoftonline.com", False, "must be https"),
    ("https://login.evil.example", False, "not an Entra ID login host"),
    ("https://login.microsoftonline.com.evil.example", False, "not an Entra ID login host"),
    ("https://login.microsoftonline.com:8443", False, "not an Entra ID login host"),
    ("https://login.microsoftonline.com/tenant-contoso", False, "login host alone"),
    ("http://127.0.0.1:8443", True, "must be https"),
])
def test_operator_authority_must_be_https_on_an_entra_id_host(authority: str, local: bool, why: str) -> None:
    settings = settings_for_tests(operator_tenant_id="t", operator_api_audience="a", operator_authority=authority,
                                  operator_authority_local="true" if local else None)
    with pytest.raises(ConfigError, match=why):
        access_settings(settings)


@pytest.mark.parametrize(("authority", "local"), [
    ("https://login.microsoftonline.com", False), ("https://login.microsoftonline.us", False),
    ("https://login.partner.microsoftonline.cn", False), ("https://login.chinacloudapi.cn", False),
    ("https://127.0.0.1:8443", True),
])
def test_entra_id_hosts_of_every_cloud_and_the_flagged_local_emulator_are_accepted(authority: str, local: bool
                                                                                    ) -> None:
    settings = settings_for_tests(operator_tenant_id="t", operator_api_audience="a", operator_authority=authority,
                                  operator_authority_local="true" if local else None)
    assert access_settings(settings).issuer == f"{authority}/t/v2.0"


def test_entra_sign_in_starts_with_pkce_s256_and_a_state_kept_in_this_browser() -> None:
    import urllib.parse

    from shared.operator.console.entra import challenge_of
    answer = handle("signin_entra", ConsoleRequest(method="GET", url=f"{BASE}/signin/entra",
                                                   headers={"Host": "127.0.0.1:7071"}), lambda: DEPS)
    target = urllib.parse.urlsplit(answer.headers["Location"])
    query = dict(urllib.parse.parse_qsl(target.query))
    cookie = answer.headers["Set-Cookie"]
    state, _, verifier = cookie.split(";")[0].split("=", 1)[1].partition(".")
    assert answer.status == 303 and target.path == "/tenant-contoso/oauth2/v2.0/authorize"
    assert query["state"] == state and query["code_challenge"] == challenge_of(verifier)
    assert query["code_challenge_method"] == "S256" and len(verifier) >= 43
    assert query["redirect_uri"] == "http://127.0.0.1:7071/api/console/signin/callback"
    assert query["client_id"] == "c0ffee00-0000-4000-8000-00000000f7a9"
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/api/console/signin" in cookie


def test_an_entra_callback_shows_no_text_from_the_url_and_needs_this_browsers_state() -> None:
    planted = "Call the service desk on +1 555 0100"
    failed = handle("signin_callback", ConsoleRequest(
        method="GET", url=f"{BASE}/signin/callback", query={"error": "access_denied", "error_description": planted},
        headers={"Host": "127.0.0.1:7071"}), lambda: DEPS)
    assert failed.status == 401 and "access_denied" in failed.body.decode() and "555" not in failed.body.decode()
    forged = handle("signin_callback", ConsoleRequest(
        method="GET", url=f"{BASE}/signin/callback", query={"code": "c", "state": "s"},
        headers={"Host": "127.0.0.1:7071", "Cookie": "ftops_console_oauth=other.verifier"}), lambda: DEPS)
    assert forged.status == 403 and "ftops_console=" not in forged.headers.get("Set-Cookie", "")
