"""The recurring management and recurring deduction callbacks."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import RecurringPayment
from paystream.recurring import (
    FINAL_STATUSES,
    apply_paid_invoice,
    apply_subscription,
    emit_subscription_change,
    invoice_subscription_id,
)
from paystream.stripe_objects import metadata_int, object_id

logger = logging.getLogger("paystream.callbacks")

RENEWAL_REASON = "subscription_cycle"
FIRST_INVOICE_REASON = "subscription_create"


async def _find(
    session: AsyncSession, subscription_id: str | None, metadata_source: dict[str, Any] | None
) -> RecurringPayment | None:
    """Find the recurring payment of a subscription, locked: by id, else by our metadata."""
    if subscription_id is None:
        return None
    row = await session.scalar(
        select(RecurringPayment)
        .where(RecurringPayment.stripe_subscription_id == subscription_id)
        .with_for_update()
    )
    if row is not None or metadata_source is None:
        return row
    ours = metadata_int(metadata_source, "recurringPaymentId")
    if ours is None:
        return None
    row = await session.scalar(
        select(RecurringPayment).where(RecurringPayment.id == ours).with_for_update()
    )
    if row is None or row.stripe_subscription_id not in (None, subscription_id):
        return None
    # The event arrived before `subscribe` recorded the subscription's id.
    row.stripe_subscription_id = subscription_id
    return row


async def handle_subscription_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Apply `customer.subscription.created`, `.updated` or `.deleted`."""
    subscription = event["data"]["object"]
    row = await _find(session, object_id(subscription.get("id")), subscription)
    if row is None:
        logger.debug("event %s: subscription %s is not ours", event["id"], subscription.get("id"))
        return False
    if row.stripe_customer_id is None:
        row.stripe_customer_id = object_id(subscription.get("customer"))
    await apply_subscription(session, row, subscription, int(event.get("created") or 0))
    return True


async def handle_invoice_paid_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Apply `invoice.paid` or `invoice.payment_succeeded`: both carry the same invoice."""
    invoice = event["data"]["object"]
    reason = invoice.get("billing_reason")
    if reason not in (RENEWAL_REASON, FIRST_INVOICE_REASON):
        logger.debug("event %s: invoice billing reason %s is not handled", event["id"], reason)
        return False
    row = await _find(session, invoice_subscription_id(invoice), None)
    if row is None:
        logger.debug("event %s: invoice %s is not for our subscription", event["id"], invoice.get("id"))
        return False
    await apply_paid_invoice(session, row, invoice, first=reason == FIRST_INVOICE_REASON)
    return True


async def handle_invoice_payment_failed_event(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Mark the recurring payment past due; the subscription events then carry Stripe's
    own status, which may be stricter (`unpaid`)."""
    invoice = event["data"]["object"]
    row = await _find(session, invoice_subscription_id(invoice), None)
    if row is None:
        return False
    if row.status in FINAL_STATUSES or row.status == "past_due":
        return True
    if invoice.get("billing_reason") == FIRST_INVOICE_REASON:
        # Stripe keeps a subscription whose first payment failed `incomplete`, not past_due:
        # docs.stripe.com/changelog/2019-03-14/subscriptions-successfully-created-first-payment-fails
        return True
    snapshot_at = int(event.get("created") or 0)
    if row.stripe_snapshot_at is not None and snapshot_at < row.stripe_snapshot_at:
        return True
    logger.info("recurring payment %s is past due after invoice %s", row.id, invoice.get("id"))
    previous_status = row.status
    row.status = "past_due"
    row.stripe_snapshot_at = snapshot_at
    await emit_subscription_change(session, row, previous_status)
    return True
