"""The console's requests: who is signed in (a cookie holding their Entra ID access token), the operator
API called in-process with that token, and the answer as a page, a redirect or a report.

Sign-in keeps the access token in an HttpOnly, SameSite=Strict cookie scoped to the console's path (Secure
over HTTPS): page scripts cannot read it, and other sites cannot make the browser send it. Every form also
carries a token derived from the cookie (it proves the form came from a console page), and a request whose
Origin names another site (or is `null`: a sandboxed frame, a data: URL) is refused. The sign-in form, shown
before there is a session, is bound the same way to a pre-session cookie set with the form, so a hostile
page cannot sign a person's browser in as someone else (login CSRF).

Nothing a URL says is shown as text: messages after a redirect are named by a short id (`NOTES`, `DONE`)
and written here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

log = logging.getLogger(__name__)
COOKIE = "ftops_console"
PRESESSION_COOKIE = "ftops_console_signin"   # binds the sign-in form to this browser before any session
PRESESSION_SECONDS = 1800
# What a redirect may ask a page to say: by id, never the text itself.
NOTES = {"signed-out": "Signed out.", "expired": "Your sign-in expired or was refused: please sign in again."}
DONE = {"approved": "approved", "rejected": "rejected", "retired": "retired", "rolled-back": "rolled back",
        "unchanged": "nothing changed: the operator API found it already done"}
MAX_FORM = 16 * 1024
MAX_SESSION_SECONDS = 8 * 3600     # never longer than the token itself lives (Entra ID: about an hour)
CSS = Path(__file__).with_name("console.css")
# Pages: nothing but the console's own stylesheet and frames; no script at all; forms post only here.
PAGE_CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'")
# Reports (HTML written by the app, with inline styles and SVG plots): shown sandboxed (no script, no
# same-origin rights, nothing fetched), and only inside the console's own frames.
REPORT_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"
# same-origin, not no-referrer: under no-referrer a browser sends `Origin: null` on the console's own form
# posts (Fetch, "append a request Origin header"), which the console refuses; nothing goes to another site.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin", "Cache-Control": "no-store"}


@dataclass(frozen=True)
class ConsoleRequest:
    method: str
    url: str
    params: Mapping[str, str] = field(default_factory=dict)   # route parameters
    query: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # any case; looked up lower-cased
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    @property
    def base(self) -> str:
        """The console's own path (`/api/console` under the host's default prefix)."""
        path = urlsplit(self.url).path
        head, found, _ = path.partition("/console")
        return f"{head}/console" if found else "/console"

    @property
    def secure(self) -> bool:
        forwarded = (self.header("X-Forwarded-Proto") or "").lower()
        return urlsplit(self.url).scheme == "https" or forwarded == "https"

    def form(self) -> dict[str, str]:
        if len(self.body) > MAX_FORM:
            raise ValueError(f"form over {MAX_FORM} bytes")
        return dict(parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))

    def token(self) -> str | None:
        return self.cookie(COOKIE)

    def cookie(self, wanted: str) -> str | None:
        # by hand: http.cookies drops every cookie after one it cannot parse (another app's, on this host)
        for part in (self.header("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == wanted and value:
                return value.strip('"')
        return None


@dataclass(frozen=True)
class ConsoleResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def mimetype(self) -> str:
        return self.headers.get("Content-Type", "text/plain").split(";")[0]


def page(status: int, html: str, extra: Mapping[str, str] | None = None) -> ConsoleResponse:
    return ConsoleResponse(status, html.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8",
                                                          "Content-Security-Policy": PAGE_CSP,
                                                          **SECURITY_HEADERS, **(extra or {})})


def redirect(location: str, extra: Mapping[str, str] | None = None) -> ConsoleResponse:
    return ConsoleResponse(303, b"", {"Location": location, **SECURITY_HEADERS, **(extra or {})})


def csrf_for(token: str) -> str:
    """The form token of a session: derived from the access token in the cookie, so a page of another
    site (which cannot read the cookie) cannot forge it."""
    return hashlib.sha256(b"ftops-console-form\0" + token.encode()).hexdigest()[:32]


def presession() -> str:
    """A fresh random value for the pre-session cookie (the sign-in form's token is derived from it)."""
    return secrets.token_urlsafe(32)


def signin_form_token(value: str) -> str:
    return hashlib.sha256(b"ftops-console-signin\0" + value.encode()).hexdigest()[:32]


def presession_cookie(request: ConsoleRequest, value: str) -> str:
    secure = "; Secure" if request.secure else ""
    return (f"{PRESESSION_COOKIE}={value}; Path={request.base}/signin; Max-Age={PRESESSION_SECONDS}; HttpOnly; "
            f"SameSite=Strict{secure}")


def session_cookie(request: ConsoleRequest, token: str, max_age: int) -> str:
    secure = "; Secure" if request.secure else ""
    return f"{COOKIE}={token}; Path={request.base}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"


def cleared_cookie(request: ConsoleRequest) -> str:
    return f"{COOKIE}=; Path={request.base}; Max-Age=0; HttpOnly; SameSite=Strict"


class Api:
    """The operator API, called in-process as the signed-in person: its rules, its refusals, its audit."""

    def __init__(self, deps: Deps, token: str) -> None:
        self.deps, self._token = deps, token

    def call(self, action: str, params: Mapping[str, str] | None = None, body: Mapping[str, Any] | None = None
             ) -> tuple[int, dict[str, Any]]:
        from shared.operator.api import handle as api
        answer = api(action, authorization=f"Bearer {self._token}", params=dict(params or {}),
                     body=json.dumps(body).encode() if body is not None else b"", deps=self.deps)
        return answer.status, answer.body

    def caller(self) -> Any:
        """Who is signed in (for the page's header), or None if the token no longer verifies."""
        from shared.azure.access import AccessDenied
        from shared.operator.api import verifier_for
        try:
            return verifier_for(self.deps).verify(f"Bearer {self._token}")
        except AccessDenied:
            return None

    @property
    def form_token(self) -> str:
        return csrf_for(self._token)


def asset(name: str) -> ConsoleResponse:
    if name != CSS.name:
        return ConsoleResponse(404, b"not found", {"Content-Type": "text/plain", **SECURITY_HEADERS})
    return ConsoleResponse(200, CSS.read_bytes(), {"Content-Type": "text/css; charset=utf-8",
                                                   "X-Content-Type-Options": "nosniff",
                                                   "Cache-Control": "max-age=300"})


def token_lifetime(claims_exp: int | None) -> int:
    left = (claims_exp or 0) - int(time.time())
    return max(60, min(left, MAX_SESSION_SECONDS))


def path_quote(value: str) -> str:
    return quote(value, safe="")
