"""Database files for the benchmark, migrated and seeded before the server starts.

Rows go in through paystream's own table definitions with SQLAlchemy Core, shaped as `pay`
leaves them: a pending order with one payment that already has its Stripe intent id.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, insert, select

from db.migrate import upgrade
from db.models import Order, Payment

PRICE = Decimal("20.00")
AMOUNT = 2000
CURRENCY = "usd"


@dataclass(frozen=True)
class SeededPayment:
    order_id: int
    payment_id: int
    user_id: str
    intent_id: str


def database_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def create_database(path: Path) -> str:
    """Create a migrated SQLite file and return its async URL, as DATABASE_URL takes it.

    Alembic runs its own event loop here, so call this outside a running loop (in a thread).
    """
    url = database_url(path)
    upgrade(url)
    return url


def insert_payments(
    path: Path, users: list[str], statuses: list[str], *, order_per_payment: bool = True
) -> list[SeededPayment]:
    """Insert one payment per entry of `users` and `statuses` (paired) and return them.

    Each payment gets its own pending order unless `order_per_payment` is false, when they
    all share one order. Only one payment of an order may be other than canceled.
    """
    if len(users) != len(statuses):
        raise ValueError(f"{len(users)} users do not pair with {len(statuses)} statuses.")
    engine = create_engine(f"sqlite:///{path}")
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as connection:
            first_order = (connection.scalar(select(func.max(Order.id))) or 0) + 1
            first_payment = (connection.scalar(select(func.max(Payment.id))) or 0) + 1
            order_count = len(users) if order_per_payment else 1
            orders: list[dict[str, Any]] = [
                {"id": first_order + i, "user_id": users[i], "price": PRICE,
                 "currency": CURRENCY, "status": "pending", "kind": "one_time",
                 "created_at": now, "updated_at": now}
                for i in range(order_count)
            ]
            payments: list[dict[str, Any]] = []
            seeded: list[SeededPayment] = []
            for i, (user, status) in enumerate(zip(users, statuses, strict=True)):
                payment_id = first_payment + i
                order_id: int = orders[i if order_per_payment else 0]["id"]
                intent_id = f"pi_bench{payment_id:012d}"
                payments.append(
                    {"id": payment_id, "order_id": order_id, "user_id": user, "amount": AMOUNT,
                     "currency": CURRENCY, "status": status,
                     "stripe_payment_intent_id": intent_id,
                     "client_secret": f"{intent_id}_secret_bench", "amount_refunded": 0,
                     "callback_processed": False, "created_at": now, "updated_at": now}
                )
                seeded.append(SeededPayment(order_id, payment_id, user, intent_id))
            connection.execute(insert(Order), orders)
            connection.execute(insert(Payment), payments)
    finally:
        engine.dispose()
    return seeded


def count_payments(path: Path, status: str) -> int:
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            count = connection.scalar(
                select(func.count()).select_from(Payment).where(Payment.status == status)
            )
    finally:
        engine.dispose()
    return int(count or 0)
