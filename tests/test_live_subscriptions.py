"""Live lists over real WebSockets against a real uvicorn, in both subscription protocols."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.conftest import REDIS_URL, load_event, post_event, seed_payment, token_for
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, GraphQLWebSocket, bearer

@pytest.fixture(params=["default", "postgres-notify"])
def broadcast_url(request, database_url):
    """Every live test runs on the stack's default broadcaster and on PostgreSQL's NOTIFY."""
    if request.param == "default":
        return "memory://" if database_url.startswith("sqlite") else REDIS_URL
    return request.getfixturevalue("postgres_url").replace("+asyncpg", "")


PAYMENTS = """
subscription ($orderId: Int) {
  payments(orderId: $orderId) { id status amount order { status } }
}
"""


def succeeded_event(intent_id: str, amount: int = 2000):
    event = load_event("payment_intent.succeeded")
    event["data"]["object"]["id"] = intent_id
    event["data"]["object"]["amount"] = amount
    event["data"]["object"]["amount_received"] = amount
    return event


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_payments_list_follows_webhook(app, client, server_url, protocol):
    order_id, payment_id = await seed_payment(app, intent_id="pi_live_one")
    socket = GraphQLWebSocket(server_url, protocol)
    ack = await socket.connect(bearer(token_for("alice")))
    assert ack["type"] == "connection_ack"

    await socket.subscribe(PAYMENTS, {"orderId": order_id})
    first = await socket.next_data()
    assert first["payments"] == [
        {"id": payment_id, "status": "pending", "amount": 2000, "order": {"status": "pending"}}
    ]

    response = await post_event(client, succeeded_event("pi_live_one"))
    assert response.status_code == 200

    update = await socket.next_data()
    assert update["payments"] == [
        {"id": payment_id, "status": "succeeded", "amount": 2000, "order": {"status": "paid"}}
    ]
    await socket.close()


async def test_payments_list_hides_other_users(app, client, server_url):
    _, bob_payment = await seed_payment(app, user="bob", intent_id="pi_bob")
    _, alice_payment = await seed_payment(app, user="alice", intent_id="pi_alice")
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("alice")))
    await socket.subscribe(PAYMENTS)
    first = await socket.next_data()
    assert [row["id"] for row in first["payments"]] == [alice_payment]

    await post_event(client, succeeded_event("pi_bob"))
    await post_event(client, succeeded_event("pi_alice") | {"id": "evt_alice_paid"})

    update = await socket.next_data()
    assert [row["id"] for row in update["payments"]] == [alice_payment]
    assert update["payments"][0]["status"] == "succeeded"
    assert bob_payment != alice_payment
    await socket.close()


async def test_admin_list_sees_every_user(app, client, server_url):
    await seed_payment(app, user="bob", intent_id="pi_bob_admin")
    await seed_payment(app, user="carol", intent_id="pi_carol_admin")
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("root", "admin")))
    await socket.subscribe(PAYMENTS)
    first = await socket.next_data()
    assert len(first["payments"]) == 2
    await socket.close()


async def test_subscription_to_others_order_is_forbidden(app, server_url):
    order_id, _ = await seed_payment(app, user="bob", intent_id="pi_bob_forbidden")
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("alice")))
    await socket.subscribe(PAYMENTS, {"orderId": order_id})
    message = await socket.receive()
    assert message["type"] in ("next", "error")
    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    await socket.close()


async def test_bad_token_closes_with_4403(server_url):
    url = server_url.replace("http", "ws") + "/graphql"
    async with websockets.connect(url, subprotocols=[TRANSPORT_WS]) as raw:
        await raw.send('{"type":"connection_init","payload":{"Authorization":"Bearer nope"}}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), 5)
    assert closed.value.rcvd.code == 4403


async def test_subscribe_before_init_closes_with_4401(server_url):
    async with websockets.connect(
        server_url.replace("http", "ws") + "/graphql", subprotocols=[TRANSPORT_WS]
    ) as raw:
        await raw.send('{"id":"1","type":"subscribe","payload":{"query":"subscription { payments { id } }"}}')
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(raw.recv(), 5)
    assert closed.value.rcvd.code == 4401


async def test_expired_token_ends_subscription(app, server_url):
    await seed_payment(app, intent_id="pi_expiring")
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("alice", expires_in=2)))
    await socket.subscribe(PAYMENTS)
    await socket.next_data()
    message = await socket.receive(timeout=10)
    if message["type"] == "next":
        errors = message["payload"]["errors"]
    else:
        errors = message["payload"]
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    await socket.close()


async def test_same_shape_subscribers_share_results(app, client, server_url):
    _, payment_id = await seed_payment(app, intent_id="pi_shared")
    first, second = GraphQLWebSocket(server_url), GraphQLWebSocket(server_url)
    await first.connect(bearer(token_for("alice")))
    await second.connect(bearer(token_for("alice", expires_in=600)))
    await first.subscribe(PAYMENTS)
    await second.subscribe(PAYMENTS)
    assert (await first.next_data())["payments"][0]["status"] == "pending"
    assert (await second.next_data())["payments"][0]["status"] == "pending"
    assert len(app.state.graphql.schema.shared_streams) == 1

    await first.close()
    await post_event(client, succeeded_event("pi_shared"))

    update = await second.next_data()
    assert update["payments"] == [
        {"id": payment_id, "status": "succeeded", "amount": 2000, "order": {"status": "paid"}}
    ]
    await second.close()


async def test_expiry_ends_only_that_subscriber(app, client, server_url):
    await seed_payment(app, intent_id="pi_expiry_shared")
    short, long = GraphQLWebSocket(server_url), GraphQLWebSocket(server_url)
    await short.connect(bearer(token_for("alice", expires_in=2)))
    await long.connect(bearer(token_for("alice", expires_in=600)))
    await short.subscribe(PAYMENTS)
    await long.subscribe(PAYMENTS)
    await short.next_data()
    await long.next_data()

    ended = await short.receive(timeout=10)
    assert ended["payload"]["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    await post_event(client, succeeded_event("pi_expiry_shared"))
    update = await long.next_data()
    assert update["payments"][0]["status"] == "succeeded"
    await short.close()
    await long.close()


async def test_expired_socket_cannot_query(app, server_url):
    await seed_payment(app, intent_id="pi_expired_query")
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("root", "admin", expires_in=1)))
    await asyncio.sleep(2)

    await socket.subscribe("{ orders { id userId } }")
    message = await socket.receive()

    errors = message["payload"]["errors"] if message["type"] == "next" else message["payload"]
    assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"
    await socket.close()
