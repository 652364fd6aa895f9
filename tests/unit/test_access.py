"""Token checks of the operator API, with keys made here (no I/O): what a forged or misdirected token gets."""
from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.azure.access import AccessDenied, AccessSettings, TokenVerifier

TENANT, AUDIENCE = "tenant-contoso", "c0ffee00-0000-4000-8000-00000000f7a9"
SETTINGS = AccessSettings(tenant=TENANT, audiences=(AUDIENCE,), authority="https://login.example")
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OID = "6f1c2d3e-0000-4000-8000-0000000000a1"


class Keys:
    """The tenant's published key set: one RSA key, kid k1."""

    def get_signing_key_from_jwt(self, token: str) -> Any:
        if jwt.get_unverified_header(token).get("kid") != "k1":
            raise jwt.PyJWKClientError("Unable to find a signing key that matches")
        return jwt.PyJWK.from_dict({**jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key(), as_dict=True),
                                    "kid": "k1"})


VERIFIER = TokenVerifier(SETTINGS, keys=Keys())


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": f"https://login.example/{TENANT}/v2.0", "aud": AUDIENCE, "tid": TENANT, "oid": OID,
            "name": "Demo Operator", "roles": ["Approver.prod"], "scp": "user_impersonation", "iat": now, "nbf": now,
            "exp": now + 600}
    return {k: v for k, v in {**base, **changes}.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = KEY, kid: str = "k1", algorithm: str = "RS256") -> str:
    return "Bearer " + jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


def hs256_with_public_key(payload: dict[str, Any]) -> str:
    """Signed by hand (PyJWT itself refuses to): HMAC over the token with the published key as the secret."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    secret = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'kid': 'k1'}).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"Bearer {signing_input}.{b64(signature)}"


def refusal(token: str) -> AccessDenied:
    with pytest.raises(AccessDenied) as caught:
        VERIFIER.verify(token)
    return caught.value


def test_a_valid_token_names_the_caller_by_object_id_with_roles() -> None:
    caller = VERIFIER.verify(sign(claims()))
    assert (caller.oid, caller.tenant, caller.name) == (OID, TENANT, "Demo Operator")
    assert caller.has("Approver.prod") and caller.actor == f"Demo Operator <{OID}>"
    assert caller.person and not VERIFIER.verify(sign(claims(scp=None))).person   # no scp: an application


@pytest.mark.parametrize(("token", "why"), [
    (lambda: sign(claims(exp=int(time.time()) - 120)), "expired"),
    (lambda: sign(claims(nbf=int(time.time()) + 600)), "not yet valid"),
    (lambda: sign(claims(aud="api://another")), "not for this API"),
    (lambda: sign(claims(iss="https://login.example/tenant-fabrikam/v2.0")), "not issued by this API's tenant"),
    (lambda: sign(claims(tid="tenant-fabrikam")), "another tenant"),
    (lambda: sign(claims(oid=None)), "oid"),
    (lambda: sign(claims(roles="Approver.prod")), "roles claim is not a list"),
    (lambda: sign(claims(), kid="k2"), "not signed by a key of the tenant"),
    (lambda: sign(claims(), key=rsa.generate_private_key(public_exponent=65537, key_size=2048)), "Signature"),
    # the public key used as an HMAC secret: the classic algorithm-confusion forgery
    (lambda: hs256_with_public_key(claims()), "token is invalid"),
    (lambda: "Bearer " + jwt.encode(claims(), None, algorithm="none", headers={"kid": "k1"}), "token is invalid"),
    (lambda: "Basic dXNlcjpwYXNz", "no bearer token"),
    (lambda: None, "no bearer token"),
])
def test_a_token_that_proves_nothing_is_a_401_naming_why(token: Any, why: str) -> None:
    denied = refusal(token())
    assert denied.status == 401 and why in denied.reason
    assert denied.who()["verified"] is False


def test_who_tried_is_what_an_unverifiable_token_claims_never_trusted() -> None:
    forged = sign(claims(), key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert refusal(forged).who() == {"verified": False, "oid": OID, "name": "Demo Operator", "tid": TENANT}
