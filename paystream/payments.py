"""One-time payments: reserving a payment, creating its intent, and applying intent states.

`pay` and the webhook's payment callback both end in `apply_payment_intent`, so a payment's
state has one implementation whichever side learns of it first.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Order, Payment, RecurringPayment
from paystream import hooks, money
from paystream.errors import (
    Conflict,
    InvalidInput,
    StripeNotConfigured,
    StripeRejected,
    StripeUnavailable,
)
from paystream.rows import lock_row
from paystream.services import Services
from paystream.stripe_api import CardDeclined
from paystream.stripe_objects import metadata_int, object_id
from paystream.viewer import Viewer

logger = logging.getLogger("paystream.payments")

# Payment states and the states each may move to. `failed` is not final: the customer may
# retry on the same intent. `succeeded` and `canceled` are final.
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"processing", "succeeded", "failed", "canceled"}),
    "processing": frozenset({"succeeded", "failed", "canceled"}),
    "failed": frozenset({"processing", "succeeded", "failed", "canceled"}),
    "succeeded": frozenset(),
    "canceled": frozenset(),
}


async def lock_order(session: AsyncSession, order_id: int) -> Order:
    return await lock_row(session, Order, order_id, "order")


async def lock_payment(session: AsyncSession, payment_id: int) -> Payment:
    return await lock_row(session, Payment, payment_id, "payment")


def _check_payable(order: Order, currency: str, amount: int) -> None:
    if order.status != "pending":
        raise Conflict(f"order {order.id} is {order.status} and cannot be paid again.")
    if currency != order.currency:
        raise money.MoneyError(
            f"currency {currency.upper()} does not match order {order.id}'s currency "
            f"{order.currency.upper()}."
        )
    expected = money.to_minor_units(order.price, order.currency)
    if amount != expected:
        raise money.MoneyError(
            f"amount {amount} does not match order {order.id}'s price "
            f"{money.format_amount(expected, currency)}, which is {expected} in minor units."
        )
    money.check_charge_amount(amount, currency)


async def _reserve_payment(
    services: Services, viewer: Viewer, order_id: int, currency: str, amount: int
) -> tuple[Payment, bool]:
    """Insert the pending payment that blocks a second one for the same order.

    Returns the payment and whether it is new. An existing failed payment is returned, so
    the retry runs on its intent instead of opening a second intent for the order.
    """
    try:
        async with services.db.write() as session:
            order = await lock_order(session, order_id)
            viewer.require_owner(order.user_id, f"order {order_id}")
            # Checked before the live payment, so a paid order is reported as paid rather
            # than as having its succeeded payment in flight.
            _check_payable(order, currency, amount)
            # An order being paid by a subscription must not get a second, one-time charge.
            # Both `subscribe` and this check run under the order's lock.
            recurring = await session.scalar(
                select(RecurringPayment.id).where(
                    RecurringPayment.order_id == order_id,
                    RecurringPayment.status.not_in(("canceled", "incomplete_expired")),
                )
            )
            if recurring is not None:
                raise Conflict(
                    f"order {order_id} is being paid by recurring payment {recurring}; cancel "
                    "it before paying the order once."
                )
            live = await session.scalar(
                select(Payment).where(Payment.order_id == order_id, Payment.status != "canceled")
            )
            if live is not None and live.status == "failed" and live.stripe_payment_intent_id:
                return live, False
            if live is not None:
                raise Conflict(
                    f"order {order_id} already has payment {live.id} in flight ({live.status})."
                )
            payment = Payment(
                order_id=order.id,
                user_id=order.user_id,
                amount=amount,
                currency=currency,
                status="pending",
            )
            session.add(payment)
            await session.flush()
            return payment, True
    except IntegrityError:
        # A concurrent request inserted the order's payment first (the unique index on
        # live payments per order), which is the same outcome as the check above.
        raise Conflict(f"order {order_id} already has a payment in flight.") from None


async def pay(
    services: Services,
    viewer: Viewer,
    *,
    order_id: int,
    currency: str,
    amount: int,
    payment_method_id: str | None,
) -> Payment:
    """Create (or retry) the order's payment and its Stripe PaymentIntent."""
    viewer.require_authenticated()
    stripe = services.stripe
    if not stripe.configured:
        raise StripeNotConfigured()
    currency = money.normalize_currency(currency)
    if payment_method_id is not None and not payment_method_id.strip():
        raise InvalidInput("paymentMethodId must not be empty when given.")

    payment, is_new = await _reserve_payment(services, viewer, order_id, currency, amount)
    if not is_new:
        if payment_method_id is None:
            return payment
        return await _confirm(services, payment, payment_method_id)

    try:
        intent = await stripe.create_payment_intent(
            payment_id=payment.id,
            amount=amount,
            currency=currency,
            metadata={"orderId": str(order_id), "paymentId": str(payment.id)},
            payment_method=payment_method_id,
        )
    except (StripeRejected, StripeUnavailable) as error:
        # No intent was confirmed, so nothing can be charged: free the order for a new try.
        await _cancel_reserved(services, payment.id, error.message)
        raise

    if payment_method_id is None:
        async with services.db.write() as session:
            payment = await lock_payment(session, payment.id)
            _record_intent(payment, intent)
            await apply_payment_intent(session, payment, intent)
        return payment
    # The intent's id is recorded together with the confirmation's outcome. Should this
    # process stop in between, the intent's metadata still leads its webhook to the payment.
    return await _confirm(services, payment, payment_method_id, created=intent)


def _record_intent(payment: Payment, intent: dict[str, Any]) -> None:
    payment.stripe_payment_intent_id = intent["id"]
    payment.client_secret = intent.get("client_secret")


