"""Bearer token verification: HS256 with JWT_SECRET, RS256 and ES256 with JWT_PUBLIC_KEY."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from paystream.auth import mint_token, viewer_from_header, viewer_from_token
from paystream.errors import Unauthenticated
from paystream.settings import Settings
from tests.conftest import JWT_SECRET, error_code, graphql, make_settings, running_app

ISSUER = "https://id.example.com/"
AUDIENCE = "paystream-api"
OTHER_SECRET = "another-secret-of-sufficient-length"


def settings_with(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def claims_for(user_id: str = "alice", lifetime: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user_id, "iat": now, "exp": now + lifetime, **extra}


def rejection(token: str, settings: Settings) -> str:
    """The message of the Unauthenticated error that verifying `token` raises."""
    with pytest.raises(Unauthenticated) as raised:
        viewer_from_token(token, settings)
    return raised.value.message


def base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Header and payload with an empty signature, built by hand as an attacker would."""
    return f"{base64url(json.dumps(header).encode())}.{base64url(json.dumps(claims).encode())}."


def public_pem(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


HS256 = settings_with(jwt_secret=JWT_SECRET)


# HS256 with JWT_SECRET


def test_hs256_valid_token_accepted():
    token = jwt.encode(claims_for("alice", role="admin"), JWT_SECRET, algorithm="HS256")

    viewer = viewer_from_token(token, HS256)

    assert viewer.user_id == "alice"
    assert viewer.role == "admin"
    assert viewer.is_admin


def test_hs256_expiry_recorded():
    claims = claims_for("alice", lifetime=600)
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    viewer = viewer_from_token(token, HS256)

    assert viewer.expires_at == float(claims["exp"])


def test_hs256_missing_role_means_user():
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")

    viewer = viewer_from_token(token, HS256)

    assert viewer.role == "user"
    assert not viewer.is_admin


def test_hs256_expired_rejected():
    token = jwt.encode(claims_for("alice", lifetime=-60), JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == "The bearer token has expired."


@pytest.mark.parametrize(
    "token", ["", "not-a-token", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"]
)
def test_hs256_malformed_rejected(token):
    assert rejection(token, HS256).startswith("The bearer token is invalid: ")


def test_hs256_wrong_secret_rejected():
    token = jwt.encode(claims_for("alice"), OTHER_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == (
        "The bearer token is invalid: Signature verification failed."
    )


def test_hs256_tampered_payload_rejected():
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")
    header, _, signature = token.split(".")
    forged = base64url(json.dumps(claims_for("alice", role="admin")).encode())

    assert rejection(f"{header}.{forged}.{signature}", HS256) == (
        "The bearer token is invalid: Signature verification failed."
    )


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_rejected(alg):
    token = unsigned_token({"alg": alg, "typ": "JWT"}, claims_for("alice", role="admin"))

    message = rejection(token, HS256)

    assert message.startswith("The bearer token is invalid: ")


def test_missing_expiry_rejected():
    claims = claims_for("alice")
    del claims["exp"]
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == (
        'The bearer token is invalid: Token is missing the "exp" claim.'
    )


def test_missing_subject_rejected():
    claims = claims_for("alice")
    del claims["sub"]
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == (
        'The bearer token is invalid: Token is missing the "sub" claim.'
    )


def test_non_integer_expiry_rejected():
    token = jwt.encode(claims_for("alice") | {"exp": "soon"}, JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == (
        "The bearer token is invalid: Expiration Time claim (exp) must be an integer."
    )


def test_empty_subject_rejected():
    token = jwt.encode(claims_for(""), JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == "The bearer token has no subject."


# Roles


@pytest.mark.parametrize("role", ["superuser", "Admin", "", ["admin"]])
def test_unknown_role_rejected(role):
    token = jwt.encode(claims_for("alice", role=role), JWT_SECRET, algorithm="HS256")

    assert rejection(token, HS256) == (
        f"The bearer token's role {role!r} is neither user nor admin."
    )


def test_custom_role_claim_read():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_role_claim="https://example.com/role")
    claims = claims_for("root", **{"https://example.com/role": "admin"})
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    viewer = viewer_from_token(token, settings)

    assert viewer.user_id == "root"
    assert viewer.is_admin


def test_custom_role_claim_ignores_role():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_role_claim="https://example.com/role")
    token = jwt.encode(claims_for("alice", role="admin"), JWT_SECRET, algorithm="HS256")

    viewer = viewer_from_token(token, settings)

    assert viewer.role == "user"
    assert not viewer.is_admin


def test_custom_role_claim_minted():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_role_claim="roles/paystream")

    token = mint_token(settings, "root", "admin", 60)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])

    assert claims["roles/paystream"] == "admin"
    assert "role" not in claims
    assert viewer_from_token(token, settings).is_admin


# Issuer and audience


def test_issuer_and_audience_accepted():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    token = jwt.encode(claims_for("alice", iss=ISSUER, aud=AUDIENCE), JWT_SECRET, algorithm="HS256")

    assert viewer_from_token(token, settings).user_id == "alice"


def test_wrong_issuer_rejected():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_issuer=ISSUER)
    token = jwt.encode(
        claims_for("alice", iss="https://evil.example.com/"), JWT_SECRET, algorithm="HS256"
    )

    assert rejection(token, settings) == "The bearer token is invalid: Invalid issuer."


