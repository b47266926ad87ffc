"""Reconciliation: bring rows still waiting for a webhook up to the state Stripe reports.

Each row is read from Stripe first, with no transaction open, and then applied by the same
domain function a webhook uses, in a write transaction that locks the row. Those functions
only move a row forward, so a run is safe beside live webhooks and beside another run.

A row whose Stripe object id was never recorded (the request stopped between reserving the
row and recording Stripe's response) is looked up by the id paystream put in the object's
metadata. When Stripe has no such object, the row is canceled, which frees the order or the
refundable amount again. Such a row is only touched once it is older than the threshold, so
that a request still waiting for Stripe is never raced.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from db.models import Payment, RecurringPayment, Refund, utcnow
from paystream.errors import PaystreamError, StripeNotConfigured
from paystream.payments import apply_payment_intent, find_payment_for_intent, lock_payment
from paystream.recurring import apply_paid_invoice, apply_subscription, lock_recurring_payment
from paystream.refunds import apply_refund, lock_refund
from paystream.services import Services
from paystream.stripe_objects import metadata_int, object_id

logger = logging.getLogger("paystream.reconcile")

# `pay` makes up to two Stripe calls after reserving its row (create and confirm, or update
# and confirm), each allowed stripe_api.TIMEOUT_SECONDS (30 s) and one retry, so about 2
# minutes at worst. A lower threshold could cancel a payment whose request is still running.
MIN_AGE_SECONDS = 5 * 60
DEFAULT_AGE_SECONDS = 15 * 60
# Events are searched from this long before the oldest unrecorded payment was created,
# because our clock and Stripe's may differ.
CLOCK_SKEW_SECONDS = 5 * 60
# Stripe lists the events of the last 30 days only. One day less leaves a margin for clock
# differences and for the run's own duration.
EVENTS_LISTED_SECONDS = 29 * 24 * 3600
# The events Stripe creates when an intent is confirmed. An intent with none of them was
# never confirmed, so nothing was charged.
CONFIRMATION_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.processing",
    "payment_intent.payment_failed",
)
RECONCILED_PAYMENT_STATUSES = ("pending", "processing")
RECONCILED_RECURRING_STATUSES = ("incomplete", "past_due")


class ReconcileError(Exception):
    """A row that needs a person, because what Stripe reports is ambiguous."""


@dataclass
class ReconcileReport:
    checked: int = 0
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def reconcile(
    services: Services, *, older_than: int = DEFAULT_AGE_SECONDS
) -> ReconcileReport:
    """Check every pending payment and refund and every incomplete or past-due recurring
    payment against Stripe, and apply what changed.

    `older_than` is in seconds. It is the age a row without a Stripe id must reach before
    it is looked up or canceled.
    """
    if older_than < MIN_AGE_SECONDS:
        raise ValueError(
            f"older_than {older_than} s is below the minimum of {MIN_AGE_SECONDS} s: a pay or "
            "refund request may still be waiting for Stripe that long."
        )
    if not services.stripe.configured:
        raise StripeNotConfigured()
    cutoff = utcnow() - dt.timedelta(seconds=older_than)
    report = ReconcileReport()

    await _reconcile_payments(services, cutoff, report)
    await _reconcile_refunds(services, cutoff, report)
    await _reconcile_recurring_payments(services, report)
    return report


async def _check(report: ReconcileReport, label: str, step: Awaitable[str | None]) -> None:
    """Run one row's check, and record its change or its error without stopping the run."""
    report.checked += 1
    try:
        change = await step
    except (PaystreamError, ReconcileError) as error:
        logger.warning("%s not reconciled: %s", label, error)
        report.errors.append(f"{label}: {error}")
        return
    except Exception as error:
        logger.exception("%s not reconciled", label)
        report.errors.append(f"{label}: {type(error).__name__}: {error}")
        return
    if change is not None:
        logger.info("%s reconciled: %s", label, change)
        report.changes.append(f"{label}: {change}")


# Payments


async def _reconcile_payments(
    services: Services, cutoff: dt.datetime, report: ReconcileReport
) -> None:
    async with services.db.read() as session:
        with_intent = (
            await session.execute(
                select(Payment.id, Payment.stripe_payment_intent_id)
                .where(
                    Payment.status.in_(RECONCILED_PAYMENT_STATUSES),
                    Payment.stripe_payment_intent_id.is_not(None),
                )
                .order_by(Payment.id)
            )
        ).all()
        unrecorded = (
            await session.scalars(
                select(Payment)
                .where(
                    Payment.status == "pending",
                    Payment.stripe_payment_intent_id.is_(None),
                    Payment.created_at < cutoff,
                )
                .order_by(Payment.id)
            )
        ).all()

    # NOTE: every run reads every pending intent again, abandoned ones included, because
    # nothing here cancels an intent the customer never confirmed.
    for payment_id, intent_id in with_intent:
        await _check(
            report, f"payment {payment_id}", _sync_payment(services, payment_id, str(intent_id))
        )
    await _reconcile_unrecorded_payments(services, unrecorded, report)


