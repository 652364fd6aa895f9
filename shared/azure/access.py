"""Who is calling the operator API: an Entra ID access token, verified in the app.

The token must be signed by one of the tenant's published keys (the `jwks_uri` of the tenant's OpenID
discovery document), issued by that tenant (`iss` = `<authority>/<tenant>/v2.0`, `tid` = the tenant), for
this API (`aud`), and not expired. What the caller may do comes from app roles in the token (`roles`), never
from a name in a request. Why in the app and not Easy Auth: docs/operator-api.md.
"""
from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.run.config import Settings

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]          # what Entra ID signs access tokens with; "none" and HMAC are never accepted
LEEWAY_SECONDS = 60             # clock skew between Entra ID and this host
READ_ROLES = ("Reader", "Operator")   # plus any Approver.<environment>
OPERATOR_ROLE = "Operator"            # rollback, retire


def approver_role(environment: str) -> str:
    return f"Approver.{environment}"


# Entra ID's login hosts: the global service and the national clouds (Learn, "National clouds",
# https://learn.microsoft.com/entra/identity-platform/authentication-national-cloud; Azure Germany closed in
# 2021). login.chinacloudapi.cn is the older name of the 21Vianet cloud's host, still in MSAL's cloud list.
ENTRA_AUTHORITIES = {"login.microsoftonline.com": "Azure (global)", "login.microsoftonline.us": "Azure Government",
                     "login.partner.microsoftonline.cn": "Azure operated by 21Vianet",
                     "login.chinacloudapi.cn": "Azure operated by 21Vianet (older host name)"}


def check_authority(authority: str, *, local: bool = False) -> str:
    """OPERATOR_AUTHORITY as a bare https origin on an Entra ID login host (any https host when `local`: the
    emulator); ConfigError names what is wrong. Tokens are trusted from whatever this names."""
    from urllib.parse import urlsplit

    from shared.run.config import ConfigError
    try:
        parts = urlsplit(authority)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"OPERATOR_AUTHORITY {authority[:80]!r} is not a URL ({exc})") from None
    if parts.scheme != "https":
        raise ConfigError(f"OPERATOR_AUTHORITY {authority[:80]!r} must be https: tokens' signing keys are fetched "
                          "from it")
    if parts.username or parts.password or parts.query or parts.fragment or parts.path.strip("/"):
        raise ConfigError(f"OPERATOR_AUTHORITY {authority[:80]!r} must be the login host alone "
                          "(e.g. https://login.microsoftonline.com): the tenant is OPERATOR_TENANT_ID")
    host = (parts.hostname or "").lower()
    if not local and (host not in ENTRA_AUTHORITIES or port not in (None, 443)):
        raise ConfigError(f"OPERATOR_AUTHORITY {authority[:80]!r} is not an Entra ID login host: one of "
                          f"{', '.join(f'https://{h} ({c})' for h, c in ENTRA_AUTHORITIES.items())} "
                          "(OPERATOR_AUTHORITY_LOCAL=true is for the local stack's emulator only)")
    return authority.rstrip("/")


def access_settings(settings: Settings) -> AccessSettings:
    """What the operator API verifies tokens against; ConfigError if the API is not configured."""
    from shared.run.config import ConfigError
    if not settings.operator_tenant_id or not settings.operator_api_audience:
        raise ConfigError("OPERATOR_TENANT_ID and OPERATOR_API_AUDIENCE must be set for the operator API")
    local = (settings.operator_authority_local or "").strip().lower() == "true"
    authority = check_authority(settings.operator_authority, local=local)
    audiences = tuple(a.strip() for a in settings.operator_api_audience.split(",") if a.strip())
    return AccessSettings(tenant=settings.operator_tenant_id, audiences=audiences,
                          authority=authority, ca_bundle=settings.ca_bundle)


