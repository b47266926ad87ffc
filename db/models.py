"""The tables. Money columns hold integers in the currency's minor unit, as Stripe counts it."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Order(Timestamps, Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    # The price as the app states it, in major units (99.99); payments convert it exactly.
    price: Mapped[Decimal] = mapped_column(Numeric(20, 3))
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    kind: Mapped[str] = mapped_column(String(16), default="one_time")
    # The subscription a renewal order was charged for. Not a foreign key: recurring
    # payments themselves point at their first order.
    recurring_payment_id: Mapped[int | None] = mapped_column(index=True)
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    # Set when a payment succeeded for an amount or currency other than the order's.
    payment_discrepancy: Mapped[str | None] = mapped_column(Text)
    # The invoice a renewal order was created for; unique, so one invoice makes one order.
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(255), unique=True)


class Payment(Timestamps, Base):
    __tablename__ = "payments"
    __table_args__ = (
        # One live intent per order: a second `pay` for the same order, even a concurrent
        # one, fails on this index. Canceled payments no longer count.
        Index(
            "uq_payments_live_order",
            "order_id",
            unique=True,
            sqlite_where=text("status != 'canceled'"),
            postgresql_where=text("status != 'canceled'"),
        ),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("amount_refunded >= 0", name="amount_refunded_not_negative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    # The order owner's id, copied so that a published change can be permission-checked
    # without a query.
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    stripe_payment_intent_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    client_secret: Mapped[str | None] = mapped_column(String(255))
    amount_refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    failure_code: Mapped[str | None] = mapped_column(String(255))
    failure_message: Mapped[str | None] = mapped_column(Text)
    callback_processed: Mapped[bool] = mapped_column(Boolean, default=False)


class Refund(Timestamps, Base):
    __tablename__ = "refunds"
    __table_args__ = (CheckConstraint("amount > 0", name="amount_positive"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payment_id: Mapped[int] = mapped_column(
        ForeignKey("payments.id", ondelete="RESTRICT"), index=True
    )
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(32), default="pending")
    stripe_refund_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str | None] = mapped_column(String(255))
    callback_processed: Mapped[bool] = mapped_column(Boolean, default=False)


class RecurringPayment(Timestamps, Base):
    __tablename__ = "recurring_payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="RESTRICT"), index=True)
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(255))
    price_id: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(32), default="incomplete")
    current_period_end: Mapped[dt.datetime | None]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    canceled_at: Mapped[dt.datetime | None]
    # `created` of the newest Stripe snapshot applied, so an older one never overwrites it.
    stripe_snapshot_at: Mapped[int | None] = mapped_column(BigInteger)


class Customer(Timestamps, Base):
    __tablename__ = "customers"

    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    stripe_customer_id: Mapped[str] = mapped_column(String(255), unique=True)


class StripeEvent(Base):
    """One received Stripe event: the de-duplication record, audit trail and replay source."""

    __tablename__ = "stripe_events"

    # Keyed by endpoint too: Stripe delivers one event, with one id, to every endpoint
    # registered for its type, and each endpoint applies it once.
    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(255), primary_key=True, default="main")
    type: Mapped[str] = mapped_column(String(255), index=True)
    api_version: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)


class HookPayload(Base):
    """The rows and event one callback occurrence passes to its hooks, stored once for all."""

    __tablename__ = "hook_payloads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # JSON: the callback, the rows involved, the previous status and the Stripe event.
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class HookRun(Timestamps, Base):
    """One hook's run for one callback occurrence: the outbox row the hook runner executes.

    Status: pending (due at `next_attempt_at`) -> running (claimed until `locked_until`) ->
    succeeded, back to pending for a retry, or failed once `max_attempts` are used up.
    """

    __tablename__ = "hook_runs"
    __table_args__ = (Index("ix_hook_runs_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payload_id: Mapped[int] = mapped_column(
        ForeignKey("hook_payloads.id", ondelete="RESTRICT"), index=True
    )
    hook: Mapped[str] = mapped_column(String(255))
    callback: Mapped[str] = mapped_column(String(255))
    stripe_event_id: Mapped[str | None] = mapped_column(String(255), index=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[dt.datetime | None]


class HookAttempt(Base):
    """One attempt of a hook run; an attempt with no outcome was interrupted or is running."""

    __tablename__ = "hook_attempts"
    __table_args__ = (UniqueConstraint("run_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("hook_runs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    outcome: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)


__all__ = [
    "Base",
    "Customer",
    "HookAttempt",
    "HookPayload",
    "HookRun",
    "Order",
    "Payment",
    "RecurringPayment",
    "Refund",
    "StripeEvent",
    "utcnow",
]
