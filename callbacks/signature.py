"""Verification of the `Stripe-Signature` header (https://docs.stripe.com/webhooks#verify-manually)."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence


class SignatureError(Exception):
    """The request does not carry a valid signature from any configured secret."""


def parse_header(header: str) -> tuple[int, list[str]]:
    """Parse the header into its timestamp and its `v1` signatures."""
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            # str.isdigit() alone also accepts "²", which int() cannot parse, and a Unix time
            # has far fewer digits than int() refuses to convert.
            if not (value.isascii() and value.isdigit() and len(value) <= 12):
                raise SignatureError("Stripe-Signature has a malformed timestamp.")
            timestamp = int(value)
        elif key == "v1" and value:
            # hmac.compare_digest rejects non-ASCII text with TypeError; such a value can
            # match no hex digest anyway.
            if value.isascii():
                signatures.append(value)
    if timestamp is None:
        raise SignatureError("Stripe-Signature has no timestamp.")
    if not signatures:
        raise SignatureError("Stripe-Signature has no v1 signature.")
    return timestamp, signatures


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Compute the hex HMAC-SHA256 that Stripe sends, over `<timestamp>.<raw body>`."""
    message = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> None:
    """Raise SignatureError unless one secret signed these exact bytes recently.

    Several secrets are tried because Stripe signs with both the old and the new one while
    an endpoint's secret is rolled. Timestamps more than `tolerance` seconds in the past or
    in the future are rejected, which bounds how long a captured request can be replayed.
    """
    if not header:
        raise SignatureError("Stripe-Signature header is missing.")
    if not secrets:
        raise SignatureError("no webhook secret is configured.")
    timestamp, signatures = parse_header(header)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError("Stripe-Signature timestamp is outside the tolerance.")
    for secret in secrets:
        expected = sign(payload, secret, timestamp)
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise SignatureError("no Stripe-Signature matches the payload.")