async def _confirm(
    services: Services,
    payment: Payment,
    payment_method_id: str,
    *,
    created: dict[str, Any] | None = None,
) -> Payment:
    """Confirm the payment's intent; `created` is an intent this request just created,
    already carrying the method, otherwise the existing intent switches to the method."""
    intent_id = created["id"] if created is not None else payment.stripe_payment_intent_id or ""
    try:
        outcome = await services.stripe.confirm_payment_intent(
            intent_id, None if created is not None else payment_method_id
        )
    except (StripeRejected, StripeUnavailable):
        if created is not None:
            # The intent exists: record it, so that paying again retries on it.
            async with services.db.write() as session:
                payment = await lock_payment(session, payment.id)
                _record_intent(payment, created)
        raise
    async with services.db.write() as session:
        payment = await lock_payment(session, payment.id)
        if created is not None:
            _record_intent(payment, created)
        if isinstance(outcome, CardDeclined):
            intent = outcome.payment_intent or {
                "id": intent_id,
                "status": "requires_payment_method",
            }
            intent = dict(intent)
            intent["last_payment_error"] = {"code": outcome.code, "message": outcome.message}
            await apply_payment_intent(session, payment, intent)
        else:
            await apply_payment_intent(session, payment, outcome)
    return payment


async def _cancel_reserved(services: Services, payment_id: int, reason: str) -> None:
    async with services.db.write() as session:
        payment = await lock_payment(session, payment_id)
        if payment.status == "pending" and payment.stripe_payment_intent_id is None:
            payment.status = "canceled"
            payment.failure_message = reason


def payment_status_for(intent: dict[str, Any]) -> str | None:
    """Our payment status for a PaymentIntent's state, or None when it means no change."""
    status = intent.get("status")
    if status == "succeeded":
        return "succeeded"
    if status == "processing":
        return "processing"
    if status == "canceled":
        return "canceled"
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return "failed"
    return None


async def apply_payment_intent(
    session: AsyncSession, payment: Payment, intent: dict[str, Any]
) -> bool:
    """Move the payment forward to the intent's state; return whether anything changed.

    A state the payment has already left (a late `payment_failed` after `succeeded`) is
    ignored, because Stripe delivers events in no fixed order.
    """
    new_status = payment_status_for(intent)
    if new_status is None:
        return False
    if new_status not in PAYMENT_TRANSITIONS[payment.status]:
        logger.debug(
            "payment %s stays %s: intent %s reports %s",
            payment.id, payment.status, intent.get("id"), new_status,
        )
        return False

    previous_status = payment.status
    payment.status = new_status
    if new_status == "failed":
        error = intent.get("last_payment_error") or {}
        payment.failure_code = error.get("decline_code") or error.get("code")
        payment.failure_message = error.get("message")
    logger.info("payment %s is now %s", payment.id, new_status)

    if new_status == "succeeded":
        await _fulfil_order(session, payment, intent)
    # A decline arrives twice, in the confirmation's response and in its webhook, with
    # different codes, so only the move into `failed` runs the hooks.
    # NOTE: a further decline of a payment that is already failed runs no hook either.
    if new_status == "succeeded" or (new_status == "failed" and previous_status != "failed"):
        order = await session.get(Order, payment.order_id)
        await hooks.emit(
            session,
            f"payment.{new_status}",
            rows={"payment": payment, "order": order},
            previous_status=previous_status,
        )
    return True


async def _fulfil_order(session: AsyncSession, payment: Payment, intent: dict[str, Any]) -> None:
    """Mark the order paid once the charged amount and currency match its price."""
    order = await lock_order(session, payment.order_id)
    charged = intent.get("amount_received") or intent.get("amount")
    currency = str(intent.get("currency") or payment.currency).lower()
    expected = money.to_minor_units(order.price, order.currency)
    if charged != expected or currency != order.currency:
        charged_text = f"{charged} {currency.upper()}"
        order.payment_discrepancy = (
            f"payment {payment.id} succeeded for {charged_text} but the order's price is "
            f"{expected} {order.currency.upper()} in minor units."
        )
        logger.warning(
            "order %s left unpaid: payment %s (intent %s) charged %s, expected %s %s",
            order.id, payment.id, object_id(intent.get("id")), charged_text,
            expected, order.currency.upper(),
        )
    elif order.status == "pending":
        order.status = "paid"
        logger.info("order %s is paid by payment %s", order.id, payment.id)
        if payment.amount_refunded:
            # Stripe does not order events, so a refund can be recorded before the success.
            # Imported here because paystream.refunds imports this module.
            from paystream.refunds import update_refunded_totals

            await update_refunded_totals(session, payment)
    payment.callback_processed = True


async def find_payment_for_intent(
    session: AsyncSession, intent: dict[str, Any]
) -> Payment | None:
    """Find the payment an intent belongs to, locked for update, or None when it is not ours.

    The intent's metadata names our payment; it is the fallback for an intent whose id we
    had not yet recorded when its event arrived.
    """
    intent_id = object_id(intent.get("id"))
    if intent_id is None:
        return None
    payment = await session.scalar(
        select(Payment).where(Payment.stripe_payment_intent_id == intent_id).with_for_update()
    )
    if payment is not None:
        return payment
    payment_id = metadata_int(intent, "paymentId")
    if payment_id is None:
        return None
    payment = await session.scalar(
        select(Payment).where(Payment.id == payment_id).with_for_update()
    )
    if payment is None or payment.stripe_payment_intent_id not in (None, intent_id):
        return None
    payment.stripe_payment_intent_id = intent_id
    return payment
