"""Who may read and change what: users alice and bob, an admin, and anonymous callers.

Over HTTP through the ASGI app, and over real WebSockets against a real uvicorn. Stripe is
configured with a dead address, so a rejected request is rejected by a permission check and
never by a missing Stripe key.
"""

from __future__ import annotations

from typing import Any

import pytest
import websockets
from starlette.applications import Starlette

from paystream.settings import Settings
from tests.conftest import (
    error_code,
    graphql,
    load_event,
    make_settings,
    post_event,
    seed_payment,
    token_for,
)
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, GraphQLWebSocket, bearer

ADMIN = {"user": "root", "role": "admin"}

ORDER = "query($id: Int!) { order(id: $id) { id userId } }"
PAYMENT = "query($id: Int!) { payment(id: $id) { id userId order { id userId } } }"
REFUND = "query($id: Int!) { refund(id: $id) { id userId paymentId } }"
ORDERS = "query { orders { id userId } }"
PAYMENTS = "query($orderId: Int) { payments(orderId: $orderId) { id userId } }"
REFUNDS = "query($paymentId: Int) { refunds(paymentId: $paymentId) { id userId } }"
CONFIG = "query { paymentConfig { brandName publishableKey } }"
CREATE_ORDER = """
mutation($price: Decimal!, $currency: String!, $userId: String) {
  createOrder(price: $price, currency: $currency, userId: $userId) { id userId status }
}
"""
PAY = """
mutation($orderId: Int!, $amount: Int!) {
  pay(orderId: $orderId, currency: "usd", amount: $amount) { id status }
}
"""
REFUND_PAYMENT = """
mutation($paymentId: Int!, $refundAmount: Int!) {
  refund(paymentId: $paymentId, refundAmount: $refundAmount) { id status }
}
"""
LIVE_PAYMENTS = "subscription { payments { id userId status } }"
LIVE_REFUNDS = "subscription { refunds { id userId amount } }"


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Nothing listens on port 9: a call that got past the permission checks would fail with
    # STRIPE_UNAVAILABLE, not with the code a test expects.
    return make_settings(
        database_url,
        stripe_secret_key="sk_test_dummy",
        stripe_api_base="http://127.0.0.1:9",
        stripe_publishable_key="pk_test_dummy",
    )


async def insert_refund(
    app: Starlette, payment_id: int, *, user: str, amount: int = 500, status: str = "pending"
) -> int:
    from db.models import Payment, Refund

    async with app.state.services.db.write() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        refund = Refund(
            payment_id=payment_id,
            order_id=payment.order_id,
            user_id=user,
            amount=amount,
            currency=payment.currency,
            status=status,
        )
        session.add(refund)
        await session.flush()
        return refund.id


async def seed_rows(app: Starlette) -> dict[str, dict[str, int]]:
    """A succeeded payment with one refund for each of alice and bob, by user."""
    rows: dict[str, dict[str, int]] = {}
    for user in ("alice", "bob"):
        order_id, payment_id = await seed_payment(
            app, user=user, intent_id=f"pi_{user}_seeded", status="succeeded"
        )
        refund_id = await insert_refund(app, payment_id, user=user)
        rows[user] = {"order": order_id, "payment": payment_id, "refund": refund_id}
    return rows


async def table_counts(app: Starlette) -> dict[str, int]:
    from sqlalchemy import func, select

    from db.models import Order, Payment, Refund

    async with app.state.services.db.read() as session:
        counts: dict[str, int] = {}
        for model in (Order, Payment, Refund):
            count = await session.scalar(select(func.count()).select_from(model))
            counts[model.__tablename__] = int(count or 0)
        return counts


def message(body: dict[str, Any]) -> str:
    return str(body["errors"][0]["message"])


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


# Reading another user's rows


@pytest.mark.parametrize(
    ("query", "kind"), [(ORDER, "order"), (PAYMENT, "payment"), (REFUND, "refund")]
)
async def test_read_others_row_forbidden(app, client, query, kind):
    rows = await seed_rows(app)
    bob_id = rows["bob"][kind]

    body = await graphql(client, query, {"id": bob_id}, user="alice")

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert message(body) == f"{kind} {bob_id} belongs to another user."


