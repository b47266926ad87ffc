"""Bearer tokens (JWT): verifying them into a Viewer, and minting them for development."""

from __future__ import annotations

import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from paystream.errors import Unauthenticated
from paystream.settings import Settings
from paystream.viewer import ADMIN, ANONYMOUS_VIEWER, USER, Viewer

logger = logging.getLogger("paystream.auth")

ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]


def _dev_secret(settings: Settings) -> str:
    """Return a random secret kept in a file of the working folder, created on first use."""
    path = Path(settings.jwt_dev_secret_file)
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    logger.warning(
        "JWT_SECRET is not set: tokens are signed with a development secret kept in %s", path
    )
    return secret


def verification_key(settings: Settings) -> tuple[str, list[str]]:
    if settings.jwt_public_key:
        return settings.jwt_public_key, ASYMMETRIC_ALGORITHMS
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value(), ["HS256"]
    return _dev_secret(settings), ["HS256"]


def viewer_from_token(token: str, settings: Settings) -> Viewer:
    """Verify a token and return its viewer; raise Unauthenticated for any bad token.

    The algorithm list is fixed by the configured key, so `alg: none` and an HS256 token
    signed with a public key are rejected.
    """
    key, algorithms = verification_key(settings)
    options: dict[str, Any] = {"require": ["sub", "exp"], "verify_aud": bool(settings.jwt_audience)}
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=algorithms,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("The bearer token has expired.") from None
    except jwt.InvalidKeyError:
        # PyJWT raises InvalidKeyError, which is no InvalidTokenError, when the token's algorithm
        # needs another key type than JWT_PUBLIC_KEY (ES256 against an RSA key).
        raise Unauthenticated(
            "The bearer token is invalid: its algorithm does not match JWT_PUBLIC_KEY."
        ) from None
    except jwt.InvalidTokenError as error:
        # Some PyJWT messages end with a period of their own.
        raise Unauthenticated(f"The bearer token is invalid: {str(error).rstrip('.')}.") from None

    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("The bearer token has no subject.")
    role = claims.get(settings.jwt_role_claim, USER)
    if role not in (USER, ADMIN):
        raise Unauthenticated(f"The bearer token's role {role!r} is neither user nor admin.")
    expires = claims.get("exp")
    return Viewer(user_id=subject, role=role, expires_at=float(expires) if expires else None)


def viewer_from_header(value: str | None, settings: Settings) -> Viewer:
    """Return the viewer for an `Authorization` header, anonymous when there is none."""
    if not value:
        return ANONYMOUS_VIEWER
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return viewer_from_token(token.strip(), settings)


def mint_token(settings: Settings, user_id: str, role: str, expires_in: int) -> str:
    """Sign an HS256 token for development and tests."""
    if settings.jwt_public_key:
        raise ValueError(
            "JWT_PUBLIC_KEY is set, so only RS256 or ES256 tokens from your identity provider "
            "verify. Unset it to mint tokens with JWT_SECRET."
        )
    if role not in (USER, ADMIN):
        raise ValueError(f"role {role!r} must be user or admin.")
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": user_id,
        settings.jwt_role_claim: role,
        "iat": now,
        "exp": now + expires_in,
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    key, _ = verification_key(settings)
    return jwt.encode(claims, key, algorithm="HS256")
