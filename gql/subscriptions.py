"""Live lists: the current rows first, then a fresh list after every change that touches it.

Changes are filtered in memory by the subscriber's permissions and arguments; the database
is read only for the first list and after a resync.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import strawberry
from sqlalchemy import Select

from db import models
from gql.context import Info
from gql.live import Resync
from gql.queries import (
    fetch_one,
    fetch_rows,
    orders_statement,
    payments_statement,
    recurring_payments_statement,
    refunds_statement,
)
from gql.types import Order, Payment, RecurringPayment, Refund
from paystream.viewer import Viewer

T = TypeVar("T")
RowFilter = Callable[[dict[str, Any]], bool]


def _newer_or_same(incoming: dict[str, Any], current: dict[str, Any] | None) -> bool:
    # ISO timestamps of one time zone sort as text; an older snapshot never replaces a newer.
    return current is None or incoming["updated_at"] >= current["updated_at"]


async def _next_batch(queue: asyncio.Queue[Any]) -> list[Any]:
    """Wait for at least one message, then take whatever else is already queued."""
    batch = [await queue.get()]
    while not queue.empty():
        batch.append(queue.get_nowait())
    return batch


async def live_list(
    info: Info,
    table: str,
    statement: Select[Any],
    matches: RowFilter,
    build: Callable[[dict[str, Any]], T],
) -> AsyncGenerator[list[T], None]:
    viewer = info.context.viewer
    async with info.context.hub.listen(table) as queue:
        # Registered before the first read, so no change committed after it is missed.
        rows = {row["id"]: row for row in await fetch_rows(info, statement)}
        yield [build(row) for _, row in sorted(rows.items())]

        while True:
            changed = False
            for message in await _next_batch(queue):
                if isinstance(message, Resync):
                    rows = {row["id"]: row for row in await fetch_rows(info, statement)}
                    changed = True
                    continue
                if not viewer.sees(message.get("user_id")):
                    continue
                row = message["row"]
                current = rows.get(row["id"])
                if matches(row):
                    if _newer_or_same(row, current):
                        rows[row["id"]] = row
                        changed = True
                elif current is not None and _newer_or_same(row, current):
                    del rows[row["id"]]
                    changed = True
            if changed:
                yield [build(row) for _, row in sorted(rows.items())]


def _equals_if_given(row: dict[str, Any], key: str, expected: Any) -> bool:
    return expected is None or row.get(key) == expected


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The payments you may read, live.")
    async def payments(
        self, info: Info, order_id: int | None = None, status: str | None = None
    ) -> AsyncGenerator[list[Payment], None]:
        viewer = info.context.viewer
        if order_id is not None:
            await fetch_one(info, models.Order, order_id, "order")
        statement = payments_statement(viewer, order_id, status)

        def matches(row: dict[str, Any]) -> bool:
            return _equals_if_given(row, "order_id", order_id) and _equals_if_given(
                row, "status", status
            )

        async for items in live_list(info, "payments", statement, matches, Payment.from_dict):
            yield items

    @strawberry.subscription(description="The refunds you may read, live.")
    async def refunds(
        self, info: Info, payment_id: int | None = None, order_id: int | None = None
    ) -> AsyncGenerator[list[Refund], None]:
        viewer = info.context.viewer
        if payment_id is not None:
            await fetch_one(info, models.Payment, payment_id, "payment")
        if order_id is not None:
            await fetch_one(info, models.Order, order_id, "order")
        statement = refunds_statement(viewer, payment_id, order_id)

        def matches(row: dict[str, Any]) -> bool:
            return _equals_if_given(row, "payment_id", payment_id) and _equals_if_given(
                row, "order_id", order_id
            )

        async for items in live_list(info, "refunds", statement, matches, Refund.from_dict):
            yield items

    @strawberry.subscription(description="The recurring payments you may read, live.")
    async def recurring_payments(
        self, info: Info, order_id: int | None = None, status: str | None = None
    ) -> AsyncGenerator[list[RecurringPayment], None]:
        viewer = info.context.viewer
        if order_id is not None:
            await fetch_one(info, models.Order, order_id, "order")
        statement = recurring_payments_statement(viewer, order_id, status)

        def matches(row: dict[str, Any]) -> bool:
            return _equals_if_given(row, "order_id", order_id) and _equals_if_given(
                row, "status", status
            )

        async for items in live_list(
            info, "recurring_payments", statement, matches, RecurringPayment.from_dict
        ):
            yield items

    @strawberry.subscription(description="The orders you may read, live; renewals included.")
    async def orders(
        self, info: Info, status: str | None = None
    ) -> AsyncGenerator[list[Order], None]:
        statement = orders_statement(info.context.viewer, status)

        def matches(row: dict[str, Any]) -> bool:
            return _equals_if_given(row, "status", status)

        async for items in live_list(info, "orders", statement, matches, Order.from_dict):
            yield items
