"""HTTP hooks: each run is POSTed to the app's URL as JSON, signed like Stripe's webhooks.

The `Paystream-Signature` header is `t=<unix time>,v1=<hex HMAC-SHA256>`, computed with the
hook's secret over `<t>.<raw body>`, the scheme of https://docs.stripe.com/webhooks#verify-manually.
Any 2xx response counts as delivered. Anything else, a redirect included, is retried.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from callbacks.hook_config import HttpHook
from callbacks.signature import sign

SIGNATURE_HEADER = "Paystream-Signature"
# Enough of a failed response's body to say why, without storing a whole error page.
ERROR_BODY_CHARS = 200


class DeliveryFailed(Exception):
    """The app's URL could not be reached or did not respond with a 2xx status."""


def encode_body(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    return f"t={timestamp},v1={sign(payload, secret, timestamp)}"


async def deliver(client: httpx.AsyncClient, hook: HttpHook, body: dict[str, Any]) -> None:
    """POST the body to the hook's URL, and raise DeliveryFailed unless it returns 2xx.

    Messages name the hook rather than its URL, which may carry a token.
    """
    payload = encode_body(body)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "paystream-hooks",
        SIGNATURE_HEADER: signature_header(payload, hook.secret, int(time.time())),
    }
    try:
        response = await client.post(hook.url, content=payload, headers=headers)
    except httpx.HTTPError as error:
        raise DeliveryFailed(
            f"HTTP hook {hook.name}: request failed: {type(error).__name__}: {error}"
        ) from None
    if not response.is_success:
        raise DeliveryFailed(
            f"HTTP hook {hook.name}: responded with {response.status_code}: "
            f"{response.text[:ERROR_BODY_CHARS]}"
        )
