"""The webhook route Stripe posts events to."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from callbacks.events import InvalidEvent, Outcome, parse_event, receive_event
from callbacks.signature import SignatureError, verify
from paystream.services import Services

logger = logging.getLogger("paystream.callbacks")

# Stripe's own events are a few kilobytes; anything far larger is not from Stripe.
MAX_BODY_BYTES = 1_000_000


async def stripe_webhook(request: Request) -> JSONResponse:
    """Verify the signature on the raw bytes, then apply the event exactly once.

    Answers 400 for a bad signature or body (nothing is recorded), 200 for an event that is
    processed, ignored or a duplicate, and 500 for a failure, so that Stripe retries.
    """
    services: Services = request.app.state.services
    settings = services.settings
    payload = await request.body()
    if len(payload) > MAX_BODY_BYTES:
        return JSONResponse({"error": "the body is too large for a Stripe event."}, 413)
    try:
        verify(
            payload,
            request.headers.get("stripe-signature"),
            [secret.get_secret_value() for secret in settings.stripe_webhook_secret],
            tolerance=settings.stripe_webhook_tolerance,
        )
        event = parse_event(payload)
    except SignatureError as error:
        logger.warning("webhook rejected: %s", error)
        return JSONResponse({"error": f"invalid signature: {error}"}, 400)
    except InvalidEvent as error:
        logger.warning("webhook rejected: %s", error)
        return JSONResponse({"error": f"invalid event: {error}"}, 400)

    outcome = await receive_event(services.db, event, payload.decode())
    status = 500 if outcome is Outcome.FAILED else 200
    return JSONResponse({"id": event["id"], "outcome": outcome.value}, status)


routes = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
