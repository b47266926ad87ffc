"""The payment callback: PaymentIntent events move our payment rows."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paystream.payments import apply_payment_intent, find_payment_for_intent

logger = logging.getLogger("paystream.callbacks")


async def handle_payment_intent_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Apply a `payment_intent.*` event; return False when the intent is not ours."""
    intent = event["data"]["object"]
    payment = await find_payment_for_intent(session, intent)
    if payment is None:
        logger.debug("event %s: intent %s is not ours", event["id"], intent.get("id"))
        return False
    await apply_payment_intent(session, payment, intent)
    return True