class AccessDenied(Exception):
    """401 (no valid token) or 403 (valid token, missing right). `claims` are unverified when 401: they
    name who tried, for the audit trail, and are never trusted for anything else."""

    def __init__(self, status: int, reason: str, *, caller: Caller | None = None,
                 claims: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.caller, self.claims = status, reason, caller, claims or {}

    def who(self) -> dict[str, Any]:
        if self.caller is not None:
            return self.caller.describe()
        return {"verified": False, "oid": _short(self.claims.get("oid")), "name": _short(self.claims.get("name")),
                "tid": _short(self.claims.get("tid"))}


@dataclass(frozen=True)
class Caller:
    """A verified person (or app): object id for decisions, name for humans."""
    oid: str
    tenant: str
    name: str = ""
    roles: frozenset[str] = field(default_factory=frozenset)
    person: bool = True   # a delegated (user) token: it has `scp`; an app-only token has roles but no scp

    def has(self, role: str) -> bool:
        return role in self.roles

    def may_read(self) -> bool:
        return any(r in self.roles for r in READ_ROLES) or any(r.startswith("Approver.") for r in self.roles)

    def describe(self) -> dict[str, Any]:
        return {"verified": True, "oid": self.oid, "name": self.name, "tid": self.tenant}

    @property
    def actor(self) -> str:
        """How the audit trail names the caller: the object id, the name beside it for people."""
        return f"{self.name} <{self.oid}>" if self.name else self.oid


@dataclass(frozen=True)
class AccessSettings:
    tenant: str                  # the tenant whose people approve (its id)
    audiences: tuple[str, ...]   # the API's application (client) id, and/or its App ID URI
    authority: str = "https://login.microsoftonline.com"
    ca_bundle: str | None = None  # local only: the emulator's throw-away CA

    @property
    def discovery_url(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant}/v2.0/.well-known/openid-configuration"

    @property
    def issuer(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant}/v2.0"


class TokenVerifier:
    """Verifies bearer tokens against the tenant's published keys (fetched once, refreshed by PyJWKClient
    when a token names a key it has not seen: Entra ID rolls its keys)."""

    def __init__(self, settings: AccessSettings, *, keys: Any = None) -> None:
        """`keys`: a PyJWKClient-like key source (tests); by default the tenant's, found by discovery."""
        self.settings = settings
        self._ssl = ssl.create_default_context(cafile=settings.ca_bundle) if settings.ca_bundle else None
        self._jwks: Any = keys
        self._lock = threading.Lock()

    def verify(self, authorization: str | None) -> Caller:
        import jwt  # here, not at module level: PyJWT + cryptography add ~90 ms to every worker's cold start

        token = _bearer(authorization)
        unverified = unverified_claims(token)
        try:
            key = self._keys().get_signing_key_from_jwt(token).key
            claims = jwt.decode(token, key, algorithms=ALGORITHMS, audience=list(self.settings.audiences),
                                issuer=self.settings.issuer, leeway=LEEWAY_SECONDS,
                                options={"require": ["exp", "iat", "iss", "aud", "tid", "oid"]})
        except jwt.ExpiredSignatureError as exc:
            raise AccessDenied(401, "the token has expired", claims=unverified) from exc
        except jwt.InvalidAudienceError as exc:
            raise AccessDenied(401, "the token is not for this API (aud)", claims=unverified) from exc
        except jwt.InvalidIssuerError as exc:
            raise AccessDenied(401, "the token was not issued by this API's tenant (iss)", claims=unverified) from exc
        except jwt.PyJWKClientError as exc:
            raise AccessDenied(401, f"the token is not signed by a key of the tenant ({exc})", claims=unverified
                               ) from exc
        except jwt.InvalidTokenError as exc:
            raise AccessDenied(401, f"the token is invalid ({type(exc).__name__}: {exc})", claims=unverified) from exc
        if claims.get("tid") != self.settings.tenant:
            raise AccessDenied(401, "the token is from another tenant (tid)", claims=unverified)
        roles = claims.get("roles") or []
        if not isinstance(roles, list):
            raise AccessDenied(401, "the token's roles claim is not a list", claims=unverified)
        return Caller(oid=str(claims["oid"]), tenant=str(claims["tid"]), name=_short(claims.get("name")) or "",
                      roles=frozenset(str(r) for r in roles), person=bool(claims.get("scp")))

    def _keys(self) -> Any:
        import jwt

        with self._lock:
            if self._jwks is None:
                document = self._discovery()
                if document.get("issuer") != self.settings.issuer:
                    raise AccessDenied(503, f"the discovery document names issuer {document.get('issuer')!r}, "
                                            f"expected {self.settings.issuer!r}")
                self._jwks = jwt.PyJWKClient(str(document["jwks_uri"]), cache_jwk_set=True, lifespan=3600,
                                             ssl_context=self._ssl, timeout=10)
            return self._jwks

    def _discovery(self) -> dict[str, Any]:
        for attempt in range(3):
            try:
                with urllib.request.urlopen(self.settings.discovery_url, context=self._ssl, timeout=10) as answer:
                    document: dict[str, Any] = json.loads(answer.read())
                    return document
            except OSError as exc:
                log.warning("discovery document %s: %s (attempt %d)", self.settings.discovery_url, exc, attempt + 1)
                time.sleep(0.5 * (attempt + 1))
        raise AccessDenied(503, "the tenant's signing keys cannot be fetched now; try again")


def require_any(caller: Caller, roles: Iterable[str], what: str) -> None:
    roles = list(roles)
    if not any(caller.has(r) for r in roles):
        raise AccessDenied(403, f"{what} needs the app role {' or '.join(roles)}; the token has "
                                f"{', '.join(sorted(caller.roles)) or 'no roles'}", caller=caller)


def _bearer(authorization: str | None) -> str:
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AccessDenied(401, "no bearer token (Authorization: Bearer <Entra ID access token>)")
    return token.strip()


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims as the token states them, for naming who tried in a refusal; never for a decision."""
    import jwt

    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


def _short(value: Any, limit: int = 120) -> str | None:
    return None if value is None else str(value)[:limit]
