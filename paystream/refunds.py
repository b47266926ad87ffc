"""Refunds: reserving the amount, creating the Stripe refund, and applying refund states.

A pending refund counts against what is still refundable from the moment it is reserved,
so two refunds racing for the same payment can never together exceed it.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Order, Payment, Refund
from paystream import hooks, money
from paystream.errors import Conflict, StripeNotConfigured, StripeRejected
from paystream.payments import lock_order, lock_payment
from paystream.rows import lock_row
from paystream.services import Services
from paystream.stripe_objects import metadata_int, object_id
from paystream.viewer import Viewer

logger = logging.getLogger("paystream.refunds")

# Refund states and the states each may move to. A succeeded refund can still fail later
# (https://docs.stripe.com/refunds#failed-refunds); failed and canceled are final.
REFUND_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "failed", "canceled"}),
    "succeeded": frozenset({"failed", "canceled"}),
    "failed": frozenset(),
    "canceled": frozenset(),
}
# Refunds that count against the payment's refundable amount.
RESERVING_STATUSES = ("pending", "succeeded")


async def refundable_amount(session: AsyncSession, payment: Payment) -> int:
    reserved = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment.id, Refund.status.in_(RESERVING_STATUSES)
        )
    )
    return payment.amount - max(int(reserved or 0), payment.amount_refunded)


async def _reserve_refund(
    services: Services, viewer: Viewer, payment_id: int, amount: int
) -> tuple[Refund, str]:
    async with services.db.write() as session:
        # The payment's row lock (or SQLite's write lock) serializes refunds of one payment,
        # so the refundable amount read here cannot change before the insert commits.
        payment = await lock_payment(session, payment_id)
        if payment.status != "succeeded":
            raise Conflict(
                f"payment {payment_id} is {payment.status}; only a succeeded payment can be "
                "refunded."
            )
        money.check_refund_amount(amount, payment.currency)
        remaining = await refundable_amount(session, payment)
        if amount > remaining:
            raise money.MoneyError(
                f"refundAmount {amount} exceeds the {remaining} still refundable on payment "
                f"{payment_id}."
            )
        refund = Refund(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            amount=amount,
            currency=payment.currency,
            status="pending",
            requested_by=viewer.user_id,
        )
        session.add(refund)
        await session.flush()
        return refund, payment.stripe_payment_intent_id or ""


async def refund(
    services: Services, viewer: Viewer, *, payment_id: int, refund_amount: int
) -> Refund:
    """Refund part or all of a succeeded payment through Stripe."""
    viewer.require_admin("refund a payment")
    if not services.stripe.configured:
        raise StripeNotConfigured()
    if isinstance(refund_amount, bool) or refund_amount <= 0:
        raise money.MoneyError(f"refundAmount {refund_amount} must be a positive integer.")

    row, intent_id = await _reserve_refund(services, viewer, payment_id, refund_amount)
    try:
        stripe_refund = await services.stripe.create_refund(
            refund_id=row.id,
            payment_intent_id=intent_id,
            amount=refund_amount,
            metadata={
                "refundId": str(row.id),
                "paymentId": str(row.payment_id),
                "orderId": str(row.order_id),
            },
        )
    except StripeRejected as error:
        # Stripe created nothing, so the reserved amount is released.
        await _cancel_reserved(services, row.id, error.message)
        raise
    # Any other failure leaves the refund pending: Stripe may have created it, and the
    # reservation keeps the amount from being refunded a second time meanwhile.

    async with services.db.write() as session:
        row = await lock_refund(session, row.id)
        row.stripe_refund_id = stripe_refund["id"]
        await apply_refund(session, row, stripe_refund)
    return row


async def lock_refund(session: AsyncSession, refund_id: int) -> Refund:
    return await lock_row(session, Refund, refund_id, "refund")


async def _cancel_reserved(services: Services, refund_id: int, reason: str) -> None:
    async with services.db.write() as session:
        row = await lock_refund(session, refund_id)
        if row.status == "pending" and row.stripe_refund_id is None:
            row.status = "canceled"
            row.failure_reason = reason


def refund_status_for(stripe_refund: dict[str, Any]) -> str | None:
    status = stripe_refund.get("status")
    if status in ("succeeded", "failed", "canceled"):
        return str(status)
    return None


async def apply_refund(session: AsyncSession, row: Refund, stripe_refund: dict[str, Any]) -> bool:
    """Move the refund forward to Stripe's state and update the payment and order."""
    new_status = refund_status_for(stripe_refund)
    if new_status is None or new_status == row.status:
        return False
    if new_status not in REFUND_TRANSITIONS[row.status]:
        logger.debug("refund %s stays %s: Stripe reports %s", row.id, row.status, new_status)
        return False

    previous_status = row.status
    row.status = new_status
    if new_status in ("failed", "canceled"):
        row.failure_reason = stripe_refund.get("failure_reason") or row.failure_reason
    row.callback_processed = True
    logger.info("refund %s is now %s", row.id, new_status)

    payment = await lock_payment(session, row.payment_id)
    await update_refunded_totals(session, payment)
    if new_status in ("succeeded", "failed"):
        order = await session.get(Order, payment.order_id)
        await hooks.emit(
            session,
            f"refund.{new_status}",
            rows={"refund": row, "payment": payment, "order": order},
            previous_status=previous_status,
        )
    return True


