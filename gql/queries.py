"""Read queries. Each applies the viewer's visibility in its SQL."""

from __future__ import annotations

from typing import Any

import strawberry
from sqlalchemy import Select, select

from db import models
from db.publish import row_to_dict
from gql.context import Info
from gql.types import HookRun, Order, Payment, PaymentConfig, RecurringPayment, Refund
from paystream.errors import NotFound
from paystream.hook_runs import list_hook_runs
from paystream.viewer import Viewer

# Lists are capped so that one request cannot read a whole table.
MAX_LIST_ROWS = 500


def visible(statement: Select[Any], model: Any, viewer: Viewer) -> Select[Any]:
    viewer.require_authenticated()
    if viewer.is_admin:
        return statement
    return statement.where(model.user_id == viewer.user_id)


async def fetch_rows(info: Info, statement: Select[Any]) -> list[dict[str, Any]]:
    async with info.context.services.db.read() as session:
        rows = (await session.scalars(statement.limit(MAX_LIST_ROWS))).all()
    return [row_to_dict(row) for row in rows]


async def fetch_one(info: Info, model: Any, row_id: int, what: str) -> dict[str, Any]:
    viewer = info.context.viewer
    viewer.require_authenticated()
    async with info.context.services.db.read() as session:
        row = await session.get(model, row_id)
    if row is None:
        raise NotFound(f"{what} {row_id} does not exist.")
    viewer.require_owner(row.user_id, f"{what} {row_id}")
    return row_to_dict(row)


def payments_statement(viewer: Viewer, order_id: int | None, status: str | None) -> Select[Any]:
    statement = visible(select(models.Payment), models.Payment, viewer)
    if order_id is not None:
        statement = statement.where(models.Payment.order_id == order_id)
    if status is not None:
        statement = statement.where(models.Payment.status == status)
    return statement.order_by(models.Payment.id)


def refunds_statement(
    viewer: Viewer, payment_id: int | None, order_id: int | None
) -> Select[Any]:
    statement = visible(select(models.Refund), models.Refund, viewer)
    if payment_id is not None:
        statement = statement.where(models.Refund.payment_id == payment_id)
    if order_id is not None:
        statement = statement.where(models.Refund.order_id == order_id)
    return statement.order_by(models.Refund.id)


def recurring_payments_statement(
    viewer: Viewer, order_id: int | None, status: str | None
) -> Select[Any]:
    statement = visible(select(models.RecurringPayment), models.RecurringPayment, viewer)
    if order_id is not None:
        statement = statement.where(models.RecurringPayment.order_id == order_id)
    if status is not None:
        statement = statement.where(models.RecurringPayment.status == status)
    return statement.order_by(models.RecurringPayment.id)


def orders_statement(viewer: Viewer, status: str | None) -> Select[Any]:
    statement = visible(select(models.Order), models.Order, viewer)
    if status is not None:
        statement = statement.where(models.Order.status == status)
    return statement.order_by(models.Order.id)


@strawberry.type
class Query:
    @strawberry.field
    async def order(self, info: Info, id: int) -> Order:
        return Order.from_dict(await fetch_one(info, models.Order, id, "order"))

    @strawberry.field
    async def orders(self, info: Info, status: str | None = None) -> list[Order]:
        rows = await fetch_rows(info, orders_statement(info.context.viewer, status))
        return [Order.from_dict(row) for row in rows]

    @strawberry.field
    async def payment(self, info: Info, id: int) -> Payment:
        return Payment.from_dict(await fetch_one(info, models.Payment, id, "payment"))

    @strawberry.field
    async def payments(
        self, info: Info, order_id: int | None = None, status: str | None = None
    ) -> list[Payment]:
        statement = payments_statement(info.context.viewer, order_id, status)
        return [Payment.from_dict(row) for row in await fetch_rows(info, statement)]

    @strawberry.field
    async def refund(self, info: Info, id: int) -> Refund:
        return Refund.from_dict(await fetch_one(info, models.Refund, id, "refund"))

    @strawberry.field
    async def refunds(
        self, info: Info, payment_id: int | None = None, order_id: int | None = None
    ) -> list[Refund]:
        statement = refunds_statement(info.context.viewer, payment_id, order_id)
        return [Refund.from_dict(row) for row in await fetch_rows(info, statement)]

    @strawberry.field
    async def recurring_payment(self, info: Info, id: int) -> RecurringPayment:
        row = await fetch_one(info, models.RecurringPayment, id, "recurring payment")
        return RecurringPayment.from_dict(row)

    @strawberry.field
    async def recurring_payments(
        self, info: Info, order_id: int | None = None, status: str | None = None
    ) -> list[RecurringPayment]:
        statement = recurring_payments_statement(info.context.viewer, order_id, status)
        return [RecurringPayment.from_dict(row) for row in await fetch_rows(info, statement)]

    @strawberry.field(description="Runs of the app's hooks, newest first (admins only).")
    async def hook_runs(
        self, info: Info, status: str | None = None, limit: int = 100
    ) -> list[HookRun]:
        runs = await list_hook_runs(
            info.context.services, info.context.viewer, status=status, limit=limit
        )
        return [
            HookRun.from_dict(row_to_dict(run), [row_to_dict(attempt) for attempt in attempts])
            for run, attempts in runs
        ]

    @strawberry.field(description="Public settings for the payment page; needs no token.")
    def payment_config(self, info: Info) -> PaymentConfig:
        settings = info.context.services.settings
        return PaymentConfig(
            publishable_key=settings.stripe_publishable_key,
            brand_name=settings.brand_name,
            brand_logo_url=settings.brand_logo_url,
            brand_slogan=settings.brand_slogan,
        )
