"""Two `paystream serve` processes on one PostgreSQL and one Redis behave as one."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import httpx
import pytest
import stripe
from redis import asyncio as aioredis

from db.engine import Database
from db.models import Order, Payment, StripeEvent
from tests.conftest import REDIS_URL, _truncate_postgres, load_event, signed_headers, token_for
from tests.processes import ServeProcess, serve_env
from tests.ws_client import GraphQLWebSocket, bearer

PAYMENTS = "subscription { payments { id status } }"
REFUND = """
mutation ($paymentId: Int!, $amount: Int!) {
  refund(paymentId: $paymentId, refundAmount: $amount) { id status amount }
}
"""


@pytest.fixture
async def cluster(postgres_url, localstripe, tmp_path):
    """Processes A and B sharing the database and the Redis broadcast."""
    await _truncate_postgres(postgres_url)
    prefix = f"paystream-mp-{uuid.uuid4().hex[:8]}."
    env = serve_env(
        postgres_url,
        REDIS_URL,
        prefix,
        STRIPE_SECRET_KEY=localstripe.secret_key,
        STRIPE_API_BASE=localstripe.url,
    )
    first = ServeProcess(env, tmp_path / "a.log")
    second = ServeProcess(env, tmp_path / "b.log")
    try:
        await asyncio.to_thread(first.wait_ready)
        await asyncio.to_thread(second.wait_ready)
        database = Database(postgres_url)
        yield first, second, database, prefix
        await database.dispose()
    finally:
        first.stop()
        second.stop()


async def seed(database, *, intent_id, amount=2000, status="pending", user="alice"):
    async with database.write() as session:
        order = Order(
            user_id=user,
            price=Decimal(amount) / 100,
            currency="usd",
            status="paid" if status == "succeeded" else "pending",
        )
        session.add(order)
        await session.flush()
        payment = Payment(
            order_id=order.id,
            user_id=user,
            amount=amount,
            currency="usd",
            status=status,
            stripe_payment_intent_id=intent_id,
        )
        session.add(payment)
        await session.flush()
        return payment.id


def succeeded(intent_id, event_id):
    event = load_event("payment_intent.succeeded")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent_id
    return json.dumps(event).encode()


async def post(url, payload):
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{url}/webhooks/stripe", content=payload, headers=signed_headers(payload)
        )


async def test_webhook_on_a_reaches_b(cluster):
    first, second, database, _ = cluster
    payment_id = await seed(database, intent_id="pi_mp_reach")
    socket = GraphQLWebSocket(second.url)
    await socket.connect(bearer(token_for("alice")))
    await socket.subscribe(PAYMENTS)
    assert (await socket.next_data())["payments"] == [{"id": payment_id, "status": "pending"}]

    response = await post(first.url, succeeded("pi_mp_reach", "evt_mp_reach"))

    assert response.status_code == 200
    update = await socket.next_data(timeout=10)
    assert update["payments"] == [{"id": payment_id, "status": "succeeded"}]
    await socket.close()


async def test_same_event_to_both_once(cluster):
    first, second, database, prefix = cluster
    payment_id = await seed(database, intent_id="pi_mp_once")
    redis = aioredis.Redis.from_url(REDIS_URL)
    pubsub = redis.pubsub()
    await pubsub.subscribe(prefix + "payments")

    payload = succeeded("pi_mp_once", "evt_mp_once")
    responses = await asyncio.gather(post(first.url, payload), post(second.url, payload))

    assert sorted(response.status_code for response in responses) == [200, 200]
    outcomes = sorted(response.json()["outcome"] for response in responses)
    assert outcomes == ["duplicate", "processed"]
    published = []
    deadline = asyncio.get_running_loop().time() + 2
    while asyncio.get_running_loop().time() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            published.append(json.loads(message["data"]))
    assert [message["row"]["id"] for message in published] == [payment_id]
    async with database.read() as session:
        assert await session.get(StripeEvent, ("evt_mp_once", "main")) is not None
    await pubsub.aclose()
    await redis.aclose()


async def test_refunds_race_across_processes(cluster, localstripe):
    first, second, database, _ = cluster
    http_client = stripe.HTTPXClient()
    client = stripe.StripeClient(
        localstripe.secret_key, base_addresses={"api": localstripe.url}, http_client=http_client
    )
    intent = await client.v1.payment_intents.create_async(
        params={"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    await http_client.close_async()
    payment_id = await seed(database, intent_id=intent.id, status="succeeded")

    async def refund(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            response = await http.post(
                "/graphql",
                json={"query": REFUND, "variables": {"paymentId": payment_id, "amount": 1200}},
                headers={"Authorization": f"Bearer {token_for('ops', 'admin')}"},
            )
            return response.json()

    bodies = await asyncio.gather(refund(first.url), refund(second.url))

    succeeded_refunds = [body for body in bodies if "errors" not in body]
    rejected = [body for body in bodies if "errors" in body]
    assert len(succeeded_refunds) == 1
    assert len(rejected) == 1
    assert rejected[0]["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    async with database.read() as session:
        payment = await session.get(Payment, payment_id)
    assert payment.amount_refunded == 1200


async def test_hundred_subscribers_at_once(cluster):
    first, second, database, _ = cluster
    payment_id = await seed(database, intent_id="pi_mp_crowd")
    sockets = [GraphQLWebSocket(second.url) for _ in range(100)]

    async def join(socket):
        await socket.connect(bearer(token_for("ops", "admin")))
        await socket.subscribe(PAYMENTS)
        return await socket.next_data(timeout=20)

    firsts = await asyncio.gather(*(join(socket) for socket in sockets))
    assert all(data["payments"] == [{"id": payment_id, "status": "pending"}] for data in firsts)

    response = await post(first.url, succeeded("pi_mp_crowd", "evt_mp_crowd"))
    assert response.status_code == 200

    updates = await asyncio.gather(*(socket.next_data(timeout=20) for socket in sockets))
    assert all(data["payments"] == [{"id": payment_id, "status": "succeeded"}] for data in updates)
    await asyncio.gather(*(socket.close() for socket in sockets))