async def update_refunded_totals(session: AsyncSession, payment: Payment) -> None:
    """Recompute the payment's refunded amount from its refunds and set the order's status."""
    await session.flush()
    refunded = await session.scalar(
        select(func.coalesce(func.sum(Refund.amount), 0)).where(
            Refund.payment_id == payment.id, Refund.status == "succeeded"
        )
    )
    refunded = int(refunded or 0)
    if refunded != payment.amount_refunded:
        payment.amount_refunded = refunded

    order: Order = await lock_order(session, payment.order_id)
    if order.status not in ("paid", "partially_refunded", "refunded"):
        return
    # The order follows the refunded total both ways, because a refund that fails after it
    # succeeded returns the money to the merchant.
    if refunded >= payment.amount:
        status = "refunded"
    elif refunded > 0:
        status = "partially_refunded"
    else:
        status = "paid"
    if status != order.status:
        order.status = status


async def find_refund(session: AsyncSession, stripe_refund: dict[str, Any]) -> Refund | None:
    """Our row for a Stripe refund, created when the refund was made outside paystream.

    Returns None when the refund's payment is not ours.
    """
    refund_id = object_id(stripe_refund.get("id"))
    if refund_id is None:
        return None
    row = await session.scalar(
        select(Refund).where(Refund.stripe_refund_id == refund_id).with_for_update()
    )
    if row is not None:
        return row

    ours = metadata_int(stripe_refund, "refundId")
    if ours is not None:
        row = await session.scalar(select(Refund).where(Refund.id == ours).with_for_update())
        if row is not None and row.stripe_refund_id is None:
            row.stripe_refund_id = refund_id
            return row

    intent_id = object_id(stripe_refund.get("payment_intent"))
    if intent_id is None:
        return None
    payment = await session.scalar(
        select(Payment).where(Payment.stripe_payment_intent_id == intent_id).with_for_update()
    )
    amount = stripe_refund.get("amount")
    if payment is None or not isinstance(amount, int) or amount <= 0:
        return None
    # Another event for this refund (`refund.created` and `charge.refunded` arrive together)
    # may have inserted its row while this one waited for the payment's lock.
    row = await session.scalar(
        select(Refund).where(Refund.stripe_refund_id == refund_id).with_for_update()
    )
    if row is not None:
        return row
    row = Refund(
        payment_id=payment.id,
        order_id=payment.order_id,
        user_id=payment.user_id,
        amount=amount,
        currency=str(stripe_refund.get("currency") or payment.currency).lower(),
        status="pending",
        stripe_refund_id=refund_id,
        requested_by="stripe",
    )
    session.add(row)
    await session.flush()
    logger.info("refund %s made outside paystream recorded as refund %s", refund_id, row.id)
    return row
