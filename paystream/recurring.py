"""Recurring payments: starting and canceling Stripe subscriptions, and applying their state.

A recurring payment follows its Stripe subscription's newest snapshot. Snapshots are ordered
by the `created` time of the event (or API response) that carried them, because Stripe sends
subscription events in no fixed order; a canceled subscription never comes back.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Customer, Order, Payment, RecurringPayment
from paystream import hooks, money
from paystream.errors import Conflict, InvalidInput, NotFound, StripeNotConfigured, StripeRejected
from paystream.payments import lock_order
from paystream.rows import lock_row
from paystream.services import Services
from paystream.stripe_objects import object_id
from paystream.viewer import Viewer

logger = logging.getLogger("paystream.recurring")

# Subscription statuses no later snapshot may leave.
FINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})


async def lock_recurring_payment(session: AsyncSession, recurring_payment_id: int) -> RecurringPayment:
    return await lock_row(session, RecurringPayment, recurring_payment_id, "recurring payment")


def _check_price(order: Order, price: dict[str, Any], price_id: str) -> None:
    if price.get("type") not in (None, "recurring") or not price.get("recurring"):
        raise InvalidInput(f"price {price_id} is not a recurring price.")
    amount, currency = price.get("unit_amount"), str(price.get("currency") or "").lower()
    expected = money.to_minor_units(order.price, order.currency)
    if currency != order.currency or amount != expected:
        raise money.MoneyError(
            f"price {price_id} charges {amount} {currency.upper()} but order {order.id}'s price "
            f"is {expected} {order.currency.upper()} in minor units."
        )


async def _reserve(
    services: Services, viewer: Viewer, order_id: int, price: dict[str, Any], price_id: str
) -> RecurringPayment:
    async with services.db.write() as session:
        order = await lock_order(session, order_id)
        viewer.require_owner(order.user_id, f"order {order_id}")
        if order.status != "pending" or order.kind != "one_time":
            raise Conflict(f"order {order_id} is {order.status} and cannot start a subscription.")
        _check_price(order, price, price_id)
        existing = await session.scalar(
            select(RecurringPayment).where(
                RecurringPayment.order_id == order_id,
                RecurringPayment.status.not_in(FINAL_STATUSES),
            )
        )
        if existing is not None:
            raise Conflict(f"order {order_id} already has recurring payment {existing.id}.")
        live_payment = await session.scalar(
            select(Payment.id).where(Payment.order_id == order_id, Payment.status != "canceled")
        )
        if live_payment is not None:
            raise Conflict(f"order {order_id} already has payment {live_payment} in flight.")
        row = RecurringPayment(
            order_id=order.id, user_id=order.user_id, price_id=price_id, status="incomplete"
        )
        session.add(row)
        await session.flush()
        return row


async def customer_for(services: Services, user_id: str) -> str:
    """Return the user's Stripe customer id, creating the customer once per user."""
    async with services.db.read() as session:
        known = await session.get(Customer, user_id)
    if known is not None:
        return known.stripe_customer_id

    created = await services.stripe.create_customer(user_id)
    try:
        async with services.db.write() as session:
            session.add(Customer(user_id=user_id, stripe_customer_id=created["id"]))
    except IntegrityError:
        # A concurrent request recorded the user's customer first; use that one.
        async with services.db.read() as session:
            known = await session.get(Customer, user_id)
        if known is None:
            raise
        return known.stripe_customer_id
    return str(created["id"])


async def subscribe(
    services: Services,
    viewer: Viewer,
    *,
    order_id: int,
    price_id: str,
    payment_method_id: str | None,
) -> tuple[RecurringPayment, str | None]:
    """Start a subscription for the order; return it and a client secret, if one is needed."""
    viewer.require_authenticated()
    if not services.stripe.configured:
        raise StripeNotConfigured()
    if not price_id.strip():
        raise InvalidInput("priceId must not be empty.")
    price = await services.stripe.retrieve_price(price_id)

    row = await _reserve(services, viewer, order_id, price, price_id)
    try:
        customer_id = await customer_for(services, row.user_id)
        if payment_method_id:
            await services.stripe.set_default_payment_method(customer_id, payment_method_id)
        subscription = await services.stripe.create_subscription(
            recurring_payment_id=row.id,
            customer_id=customer_id,
            price_id=price_id,
            metadata={"orderId": str(order_id), "recurringPaymentId": str(row.id)},
        )
    except StripeRejected as error:
        await _expire_reserved(services, row.id, error.message)
        raise

    async with services.db.write() as session:
        row = await lock_recurring_payment(session, row.id)
        row.stripe_subscription_id = subscription["id"]
        row.stripe_customer_id = customer_id
        await apply_subscription(session, row, subscription, int(time.time()))
        invoice = subscription.get("latest_invoice")
        if isinstance(invoice, dict) and invoice.get("status") == "paid":
            await apply_paid_invoice(session, row, invoice, first=True)
    return row, _client_secret(subscription)


