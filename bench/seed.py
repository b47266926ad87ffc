"""Databases for the benchmark, migrated and seeded before the server starts.

A case gets either a SQLite file in the run's temporary folder or a PostgreSQL database of
its own, created here and dropped when the case ends. Rows go in through paystream's own
table definitions with SQLAlchemy Core, shaped as `pay` leaves them: a pending order with one
payment that already has its Stripe intent id.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]  # asyncpg 0.32 ships no type hints
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from db.engine import normalize_database_url
from db.migrate import upgrade
from db.models import Order, Payment

PRICE = Decimal("20.00")
AMOUNT = 2000
CURRENCY = "usd"
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class SeededPayment:
    order_id: int
    payment_id: int
    user_id: str
    intent_id: str


def database_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def migrate(url: str) -> None:
    """Apply paystream's Alembic migrations to the database at `url`.

    Alembic runs its own event loop here, so call this outside a running loop (in a thread).
    """
    upgrade(normalize_database_url(url))


def create_database(path: Path) -> str:
    """Create a migrated SQLite file and return its async URL, as DATABASE_URL takes it.

    Alembic runs its own event loop here, so call this outside a running loop (in a thread).
    """
    url = database_url(path)
    migrate(url)
    return url


async def _postgres_admin(admin_url: str, statement: str) -> None:
    # asyncpg takes the plain postgresql:// form, without SQLAlchemy's driver suffix.
    plain = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(plain, timeout=POSTGRES_CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError) as error:
        reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
        raise RuntimeError(
            f"connecting to PostgreSQL at {admin_url} failed with {reason}. Start PostgreSQL "
            "there, or name another server with bench/run --postgres."
        ) from error
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def postgres_database(admin_url: str, label: str) -> AsyncIterator[str]:
    """Create an empty PostgreSQL database, yield its async URL and drop it at the end.

    `admin_url` is the URL of an existing database on the server, opened as a user who may
    create databases. The new database is named after `label` and a random suffix, so that
    runs side by side do not meet. It is dropped WITH (FORCE), which ends any session
    still connected to it.
    """
    name = f"paystream_bench_{label}_{uuid.uuid4().hex[:8]}"
    await _postgres_admin(admin_url, f'CREATE DATABASE "{name}"')
    try:
        base = admin_url.rsplit("/", 1)[0]
        yield normalize_database_url(f"{base}/{name}")
    finally:
        await _postgres_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def insert_payments(
    url: str, users: list[str], statuses: list[str], *, order_per_payment: bool = True
) -> list[SeededPayment]:
    """Insert one payment per entry of `users` and `statuses` (paired) and return them.

    `url` is a SQLite or PostgreSQL URL. Each payment gets its own pending order unless
    `order_per_payment` is false, when they all share one order. Only one payment of an
    order may be other than canceled.
    """
    if len(users) != len(statuses):
        raise ValueError(f"{len(users)} users do not pair with {len(statuses)} statuses.")
    engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            seeded = await _insert_rows(connection, users, statuses, order_per_payment)
            if connection.dialect.name == "postgresql":
                await _advance_sequences(connection)
    finally:
        await engine.dispose()
    return seeded


async def _insert_rows(
    connection: AsyncConnection, users: list[str], statuses: list[str], order_per_payment: bool
) -> list[SeededPayment]:
    now = dt.datetime.now(dt.UTC)
    first_order = (await connection.scalar(select(func.max(Order.id))) or 0) + 1
    first_payment = (await connection.scalar(select(func.max(Payment.id))) or 0) + 1
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
    await connection.execute(insert(Order), orders)
    await connection.execute(insert(Payment), payments)
    return seeded


async def _advance_sequences(connection: AsyncConnection) -> None:
    # The rows above carry their own ids, which PostgreSQL's id sequences do not see. Without
    # this, the server's next insert into these tables would reuse id 1 and fail.
    for table in (Order.__tablename__, Payment.__tablename__):
        await connection.execute(
            text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}")
        )


async def server_version(url: str) -> str:
    """Return the version of the database server at `url`, such as 15.20 for PostgreSQL."""
    engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            if connection.dialect.name == "postgresql":
                version = await connection.scalar(text("SHOW server_version"))
            else:
                version = await connection.scalar(text("SELECT sqlite_version()"))
    finally:
        await engine.dispose()
    return str(version)


async def count_payments(url: str, status: str) -> int:
    engine = create_async_engine(normalize_database_url(url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            count = await connection.scalar(
                select(func.count()).select_from(Payment).where(Payment.status == status)
            )
    finally:
        await engine.dispose()
    return int(count or 0)