@pytest.mark.parametrize(
    ("query", "kind", "field"),
    [(ORDER, "order", "order"), (PAYMENT, "payment", "payment"), (REFUND, "refund", "refund")],
)
async def test_read_own_row_allowed(app, client, query, kind, field):
    rows = await seed_rows(app)

    body = await graphql(client, query, {"id": rows["alice"][kind]}, user="alice")

    assert "errors" not in body
    assert body["data"][field]["id"] == rows["alice"][kind]
    assert body["data"][field]["userId"] == "alice"


@pytest.mark.parametrize(
    ("query", "kind", "field"),
    [(ORDER, "order", "order"), (PAYMENT, "payment", "payment"), (REFUND, "refund", "refund")],
)
async def test_admin_reads_others_row(app, client, query, kind, field):
    rows = await seed_rows(app)

    body = await graphql(client, query, {"id": rows["bob"][kind]}, **ADMIN)

    assert "errors" not in body
    assert body["data"][field]["userId"] == "bob"


async def test_read_missing_row_not_found(client):
    body = await graphql(client, ORDER, {"id": 999}, user="alice")

    assert error_code(body) == "NOT_FOUND"
    assert message(body) == "order 999 does not exist."


# Lists


async def test_orders_list_only_own(app, client):
    rows = await seed_rows(app)

    alice = await graphql(client, ORDERS, user="alice")
    bob = await graphql(client, ORDERS, user="bob")

    assert ids(alice["data"]["orders"]) == [rows["alice"]["order"]]
    assert ids(bob["data"]["orders"]) == [rows["bob"]["order"]]


async def test_payments_list_only_own(app, client):
    rows = await seed_rows(app)

    alice = await graphql(client, PAYMENTS, user="alice")
    bob = await graphql(client, PAYMENTS, user="bob")

    assert ids(alice["data"]["payments"]) == [rows["alice"]["payment"]]
    assert ids(bob["data"]["payments"]) == [rows["bob"]["payment"]]


async def test_refunds_list_only_own(app, client):
    rows = await seed_rows(app)

    alice = await graphql(client, REFUNDS, user="alice")
    bob = await graphql(client, REFUNDS, user="bob")

    assert ids(alice["data"]["refunds"]) == [rows["alice"]["refund"]]
    assert ids(bob["data"]["refunds"]) == [rows["bob"]["refund"]]


async def test_list_filter_on_others_row_empty(app, client):
    rows = await seed_rows(app)

    payments = await graphql(client, PAYMENTS, {"orderId": rows["bob"]["order"]}, user="alice")
    refunds = await graphql(client, REFUNDS, {"paymentId": rows["bob"]["payment"]}, user="alice")

    assert payments["data"]["payments"] == []
    assert refunds["data"]["refunds"] == []


async def test_admin_lists_every_user(app, client):
    rows = await seed_rows(app)

    orders = await graphql(client, ORDERS, **ADMIN)
    payments = await graphql(client, PAYMENTS, **ADMIN)
    refunds = await graphql(client, REFUNDS, **ADMIN)

    assert ids(orders["data"]["orders"]) == [rows["alice"]["order"], rows["bob"]["order"]]
    assert ids(payments["data"]["payments"]) == [rows["alice"]["payment"], rows["bob"]["payment"]]
    assert ids(refunds["data"]["refunds"]) == [rows["alice"]["refund"], rows["bob"]["refund"]]


# Changing another user's rows


async def test_pay_others_order_forbidden(app, client):
    created = await graphql(client, CREATE_ORDER, {"price": "20.00", "currency": "usd"}, user="bob")
    order_id = created["data"]["createOrder"]["id"]

    body = await graphql(client, PAY, {"orderId": order_id, "amount": 2000}, user="alice")

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert message(body) == f"order {order_id} belongs to another user."
    assert (await table_counts(app))["payments"] == 0


async def test_pay_others_order_leaves_order(app, client):
    created = await graphql(client, CREATE_ORDER, {"price": "20.00", "currency": "usd"}, user="bob")
    order_id = created["data"]["createOrder"]["id"]

    await graphql(client, PAY, {"orderId": order_id, "amount": 2000}, user="alice")
    order = await graphql(client, ORDER, {"id": order_id}, user="bob")

    assert order["data"]["order"] == {"id": order_id, "userId": "bob"}
    assert (await graphql(client, PAYMENTS, {"orderId": order_id}, **ADMIN))["data"] == {
        "payments": []
    }


