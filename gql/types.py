"""GraphQL object types, built from a row as `db.publish.row_to_dict` shows it.

Queries and live subscriptions build them the same way, so a subscriber receives exactly what a
query returns.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from starlette.requests import Request
from strawberry.types import Info

from db import models
from db.publish import row_to_dict
from paystream.errors import NotFound
from paystream.money import minor_unit_exponent


def _time(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def _optional_time(value: Any) -> dt.datetime | None:
    return None if value is None else _time(value)


def _price(value: Any, currency: str) -> Decimal:
    """Return the price with exactly as many decimals as its currency has (25.00 USD, 500 JPY)."""
    exponent = minor_unit_exponent(currency)
    return Decimal(str(value)).quantize(Decimal(1).scaleb(-exponent))


@strawberry.type
class Order:
    id: int
    user_id: str
    price: Decimal
    currency: str
    status: str
    kind: str
    recurring_payment_id: int | None
    metadata: JSON | None
    payment_discrepancy: str | None = strawberry.field(
        description="Why a succeeded payment did not mark the order paid, if it did not."
    )
    stripe_invoice_id: str | None = strawberry.field(
        description="For renewals and subscription orders: the Stripe invoice that paid it."
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Order:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            price=_price(row["price"], row["currency"]),
            currency=row["currency"],
            status=row["status"],
            kind=row["kind"],
            recurring_payment_id=row.get("recurring_payment_id"),
            metadata=row.get("metadata"),
            payment_discrepancy=row.get("payment_discrepancy"),
            stripe_invoice_id=row.get("stripe_invoice_id"),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )


async def load_order(info: Info[Any, Any], order_id: int) -> Order:
    """Load the order of a row the viewer may read, so the order is theirs too.

    Within one HTTP request each order is read once, however many rows or aliases ask for
    it. A WebSocket's context lives across events, so there every event reads afresh.
    """
    memo = info.context.order_memo if isinstance(info.context.request, Request) else None
    if memo is not None and order_id in memo:
        return memo[order_id]
    async with info.context.services.db.read() as session:
        row = await session.get(models.Order, order_id)
    if row is None:
        raise NotFound(f"order {order_id} does not exist.")
    order = Order.from_dict(row_to_dict(row))
    if memo is not None:
        memo[order_id] = order
    return order


@strawberry.type
class Payment:
    id: int
    order_id: int
    user_id: str
    amount: int = strawberry.field(description="In the currency's smallest unit.")
    currency: str
    status: str
    stripe_payment_intent_id: str | None
    client_secret: str | None = strawberry.field(
        description="The PaymentIntent's client secret, for Stripe.js to confirm the payment."
    )
    amount_refunded: int
    failure_code: str | None
    failure_message: str | None
    callback_processed: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @strawberry.field(description="The order this payment is for, read when it is asked for.")
    async def order(self, info: Info[Any, Any]) -> Order:
        return await load_order(info, self.order_id)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Payment:
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            user_id=row["user_id"],
            amount=row["amount"],
            currency=row["currency"],
            status=row["status"],
            stripe_payment_intent_id=row.get("stripe_payment_intent_id"),
            client_secret=row.get("client_secret"),
            amount_refunded=row["amount_refunded"],
            failure_code=row.get("failure_code"),
            failure_message=row.get("failure_message"),
            callback_processed=bool(row["callback_processed"]),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )


@strawberry.type
class Refund:
    id: int
    payment_id: int
    order_id: int
    user_id: str
    amount: int = strawberry.field(description="In the currency's smallest unit.")
    currency: str
    status: str
    stripe_refund_id: str | None
    failure_reason: str | None
    requested_by: str | None
    callback_processed: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @strawberry.field(description="The refunded order, read when it is asked for.")
    async def order(self, info: Info[Any, Any]) -> Order:
        return await load_order(info, self.order_id)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Refund:
        return cls(
            id=row["id"],
            payment_id=row["payment_id"],
            order_id=row["order_id"],
            user_id=row["user_id"],
            amount=row["amount"],
            currency=row["currency"],
            status=row["status"],
            stripe_refund_id=row.get("stripe_refund_id"),
            failure_reason=row.get("failure_reason"),
            requested_by=row.get("requested_by"),
            callback_processed=bool(row["callback_processed"]),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )


@strawberry.type
class RecurringPayment:
    id: int
    order_id: int
    user_id: str
    stripe_subscription_id: str | None
    stripe_customer_id: str | None
    price_id: str
    status: str = strawberry.field(description="The Stripe subscription's status.")
    current_period_end: dt.datetime | None
    cancel_at_period_end: bool
    canceled_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    latest_invoice_client_secret: str | None = strawberry.field(
        default=None,
        description=(
            "Set only in subscribe's answer when the first invoice's payment needs the "
            "customer's action: the client secret for Stripe.js."
        ),
    )

    @strawberry.field(description="The order that started this subscription.")
    async def order(self, info: Info[Any, Any]) -> Order:
        return await load_order(info, self.order_id)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> RecurringPayment:
        return cls(
            id=row["id"],
            order_id=row["order_id"],
            user_id=row["user_id"],
            stripe_subscription_id=row.get("stripe_subscription_id"),
            stripe_customer_id=row.get("stripe_customer_id"),
            price_id=row["price_id"],
            status=row["status"],
            current_period_end=_optional_time(row.get("current_period_end")),
            cancel_at_period_end=bool(row["cancel_at_period_end"]),
            canceled_at=_optional_time(row.get("canceled_at")),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
        )


@strawberry.type
class PaymentConfig:
    """The settings a client needs to set up Stripe.js and brand its payment page."""

    publishable_key: str | None
    brand_name: str
    brand_logo_url: str | None
    brand_slogan: str | None


@strawberry.type(description="One attempt of a hook run.")
class HookAttempt:
    attempt: int
    started_at: dt.datetime
    finished_at: dt.datetime | None
    outcome: str | None = strawberry.field(
        description="succeeded or failed; null while the attempt runs."
    )
    error: str | None

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> HookAttempt:
        return cls(
            attempt=row["attempt"],
            started_at=_time(row["started_at"]),
            finished_at=_optional_time(row.get("finished_at")),
            outcome=row.get("outcome"),
            error=row.get("error"),
        )


@strawberry.type(description="One hook's run for one callback occurrence (admins only).")
class HookRun:
    id: int
    hook: str = strawberry.field(
        description="A Python hook's dotted path, or the name of an HTTP hook."
    )
    callback: str
    stripe_event_id: str | None = strawberry.field(
        description="The Stripe event that caused the callback; null for a mutation's change."
    )
    status: str = strawberry.field(description="pending, running, succeeded or failed.")
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    last_error: str | None
    finished_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime
    history: list[HookAttempt] = strawberry.field(description="Every attempt, oldest first.")

    @classmethod
    def from_dict(cls, row: dict[str, Any], history: list[dict[str, Any]]) -> HookRun:
        return cls(
            id=row["id"],
            hook=row["hook"],
            callback=row["callback"],
            stripe_event_id=row.get("stripe_event_id"),
            status=row["status"],
            attempts=row["attempts"],
            max_attempts=row["max_attempts"],
            next_attempt_at=_time(row["next_attempt_at"]),
            last_error=row.get("last_error"),
            finished_at=_optional_time(row.get("finished_at")),
            created_at=_time(row["created_at"]),
            updated_at=_time(row["updated_at"]),
            history=[HookAttempt.from_dict(attempt) for attempt in history],
        )


__all__ = [
    "HookAttempt",
    "HookRun",
    "Order",
    "Payment",
    "PaymentConfig",
    "RecurringPayment",
    "Refund",
]