def _client_secret(subscription: dict[str, Any]) -> str | None:
    invoice = subscription.get("latest_invoice")
    intent = invoice.get("payment_intent") if isinstance(invoice, dict) else None
    if isinstance(intent, dict) and intent.get("status") in (
        "requires_action",
        "requires_payment_method",
        "requires_confirmation",
    ):
        secret = intent.get("client_secret")
        return secret if isinstance(secret, str) else None
    return None


async def _expire_reserved(services: Services, row_id: int, reason: str) -> None:
    async with services.db.write() as session:
        row = await lock_recurring_payment(session, row_id)
        if row.stripe_subscription_id is None:
            row.status = "incomplete_expired"
            logger.info("recurring payment %s not started: %s", row.id, reason)


async def cancel_subscription(
    services: Services, viewer: Viewer, *, recurring_payment_id: int, at_period_end: bool
) -> RecurringPayment:
    """Cancel now, or at the end of the paid period."""
    viewer.require_authenticated()
    if not services.stripe.configured:
        raise StripeNotConfigured()
    async with services.db.read() as session:
        row = await session.get(RecurringPayment, recurring_payment_id)
    if row is None:
        raise NotFound(f"recurring payment {recurring_payment_id} does not exist.")
    viewer.require_owner(row.user_id, f"recurring payment {recurring_payment_id}")
    if row.status in FINAL_STATUSES:
        raise Conflict(f"recurring payment {recurring_payment_id} is already {row.status}.")
    if row.stripe_subscription_id is None:
        raise Conflict(f"recurring payment {recurring_payment_id} has not started yet.")
    if at_period_end and row.cancel_at_period_end:
        return row

    subscription = await services.stripe.cancel_subscription(
        row.stripe_subscription_id, at_period_end=at_period_end
    )
    async with services.db.write() as session:
        row = await lock_recurring_payment(session, recurring_payment_id)
        await apply_subscription(session, row, subscription, int(time.time()))
    return row


def _timestamp(value: Any) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value, dt.UTC) if isinstance(value, int) else None


def _period_end(subscription: dict[str, Any]) -> dt.datetime | None:
    # From the 2025-03-31 API version on, the period lives on each subscription item.
    end = subscription.get("current_period_end")
    if end is None:
        items = (subscription.get("items") or {}).get("data") or []
        ends = [item.get("current_period_end") for item in items if isinstance(item, dict)]
        end = max((value for value in ends if isinstance(value, int)), default=None)
    return _timestamp(end)


async def apply_subscription(
    session: AsyncSession, row: RecurringPayment, subscription: dict[str, Any], snapshot_at: int
) -> bool:
    """Apply a subscription snapshot unless a newer one, or a cancellation, came first."""
    if row.status in FINAL_STATUSES:
        logger.debug("recurring payment %s is %s: snapshot ignored", row.id, row.status)
        return False
    if row.stripe_snapshot_at is not None and snapshot_at < row.stripe_snapshot_at:
        logger.debug("recurring payment %s: older snapshot ignored", row.id)
        return False

    previous_status = row.status
    before = _subscription_state(row)
    status = subscription.get("status")
    if isinstance(status, str) and status != row.status:
        logger.info("recurring payment %s is now %s", row.id, status)
        row.status = status
    period_end = _period_end(subscription)
    if period_end is not None:
        row.current_period_end = period_end
    row.cancel_at_period_end = bool(subscription.get("cancel_at_period_end"))
    canceled_at = _timestamp(subscription.get("canceled_at"))
    if canceled_at is not None:
        row.canceled_at = canceled_at
    elif row.status == "canceled" and row.canceled_at is None:
        row.canceled_at = dt.datetime.now(dt.UTC)
    row.stripe_snapshot_at = snapshot_at
    if _subscription_state(row) != before:
        await emit_subscription_change(session, row, previous_status)
    return True


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite returns stored times without their zone; every stored time is UTC.
    return value.replace(tzinfo=dt.UTC) if value is not None and value.tzinfo is None else value


