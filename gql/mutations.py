"""Mutations: thin wrappers over the domain functions in `paystream`."""

from __future__ import annotations

from decimal import Decimal

import strawberry
from strawberry.scalars import JSON

from db.publish import row_to_dict
from gql.context import Info
from gql.types import HookRun, Order, Payment, RecurringPayment, Refund
from paystream import hook_runs, orders, payments, recurring, refunds


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Create a pending order; an admin may name its user.")
    async def create_order(
        self,
        info: Info,
        price: Decimal,
        currency: str,
        metadata: JSON | None = None,
        user_id: str | None = None,
    ) -> Order:
        order = await orders.create_order(
            info.context.services,
            info.context.viewer,
            price=price,
            currency=currency,
            metadata=metadata,
            user_id=user_id,
        )
        return Order.from_dict(row_to_dict(order))

    @strawberry.mutation(
        description=(
            "Pay an order: amount is in the currency's smallest unit. With paymentMethodId the "
            "intent is confirmed at once; a decline returns a failed payment."
        )
    )
    async def pay(
        self,
        info: Info,
        order_id: int,
        currency: str,
        amount: int,
        payment_method_id: str | None = None,
    ) -> Payment:
        payment = await payments.pay(
            info.context.services,
            info.context.viewer,
            order_id=order_id,
            currency=currency,
            amount=amount,
            payment_method_id=payment_method_id,
        )
        return Payment.from_dict(row_to_dict(payment))

    @strawberry.mutation(description="Refund part or all of a succeeded payment (admins only).")
    async def refund(self, info: Info, payment_id: int, refund_amount: int) -> Refund:
        row = await refunds.refund(
            info.context.services,
            info.context.viewer,
            payment_id=payment_id,
            refund_amount=refund_amount,
        )
        return Refund.from_dict(row_to_dict(row))

    @strawberry.mutation(
        description=(
            "Start a Stripe subscription for the order on a recurring Price whose amount and "
            "currency match the order's price."
        )
    )
    async def subscribe(
        self, info: Info, order_id: int, price_id: str, payment_method_id: str | None = None
    ) -> RecurringPayment:
        row, client_secret = await recurring.subscribe(
            info.context.services,
            info.context.viewer,
            order_id=order_id,
            price_id=price_id,
            payment_method_id=payment_method_id,
        )
        result = RecurringPayment.from_dict(row_to_dict(row))
        result.latest_invoice_client_secret = client_secret
        return result

    @strawberry.mutation(
        description=(
            "Run a succeeded or failed hook run again, with a fresh allowance of attempts "
            "(admins only)."
        )
    )
    async def rerun_hook(self, info: Info, id: int) -> HookRun:
        run, attempts = await hook_runs.rerun_hook(
            info.context.services, info.context.viewer, id
        )
        return HookRun.from_dict(row_to_dict(run), [row_to_dict(row) for row in attempts])

    @strawberry.mutation(description="Cancel now, or at the end of the paid period.")
    async def cancel_subscription(
        self, info: Info, recurring_payment_id: int, at_period_end: bool = False
    ) -> RecurringPayment:
        row = await recurring.cancel_subscription(
            info.context.services,
            info.context.viewer,
            recurring_payment_id=recurring_payment_id,
            at_period_end=at_period_end,
        )
        return RecurringPayment.from_dict(row_to_dict(row))