def test_missing_issuer_rejected():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_issuer=ISSUER)
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")

    assert rejection(token, settings) == (
        'The bearer token is invalid: Token is missing the "iss" claim.'
    )


def test_wrong_audience_rejected():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_audience=AUDIENCE)
    token = jwt.encode(claims_for("alice", aud="other-api"), JWT_SECRET, algorithm="HS256")

    assert rejection(token, settings) == "The bearer token is invalid: Audience doesn't match."


def test_missing_audience_rejected():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_audience=AUDIENCE)
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")

    assert rejection(token, settings) == (
        'The bearer token is invalid: Token is missing the "aud" claim.'
    )


def test_audience_list_accepted():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_audience=AUDIENCE)
    claims = claims_for("alice", aud=["other-api", AUDIENCE])
    token = jwt.encode(claims, JWT_SECRET, algorithm="HS256")

    assert viewer_from_token(token, settings).user_id == "alice"


def test_issuer_unchecked_when_unset():
    token = jwt.encode(claims_for("alice", iss="anyone"), JWT_SECRET, algorithm="HS256")

    assert viewer_from_token(token, HS256).user_id == "alice"


def test_mint_sets_issuer_audience():
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)

    token = mint_token(settings, "alice", "user", 60)
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience=AUDIENCE)

    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert viewer_from_token(token, settings).user_id == "alice"


# RS256 and ES256 with JWT_PUBLIC_KEY


