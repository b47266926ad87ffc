"""The webhook routes Stripe posts events to: the main endpoint and the dedicated ones."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbacks.events import (
    EVENT_HANDLERS,
    MAIN_ENDPOINT,
    Handler,
    InvalidEvent,
    Outcome,
    endpoint_handlers,
    parse_event,
    receive_event,
)
from callbacks.signature import SignatureError, verify
from paystream.services import Services

logger = logging.getLogger("paystream.callbacks")

# Stripe's own events are a few kilobytes; anything far larger is not from Stripe.
MAX_BODY_BYTES = 1_000_000


async def stripe_webhook(request: Request) -> JSONResponse:
    """Verify the signature on the raw bytes, then apply the event exactly once.

    Returns 400 for a bad signature or body (nothing is recorded), 200 for an event that is
    processed, ignored or a duplicate, and 500 for a failure, so that Stripe retries.
    """
    services: Services = request.app.state.services
    secrets = [secret.get_secret_value() for secret in services.settings.stripe_webhook_secret]
    return await _receive(request, services, secrets, MAIN_ENDPOINT, EVENT_HANDLERS)


async def dedicated_webhook(request: Request) -> JSONResponse:
    """Receive an event at a dedicated endpoint, checked against that endpoint's secrets.

    An event of a type on the endpoint's list runs the `stripe:<type>` hooks and no system
    callback; any other type is recorded as ignored. Returns 404 for an unknown endpoint.
    """
    services: Services = request.app.state.services
    name = request.path_params["name"]
    endpoint = services.hooks.endpoints.get(name)
    if endpoint is None:
        return JSONResponse({"error": f"no webhook endpoint is named {name!r}."}, 404)
    handlers = endpoint_handlers(endpoint.events)
    return await _receive(request, services, endpoint.secrets, name, handlers)


async def _read_body(request: Request) -> bytes | None:
    """Read the body, or return None once it grows past MAX_BODY_BYTES.

    Reading stops there, so an unsigned request cannot make the server hold a large body."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _receive(
    request: Request,
    services: Services,
    secrets: Sequence[str],
    endpoint: str,
    handlers: Mapping[str, Handler],
) -> JSONResponse:
    payload = await _read_body(request)
    if payload is None:
        return JSONResponse({"error": "the body is too large for a Stripe event."}, 413)
    try:
        verify(
            payload,
            request.headers.get("stripe-signature"),
            secrets,
            tolerance=services.settings.stripe_webhook_tolerance,
        )
        event = parse_event(payload)
    except SignatureError as error:
        logger.warning("webhook to endpoint %s rejected: %s", endpoint, error)
        return JSONResponse({"error": f"invalid signature: {error}"}, 400)
    except InvalidEvent as error:
        logger.warning("webhook to endpoint %s rejected: %s", endpoint, error)
        return JSONResponse({"error": f"invalid event: {error}"}, 400)

    outcome = await receive_event(
        services.db, event, payload.decode(), endpoint=endpoint, handlers=handlers
    )
    status = 500 if outcome is Outcome.FAILED else 200
    return JSONResponse({"id": event["id"], "outcome": outcome.value}, status)


routes = [
    Route("/webhooks/stripe", stripe_webhook, methods=["POST"]),
    Route("/webhooks/stripe/{name}", dedicated_webhook, methods=["POST"]),
]