async def test_refund_as_owner_forbidden(app, client):
    rows = await seed_rows(app)
    before = await table_counts(app)

    body = await graphql(
        client, REFUND_PAYMENT, {"paymentId": rows["alice"]["payment"], "refundAmount": 100},
        user="alice",
    )

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert message(body) == "Only an admin may refund a payment."
    assert await table_counts(app) == before


async def test_refund_as_other_user_forbidden(app, client):
    rows = await seed_rows(app)
    before = await table_counts(app)

    body = await graphql(
        client, REFUND_PAYMENT, {"paymentId": rows["bob"]["payment"], "refundAmount": 100},
        user="alice",
    )

    assert error_code(body) == "FORBIDDEN"
    assert await table_counts(app) == before


async def test_create_order_for_caller(client):
    body = await graphql(client, CREATE_ORDER, {"price": "5.00", "currency": "usd"}, user="alice")

    assert "errors" not in body
    assert body["data"]["createOrder"]["userId"] == "alice"
    assert body["data"]["createOrder"]["status"] == "pending"


async def test_admin_creates_order_for_bob(client):
    variables = {"price": "5.00", "currency": "usd", "userId": "bob"}

    body = await graphql(client, CREATE_ORDER, variables, **ADMIN)
    bob = await graphql(client, ORDERS, user="bob")

    assert "errors" not in body
    assert body["data"]["createOrder"]["userId"] == "bob"
    assert ids(bob["data"]["orders"]) == [body["data"]["createOrder"]["id"]]


async def test_create_order_for_other_forbidden(app, client):
    variables = {"price": "5.00", "currency": "usd", "userId": "bob"}

    body = await graphql(client, CREATE_ORDER, variables, user="alice")

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert message(body) == "Only an admin may create an order for another user."
    assert (await table_counts(app))["orders"] == 0


# Anonymous callers


async def test_anonymous_reads_payment_config(client):
    body = await graphql(client, CONFIG, user=None)

    assert "errors" not in body
    assert body["data"]["paymentConfig"] == {
        "brandName": "Test Shop",
        "publishableKey": "pk_test_dummy",
    }


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (ORDER, {"id": 1}),
        (PAYMENT, {"id": 1}),
        (REFUND, {"id": 1}),
        (ORDERS, {}),
        (PAYMENTS, {}),
        (REFUNDS, {}),
        (CREATE_ORDER, {"price": "5.00", "currency": "usd"}),
        (CREATE_ORDER, {"price": "5.00", "currency": "usd", "userId": "alice"}),
        (PAY, {"orderId": 1, "amount": 2000}),
        (REFUND_PAYMENT, {"paymentId": 1, "refundAmount": 100}),
    ],
)
async def test_anonymous_unauthenticated(app, client, query, variables):
    await seed_rows(app)
    before = await table_counts(app)

    body = await graphql(client, query, variables, user=None)

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"
    assert message(body) == "This operation needs a bearer token."
    assert await table_counts(app) == before


async def test_anonymous_mixed_query_unauthenticated(client):
    body = await graphql(client, "query { paymentConfig { brandName } orders { id } }", user=None)

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"


# WebSockets


def succeeded_event(intent_id: str, event_id: str) -> dict[str, Any]:
    event = load_event("payment_intent.succeeded")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent_id
    event["data"]["object"]["amount"] = 2000
    event["data"]["object"]["amount_received"] = 2000
    return event


async def test_legacy_bad_token_connection_error(server_url):
    socket = GraphQLWebSocket(server_url, LEGACY_WS)

    reply = await socket.connect(bearer("not-a-token"))

    assert reply == {
        "type": "connection_error",
        "payload": {"message": "The bearer token is invalid: Not enough segments."},
    }
    await socket.close()


async def test_legacy_expired_token_connection_error(server_url):
    socket = GraphQLWebSocket(server_url, LEGACY_WS)

    reply = await socket.connect({"token": token_for("alice", expires_in=-60)})

    assert reply == {
        "type": "connection_error",
        "payload": {"message": "The bearer token has expired."},
    }
    await socket.close()


async def test_transport_bad_token_field_closes_4403(server_url):
    socket = GraphQLWebSocket(server_url, TRANSPORT_WS)

    with pytest.raises(websockets.ConnectionClosed) as closed:
        await socket.connect({"token": "not-a-token"})

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403