def test_rs256_valid_token_accepted(rsa_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice", role="admin"), rsa_key, algorithm="RS256")

    viewer = viewer_from_token(token, settings)

    assert viewer.user_id == "alice"
    assert viewer.is_admin


def test_es256_valid_token_accepted(ec_key):
    settings = settings_with(jwt_public_key=public_pem(ec_key))
    token = jwt.encode(claims_for("bob"), ec_key, algorithm="ES256")

    viewer = viewer_from_token(token, settings)

    assert viewer.user_id == "bob"
    assert viewer.role == "user"


def test_rs256_other_key_rejected(rsa_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims_for("alice"), other, algorithm="RS256")

    assert rejection(token, settings) == (
        "The bearer token is invalid: Signature verification failed."
    )


def test_rs256_expired_rejected(rsa_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice", lifetime=-60), rsa_key, algorithm="RS256")

    assert rejection(token, settings) == "The bearer token has expired."


def test_es256_against_rsa_key_rejected(rsa_key, ec_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice"), ec_key, algorithm="ES256")

    assert rejection(token, settings) == (
        "The bearer token is invalid: its algorithm does not match JWT_PUBLIC_KEY."
    )


def test_rs256_against_ec_key_rejected(rsa_key, ec_key):
    settings = settings_with(jwt_public_key=public_pem(ec_key))
    token = jwt.encode(claims_for("alice"), rsa_key, algorithm="RS256")

    assert rejection(token, settings) == (
        "The bearer token is invalid: its algorithm does not match JWT_PUBLIC_KEY."
    )


def test_hs256_signed_with_public_key_rejected(rsa_key):
    """The classic key confusion: HMAC over the public key text that the server holds."""
    pem = public_pem(rsa_key)
    settings = settings_with(jwt_public_key=pem)
    header = base64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = base64url(json.dumps(claims_for("mallory", role="admin")).encode())
    signature = hmac.new(pem.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64url(signature)}"

    assert rejection(token, settings) == (
        "The bearer token is invalid: The specified alg value is not allowed."
    )


def test_hs256_secret_ignored_with_public_key(rsa_key):
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")

    assert rejection(token, settings) == (
        "The bearer token is invalid: The specified alg value is not allowed."
    )


def test_alg_none_rejected_with_public_key(rsa_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))
    token = unsigned_token({"alg": "none"}, claims_for("alice", role="admin"))

    assert rejection(token, settings).startswith("The bearer token is invalid: ")


def test_rs256_issuer_audience_enforced(rsa_key):
    settings = settings_with(
        jwt_public_key=public_pem(rsa_key), jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    good = jwt.encode(claims_for("alice", iss=ISSUER, aud=AUDIENCE), rsa_key, algorithm="RS256")
    foreign = jwt.encode(claims_for("alice", iss=ISSUER, aud="other"), rsa_key, algorithm="RS256")

    assert viewer_from_token(good, settings).user_id == "alice"
    assert rejection(foreign, settings) == "The bearer token is invalid: Audience doesn't match."


def test_mint_rejected_with_public_key(rsa_key):
    settings = settings_with(jwt_public_key=public_pem(rsa_key))

    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY is set"):
        mint_token(settings, "alice", "user", 60)


def test_mint_rejected_with_secret_and_public_key(rsa_key):
    settings = settings_with(jwt_secret=JWT_SECRET, jwt_public_key=public_pem(rsa_key))

    with pytest.raises(ValueError, match="JWT_PUBLIC_KEY is set"):
        mint_token(settings, "alice", "user", 60)


# The Authorization header


def test_header_missing_is_anonymous():
    viewer = viewer_from_header(None, HS256)

    assert viewer.user_id is None
    assert not viewer.is_authenticated


@pytest.mark.parametrize("value", ["Basic YWxpY2U6cHc=", "Bearer", "Bearer   ", "token abc"])
def test_header_without_bearer_rejected(value):
    with pytest.raises(Unauthenticated) as raised:
        viewer_from_header(value, HS256)

    assert raised.value.message == "The Authorization header must be 'Bearer <token>'."


def test_header_scheme_case_insensitive():
    token = jwt.encode(claims_for("alice"), JWT_SECRET, algorithm="HS256")

    assert viewer_from_header(f"bearer {token}", HS256).user_id == "alice"


# Over HTTP

ORDERS = "query { orders { id } }"
CONFIG = "query { paymentConfig { brandName } }"


async def post_with_header(client, query: str, authorization: str) -> dict[str, Any]:
    response = await client.post(
        "/graphql", json={"query": query}, headers={"Authorization": authorization}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_http_valid_token_reads(client):
    body = await graphql(client, ORDERS, user="alice")

    assert "errors" not in body
    assert body["data"]["orders"] == []


async def test_http_expired_token_unauthenticated(client):
    token = jwt.encode(claims_for("alice", lifetime=-60), JWT_SECRET, algorithm="HS256")

    body = await post_with_header(client, ORDERS, f"Bearer {token}")

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"
    assert body["errors"][0]["message"] == "The bearer token has expired."


async def test_http_alg_none_unauthenticated(client):
    token = unsigned_token({"alg": "none"}, claims_for("root", role="admin"))

    body = await post_with_header(client, ORDERS, f"Bearer {token}")

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"


async def test_http_wrong_secret_unauthenticated(client):
    token = jwt.encode(claims_for("alice"), OTHER_SECRET, algorithm="HS256")

    body = await post_with_header(client, ORDERS, f"Bearer {token}")

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"


async def test_http_bad_token_still_reads_config(client):
    body = await post_with_header(client, CONFIG, "Bearer not-a-token")

    assert "errors" not in body
    assert body["data"]["paymentConfig"] == {"brandName": "Test Shop"}


async def test_http_key_type_mismatch_unauthenticated(database_url, rsa_key, ec_key):
    settings = make_settings(database_url, jwt_secret=None, jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice"), ec_key, algorithm="ES256")

    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            body = await post_with_header(http, ORDERS, f"Bearer {token}")

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"
    assert body["errors"][0]["message"] == (
        "The bearer token is invalid: its algorithm does not match JWT_PUBLIC_KEY."
    )


async def test_http_rs256_token_reads(database_url, rsa_key):
    settings = make_settings(database_url, jwt_secret=None, jwt_public_key=public_pem(rsa_key))
    token = jwt.encode(claims_for("alice"), rsa_key, algorithm="RS256")

    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            body = await post_with_header(http, ORDERS, f"Bearer {token}")

    assert "errors" not in body
    assert body["data"]["orders"] == []