async def _reconcile_unrecorded_payments(
    services: Services, unrecorded: Sequence[Payment], report: ReconcileReport
) -> None:
    listed_since = utcnow() - dt.timedelta(seconds=EVENTS_LISTED_SECONDS)
    recent = [payment for payment in unrecorded if _as_utc(payment.created_at) >= listed_since]
    for payment in unrecorded:
        if payment not in recent:
            # A confirmation this old may no longer be listed: canceling could hide a charge.
            report.checked += 1
            report.errors.append(
                f"payment {payment.id}: created before the 30 days of events Stripe lists, so "
                "whether its intent was confirmed is unknown: look for an intent with metadata "
                f"paymentId {payment.id} in the Stripe Dashboard."
            )
    if not recent:
        return

    oldest = min(_as_utc(payment.created_at) for payment in recent)
    try:
        confirmed = await _confirmed_intents(services, int(oldest.timestamp()) - CLOCK_SKEW_SECONDS)
    except PaystreamError as error:
        # Without the events it is unknown whether Stripe charged, so nothing is canceled.
        for payment in recent:
            report.checked += 1
            report.errors.append(f"payment {payment.id}: {error}")
        return
    for payment in recent:
        await _check(
            report,
            f"payment {payment.id}",
            _settle_unrecorded_payment(services, payment, confirmed.get(payment.id, {})),
        )


async def _sync_payment(services: Services, payment_id: int, intent_id: str) -> str | None:
    intent = await services.stripe.retrieve_payment_intent(intent_id)
    async with services.db.write() as session:
        payment = await lock_payment(session, payment_id)
        before = payment.status
        changed = await apply_payment_intent(session, payment, intent)
    return f"{before} -> {payment.status}" if changed else None


async def _confirmed_intents(
    services: Services, created_since: int
) -> dict[int, dict[str, dict[str, Any]]]:
    """Intents confirmed since `created_since`, by the paymentId in their metadata."""
    found: dict[int, dict[str, dict[str, Any]]] = {}
    for event_type in CONFIRMATION_EVENTS:
        for event in await services.stripe.list_events(event_type, created_since):
            intent = event.get("data", {}).get("object") or {}
            payment_id = metadata_int(intent, "paymentId")
            intent_id = object_id(intent.get("id"))
            if payment_id is not None and intent_id is not None:
                found.setdefault(payment_id, {})[intent_id] = intent
    return found


def _belongs_to(intent: dict[str, Any], payment: Payment) -> bool:
    # The payment id alone could come from another database using the same Stripe
    # account, so the order, amount and currency must match too.
    return (
        metadata_int(intent, "orderId") == payment.order_id
        and intent.get("amount") == payment.amount
        and str(intent.get("currency") or "").lower() == payment.currency
    )


async def _settle_unrecorded_payment(
    services: Services, payment: Payment, candidates: dict[str, dict[str, Any]]
) -> str | None:
    """Record the intent Stripe confirmed for the payment, or cancel the payment.

    An intent that was created but never confirmed cannot charge anyone: only `pay`'s own
    confirmation could have confirmed it, because the client never received its client
    secret. So a payment with no confirmation event is canceled.
    """
    matches = [intent for intent in candidates.values() if _belongs_to(intent, payment)]
    if len(matches) > 1:
        ids = ", ".join(sorted(str(intent["id"]) for intent in matches))
        raise ReconcileError(f"{len(matches)} confirmed intents name this payment ({ids}).")
    if matches:
        return await _record_confirmed_intent(services, payment.id, str(matches[0]["id"]))

    async with services.db.write() as session:
        row = await lock_payment(session, payment.id)
        if row.status != "pending" or row.stripe_payment_intent_id is not None:
            return None
        row.status = "canceled"
        row.failure_message = (
            "canceled by reconcile: no PaymentIntent was recorded for this payment and Stripe "
            "has no confirmed one."
        )
    return "pending -> canceled, no confirmed intent at Stripe"


async def _record_confirmed_intent(
    services: Services, payment_id: int, intent_id: str
) -> str | None:
    intent = await services.stripe.retrieve_payment_intent(intent_id)
    async with services.db.write() as session:
        # The same lookup the payment callback uses, which records the intent's id.
        payment = await find_payment_for_intent(session, intent)
        if payment is None or payment.id != payment_id:
            raise ReconcileError(f"intent {intent_id} already belongs to another payment.")
        before = payment.status
        if payment.client_secret is None:
            payment.client_secret = intent.get("client_secret")
        await apply_payment_intent(session, payment, intent)
    return f"{before} -> {payment.status}, recorded intent {intent_id}"


def _as_utc(value: dt.datetime) -> dt.datetime:
    # SQLite returns naive datetimes, and every stored time is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


# Refunds