async def test_legacy_start_before_init_closes_4401(server_url):
    socket = GraphQLWebSocket(server_url, LEGACY_WS)
    socket.socket = await websockets.connect(socket.url, subprotocols=[LEGACY_WS])

    await socket.subscribe(LIVE_PAYMENTS)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await socket.receive()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_token_payload_field_accepted(app, server_url, protocol):
    rows = await seed_rows(app)
    socket = GraphQLWebSocket(server_url, protocol)

    ack = await socket.connect({"token": token_for("alice")})
    await socket.subscribe(LIVE_PAYMENTS)
    first = await socket.next_data()

    assert ack["type"] == "connection_ack"
    assert first["payments"] == [
        {"id": rows["alice"]["payment"], "userId": "alice", "status": "succeeded"}
    ]
    await socket.close()


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_anonymous_subscription_unauthenticated(server_url, protocol):
    socket = GraphQLWebSocket(server_url, protocol)

    ack = await socket.connect()
    await socket.subscribe(LIVE_PAYMENTS)
    reply = await socket.receive()

    assert ack["type"] == "connection_ack"
    errors = reply["payload"]["errors"] if reply["type"] in ("next", "data") else reply["payload"]
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    await socket.close()


async def test_live_payments_not_leaked(app, client, server_url):
    """Alice and bob run the same subscription, and each receives only their own change."""
    _, alice_payment = await seed_payment(app, user="alice", intent_id="pi_alice_live")
    _, bob_payment = await seed_payment(app, user="bob", intent_id="pi_bob_live")
    alice, bob = GraphQLWebSocket(server_url), GraphQLWebSocket(server_url)
    await alice.connect(bearer(token_for("alice")))
    await bob.connect(bearer(token_for("bob")))
    await alice.subscribe(LIVE_PAYMENTS)
    await bob.subscribe(LIVE_PAYMENTS)
    alice_first = await alice.next_data()
    bob_first = await bob.next_data()

    bob_paid = await post_event(client, succeeded_event("pi_bob_live", "evt_bob_live"))
    bob_update = await bob.next_data()
    alice_paid = await post_event(client, succeeded_event("pi_alice_live", "evt_alice_live"))
    alice_update = await alice.next_data()

    assert alice_first["payments"] == [
        {"id": alice_payment, "userId": "alice", "status": "pending"}
    ]
    assert bob_first["payments"] == [{"id": bob_payment, "userId": "bob", "status": "pending"}]
    assert bob_paid.status_code == 200
    assert alice_paid.status_code == 200
    assert bob_update["payments"] == [{"id": bob_payment, "userId": "bob", "status": "succeeded"}]
    # Bob's change sent alice no message, so her next message is the change to her payment.
    assert alice_update["payments"] == [
        {"id": alice_payment, "userId": "alice", "status": "succeeded"}
    ]
    await alice.close()
    await bob.close()


async def test_live_refunds_not_leaked(app, server_url):
    _, alice_payment = await seed_payment(app, user="alice", intent_id="pi_alice_refunds")
    _, bob_payment = await seed_payment(app, user="bob", intent_id="pi_bob_refunds")
    alice = GraphQLWebSocket(server_url, LEGACY_WS)
    await alice.connect({"token": token_for("alice")})
    await alice.subscribe(LIVE_REFUNDS)
    first = await alice.next_data()

    await insert_refund(app, bob_payment, user="bob", amount=700)
    alice_refund = await insert_refund(app, alice_payment, user="alice", amount=300)
    update = await alice.next_data()

    assert first["refunds"] == []
    assert update["refunds"] == [{"id": alice_refund, "userId": "alice", "amount": 300}]
    await alice.close()


async def test_live_admin_sees_every_change(app, server_url):
    _, alice_payment = await seed_payment(app, user="alice", intent_id="pi_alice_admin")
    _, bob_payment = await seed_payment(app, user="bob", intent_id="pi_bob_admin")
    admin = GraphQLWebSocket(server_url)
    await admin.connect(bearer(token_for("root", "admin")))
    await admin.subscribe(LIVE_REFUNDS)
    first = await admin.next_data()

    bob_refund = await insert_refund(app, bob_payment, user="bob", amount=700)
    after_bob = await admin.next_data()
    alice_refund = await insert_refund(app, alice_payment, user="alice", amount=300)
    after_alice = await admin.next_data()

    assert first["refunds"] == []
    assert ids(after_bob["refunds"]) == [bob_refund]
    assert ids(after_alice["refunds"]) == [bob_refund, alice_refund]
    await admin.close()