def _subscription_state(row: RecurringPayment) -> tuple[Any, ...]:
    """Return the fields whose change the subscription hooks report."""
    return (
        row.status,
        _utc(row.current_period_end),
        row.cancel_at_period_end,
        _utc(row.canceled_at),
    )


async def emit_subscription_change(
    session: AsyncSession, row: RecurringPayment, previous_status: str
) -> None:
    """Queue the hooks of the subscription callback that a change of `row` amounts to."""
    if row.status == "canceled":
        callback = "subscription.canceled"
    elif previous_status == "incomplete" and row.status in ("active", "trialing"):
        callback = "subscription.started"
    else:
        callback = "subscription.updated"
    order = await session.get(Order, row.order_id)
    await hooks.emit(
        session,
        callback,
        rows={"recurring_payment": row, "order": order},
        previous_status=previous_status,
    )


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """The invoice's subscription, at the top level before the 2025-03-31 API version and
    under `parent.subscription_details` from then on."""
    found = object_id(invoice.get("subscription"))
    if found:
        return found
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    return object_id(details.get("subscription")) if isinstance(details, dict) else None


def _invoice_payment_intent(invoice: dict[str, Any]) -> str | None:
    found = object_id(invoice.get("payment_intent"))
    if found:
        return found
    payments = (invoice.get("payments") or {}).get("data") or []
    for entry in payments:
        payment = entry.get("payment") if isinstance(entry, dict) else None
        if isinstance(payment, dict) and payment.get("payment_intent"):
            return object_id(payment["payment_intent"])
    return None


async def apply_paid_invoice(
    session: AsyncSession, row: RecurringPayment, invoice: dict[str, Any], *, first: bool
) -> bool:
    """Record a paid invoice: the first pays the original order, each renewal makes one.

    The caller holds the recurring payment's row lock, which serializes the deliveries of
    one subscription's invoices; the unique invoice id on orders backs that up.
    """
    invoice_id = object_id(invoice.get("id"))
    amount = invoice.get("amount_paid")
    currency = str(invoice.get("currency") or "").lower()
    if invoice_id is None or not isinstance(amount, int) or not currency:
        return False
    intent_id = _invoice_payment_intent(invoice)

    if first:
        order = await lock_order(session, row.order_id)
        if order.stripe_invoice_id is not None:
            return False
        order.stripe_invoice_id = invoice_id
        if order.status == "pending":
            order.status = "paid"
        await _record_payment(session, order, amount, currency, intent_id)
        logger.info("order %s paid by invoice %s", order.id, invoice_id)
        return True

    existing = await session.scalar(select(Order.id).where(Order.stripe_invoice_id == invoice_id))
    if existing is not None:
        return False
    order = Order(
        user_id=row.user_id,
        price=money.from_minor_units(amount, currency),
        currency=currency,
        status="paid",
        kind="renewal",
        recurring_payment_id=row.id,
        stripe_invoice_id=invoice_id,
    )
    session.add(order)
    await session.flush()
    payment = await _record_payment(session, order, amount, currency, intent_id)
    logger.info("renewal order %s created for invoice %s", order.id, invoice_id)
    await hooks.emit(
        session,
        "renewal.charged",
        rows={"recurring_payment": row, "order": order, "payment": payment},
        previous_status=None,
    )
    return True


async def _record_payment(
    session: AsyncSession, order: Order, amount: int, currency: str, intent_id: str | None
) -> Payment | None:
    """Record the order's payment unless it exists; return None for an invoice of 0."""
    if amount <= 0:
        # A trial or a full discount makes a paid invoice of 0: nothing was charged, and a
        # payment row must have a positive amount.
        return None
    live = await session.scalar(
        select(Payment).where(Payment.order_id == order.id, Payment.status != "canceled")
    )
    if live is not None:
        return live
    if intent_id is not None:
        taken = await session.scalar(
            select(Payment.id).where(Payment.stripe_payment_intent_id == intent_id)
        )
        if taken is not None:
            intent_id = None
    payment = Payment(
        order_id=order.id,
        user_id=order.user_id,
        amount=amount,
        currency=currency,
        status="succeeded",
        stripe_payment_intent_id=intent_id,
        callback_processed=True,
    )
    session.add(payment)
    await session.flush()
    return payment
