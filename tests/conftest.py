"""Fixtures shared by the suites: databases, the app, a real uvicorn, tokens, signed events.

Every test that touches the database runs twice: on SQLite and on the PostgreSQL server at
127.0.0.1:5432. A PostgreSQL that is not reachable fails the run rather than skipping it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from callbacks.signature import sign
from paystream.app import create_app
from paystream.auth import mint_token
from paystream.settings import Settings
from tests.emulator.harness import LocalStripe

REDIS_URL = os.environ.get("PAYSTREAM_TEST_REDIS", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "PAYSTREAM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
WEBHOOK_SECRET = "whsec_paystream_test"
JWT_SECRET = "paystream-test-secret-that-is-long-enough"
# Real Stripe webhook payloads; SOURCES.md there lists where each comes from.
EVENTS_DIR = Path(__file__).with_name("stripe_events")
TABLES = (
    "refunds",
    "payments",
    "recurring_payments",
    "orders",
    "customers",
    "stripe_events",
    "hook_attempts",
    "hook_runs",
    "hook_payloads",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# Databases


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test run's own on the local PostgreSQL, dropped at the end."""
    name = f"paystream_test_{os.getpid()}"

    async def admin(statement: str) -> None:
        try:
            connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
        except (OSError, asyncpg.PostgresError) as error:
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} did not answer: {error}")
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def run(statement: str) -> None:
        # This fixture may be first requested from inside the test loop, so the admin
        # statements get a loop of their own in a worker thread.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
            worker.submit(asyncio.run, admin(statement)).result()

    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    run(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _truncate_postgres(url: str) -> None:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        existing = await connection.fetchval("SELECT to_regclass('public.payments') IS NOT NULL")
        if existing:
            await connection.execute(
                f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"
            )
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/paystream.db"
    url: str = request.getfixturevalue("postgres_url")
    await _truncate_postgres(url)
    return url


# Stripe emulator


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    emulator = LocalStripe()
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


# The app


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "broadcast_url": "memory://",
        # A prefix of its own per app, so no message from another test's app reaches it
        # through a shared Redis or PostgreSQL.
        "broadcast_channel_prefix": f"paystream-test-{uuid.uuid4().hex[:12]}.",
        "stripe_secret_key": None,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "jwt_secret": JWT_SECRET,
        "brand_name": "Test Shop",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def broadcast_url(database_url: str) -> str:
    """The broadcaster for a test: in memory beside SQLite, Redis beside PostgreSQL.

    Modules that test live delivery override this to run on every backend.
    """
    return "memory://" if database_url.startswith("sqlite") else REDIS_URL


@pytest.fixture
def settings(database_url: str, broadcast_url: str) -> Settings:
    return make_settings(database_url, broadcast_url=broadcast_url)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    async with running_app(settings) as started:
        yield started


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
        yield http


@contextlib.asynccontextmanager
async def uvicorn_server(app: Starlette) -> AsyncIterator[str]:
    """Serve an already started app with a real uvicorn on a free 127.0.0.1 port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="off", log_level="warning",
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 10
    while not server.started:
        if task.done() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def server_url(app: Starlette) -> AsyncIterator[str]:
    async with uvicorn_server(app) as url:
        yield url


# Tokens and GraphQL


def token_for(user_id: str, role: str = "user", expires_in: int = 3600) -> str:
    return mint_token(Settings(_env_file=None, jwt_secret=JWT_SECRET), user_id, role, expires_in)  # type: ignore[call-arg]


async def graphql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    user: str | None = "alice",
    role: str = "user",
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token_for(user, role)}"} if user else {}
    response = await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def error_code(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0].get("extensions", {}).get("code") if errors else None


# Stripe events


def load_event(name: str) -> dict[str, Any]:
    """A real Stripe event payload from the shared fixtures, by event type."""
    path = EVENTS_DIR / f"{name}.json"
    event: dict[str, Any] = json.loads(path.read_text())
    return copy.deepcopy(event)


def signed_headers(
    payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Stripe-Signature": f"t={stamp},v1={sign(payload, secret, stamp)}",
        "Content-Type": "application/json",
    }


async def post_event(
    client: httpx.AsyncClient, event: dict[str, Any], **signing: Any
) -> httpx.Response:
    payload = json.dumps(event).encode()
    return await client.post("/webhooks/stripe", content=payload, headers=signed_headers(payload, **signing))


# Rows


async def seed_payment(
    app: Starlette,
    *,
    user: str = "alice",
    price: str = "20.00",
    currency: str = "usd",
    amount: int = 2000,
    intent_id: str | None = "pi_00000000000000",
    status: str = "pending",
) -> tuple[int, int]:
    """Insert an order and its payment as `pay` leaves them; return their ids."""
    from decimal import Decimal

    from db.models import Order, Payment

    async with app.state.services.db.write() as session:
        order = Order(user_id=user, price=Decimal(price), currency=currency, status="pending")
        session.add(order)
        await session.flush()
        payment = Payment(
            order_id=order.id,
            user_id=user,
            amount=amount,
            currency=currency,
            status=status,
            stripe_payment_intent_id=intent_id,
        )
        session.add(payment)
        await session.flush()
        return order.id, payment.id


def stripe_event(name: str, event_id: str | None = None, **fields: Any) -> dict[str, Any]:
    """A real payload of type `name` with a new event id and some `data.object` fields replaced.

    The fixtures come from unrelated captures, so a test that needs one connected chain
    rewrites the ids and amounts that link the objects.
    """
    event = load_event(name)
    if event_id is not None:
        event["id"] = event_id
    event["data"]["object"].update(fields)
    return event


async def stored_events(app: Starlette) -> dict[str, Any]:
    """Every recorded Stripe event row, by event id."""
    from sqlalchemy import select

    from db.models import StripeEvent

    async with app.state.services.db.read() as session:
        rows = (await session.scalars(select(StripeEvent))).all()
    return {row.id: row for row in rows}