async def _reconcile_refunds(
    services: Services, cutoff: dt.datetime, report: ReconcileReport
) -> None:
    async with services.db.read() as session:
        pending = (
            await session.execute(
                select(
                    Refund.id,
                    Refund.stripe_refund_id,
                    Refund.created_at,
                    Payment.stripe_payment_intent_id,
                )
                .join(Payment, Payment.id == Refund.payment_id)
                .where(Refund.status == "pending")
                .order_by(Refund.id)
            )
        ).all()

    for refund_id, stripe_refund_id, created_at, intent_id in pending:
        label = f"refund {refund_id}"
        if stripe_refund_id is not None:
            await _check(report, label, _sync_refund(services, refund_id, stripe_refund_id))
        elif _as_utc(created_at) < cutoff:
            await _check(report, label, _settle_unrecorded_refund(services, refund_id, intent_id))


async def _sync_refund(services: Services, refund_id: int, stripe_refund_id: str) -> str | None:
    stripe_refund = await services.stripe.retrieve_refund(stripe_refund_id)
    async with services.db.write() as session:
        row = await lock_refund(session, refund_id)
        before = row.status
        changed = await apply_refund(session, row, stripe_refund)
    return f"{before} -> {row.status}" if changed else None


async def _settle_unrecorded_refund(
    services: Services, refund_id: int, intent_id: str | None
) -> str | None:
    """Record the Stripe refund whose metadata names this refund, or cancel the refund.

    A refund is created by one call, and the list of the intent's refunds is read directly,
    so a refund missing from it was never created.
    """
    listed = await services.stripe.list_refunds(intent_id) if intent_id else []
    matches = [item for item in listed if metadata_int(item, "refundId") == refund_id]
    if len(matches) > 1:
        ids = ", ".join(sorted(str(item["id"]) for item in matches))
        raise ReconcileError(f"{len(matches)} Stripe refunds name this refund ({ids}).")

    async with services.db.write() as session:
        row = await lock_refund(session, refund_id)
        if row.status != "pending" or row.stripe_refund_id is not None:
            return None
        if not matches:
            row.status = "canceled"
            row.failure_reason = "canceled by reconcile: Stripe has no refund for it."
            return "pending -> canceled, no refund at Stripe"

        stripe_refund = matches[0]
        owner_id = await session.scalar(
            select(Refund.id).where(Refund.stripe_refund_id == stripe_refund["id"])
        )
        if owner_id is not None:
            raise ReconcileError(
                f"Stripe refund {stripe_refund['id']} belongs to refund {owner_id}."
            )
        row.stripe_refund_id = str(stripe_refund["id"])
        await apply_refund(session, row, stripe_refund)
        return f"pending -> {row.status}, recorded Stripe refund {row.stripe_refund_id}"


# Recurring payments


async def _reconcile_recurring_payments(services: Services, report: ReconcileReport) -> None:
    # NOTE: a recurring payment whose subscription id was never recorded is not looked up,
    # so it stays incomplete and keeps its order from starting another subscription.
    async with services.db.read() as session:
        rows = (
            await session.execute(
                select(RecurringPayment.id, RecurringPayment.stripe_subscription_id)
                .where(
                    RecurringPayment.status.in_(RECONCILED_RECURRING_STATUSES),
                    RecurringPayment.stripe_subscription_id.is_not(None),
                )
                .order_by(RecurringPayment.id)
            )
        ).all()
    for row_id, subscription_id in rows:
        await _check(
            report,
            f"recurring payment {row_id}",
            _sync_recurring_payment(services, row_id, str(subscription_id)),
        )


async def _sync_recurring_payment(
    services: Services, row_id: int, subscription_id: str
) -> str | None:
    # Taken before the read, so any webhook event created after it counts as newer.
    snapshot_at = int(time.time())
    subscription = await services.stripe.retrieve_subscription(subscription_id)
    async with services.db.write() as session:
        row = await lock_recurring_payment(session, row_id)
        before = row.status
        changes = []
        if await apply_subscription(session, row, subscription, snapshot_at):
            changes.append(f"{before} -> {row.status}" if row.status != before else row.status)
        invoice = subscription.get("latest_invoice")
        if isinstance(invoice, dict):
            first = _first_invoice(invoice, before)
            if first is not None and await apply_paid_invoice(session, row, invoice, first=first):
                changes.append(f"recorded paid invoice {invoice['id']}")
    return ", ".join(changes) or None


def _first_invoice(invoice: dict[str, Any], status_before: str) -> bool | None:
    """Classify a paid invoice as the subscription's first (True) or a renewal (False).

    Returns None for an unpaid invoice, or one billed for another reason.
    """
    if invoice.get("status") != "paid":
        return None
    reason = invoice.get("billing_reason")
    if reason == "subscription_cycle":
        return False
    if reason == "subscription_create":
        return True
    # A subscription leaves `incomplete` only by paying its first invoice, so that is the
    # invoice, whatever its billing_reason is (some emulators set none).
    return True if status_before == "incomplete" else None
