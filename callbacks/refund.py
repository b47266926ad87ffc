"""The refund callback: refund and charge events move refunds, payments and orders."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from paystream.refunds import apply_refund, find_refund

logger = logging.getLogger("paystream.callbacks")


async def handle_refund_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Apply `refund.created`, `refund.updated` or `refund.failed`."""
    stripe_refund = event["data"]["object"]
    row = await find_refund(session, stripe_refund)
    if row is None:
        logger.debug("event %s: refund %s is not ours", event["id"], stripe_refund.get("id"))
        return False
    await apply_refund(session, row, stripe_refund)
    return True


async def handle_charge_refunded_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Apply each refund a `charge.refunded` event embeds.

    API versions before 2022-11-15 embed the charge's refunds. Newer ones do not, and from
    2024-10-28.acacia on their refunds arrive as `refund.*` events instead.

    NOTE: on versions from 2022-11-15 up to acacia neither event carries the refund, so a
    refund made outside paystream (in the Dashboard) is not recorded at all.
    """
    charge = event["data"]["object"]
    refunds = (charge.get("refunds") or {}).get("data") or []
    applied = False
    for stripe_refund in refunds:
        if not isinstance(stripe_refund, dict):
            continue
        stripe_refund = dict(stripe_refund)
        stripe_refund.setdefault("payment_intent", charge.get("payment_intent"))
        row = await find_refund(session, stripe_refund)
        if row is not None:
            await apply_refund(session, row, stripe_refund)
            applied = True
    return applied
