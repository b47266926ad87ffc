"""The whole flow on real parts: uvicorn on a free port, localstripe sending signed
webhooks to it, and a WebSocket client watching the live lists."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET, make_settings, token_for
from tests.ws_client import GraphQLWebSocket, bearer

CREATE_ORDER = """
mutation ($price: Decimal!) { createOrder(price: $price, currency: "usd") { id status } }
"""
PAY = """
mutation ($orderId: Int!, $amount: Int!, $method: String) {
  pay(orderId: $orderId, currency: "usd", amount: $amount, paymentMethodId: $method) {
    id status clientSecret stripePaymentIntentId failureCode failureMessage
  }
}
"""
REFUND = """
mutation ($paymentId: Int!, $amount: Int!) {
  refund(paymentId: $paymentId, refundAmount: $amount) { id status amount }
}
"""
PAYMENTS = "subscription ($orderId: Int) { payments(orderId: $orderId) { id status } }"
REFUNDS = """
subscription ($orderId: Int) {
  refunds(orderId: $orderId) { id status amount order { status } }
}
"""


@pytest.fixture
def settings(database_url, localstripe):
    return make_settings(
        database_url,
        stripe_secret_key=localstripe.secret_key,
        stripe_publishable_key=localstripe.publishable_key,
        stripe_api_base=localstripe.url,
    )


@pytest.fixture
async def http(server_url):
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture
def webhooks_to_server(localstripe, server_url):
    # A fresh name per test: localstripe keeps registrations until it stops.
    localstripe.register_webhook(
        f"paystream-{uuid.uuid4().hex[:8]}", f"{server_url}/webhooks/stripe", WEBHOOK_SECRET
    )


async def next_changed(socket, field, previous, timeout=15):
    """The next list that differs from `previous`."""
    while True:
        listed = (await socket.next_data(timeout))[field]
        if listed != previous:
            return listed


async def call(http, query, variables, user="alice", role="user"):
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token_for(user, role)}"},
    )
    body = response.json()
    assert "errors" not in body, body
    return body["data"]


async def test_pay_confirm_refund_live(http, server_url, localstripe, webhooks_to_server):
    order = (await call(http, CREATE_ORDER, {"price": "25.00"}))["createOrder"]
    payments = GraphQLWebSocket(server_url)
    await payments.connect(bearer(token_for("alice")))
    await payments.subscribe(PAYMENTS, {"orderId": order["id"]})
    assert (await payments.next_data())["payments"] == []

    payment = (await call(http, PAY, {"orderId": order["id"], "amount": 2500}))["pay"]
    assert payment["status"] == "pending"
    assert payment["clientSecret"]
    listed = (await payments.next_data())["payments"]
    assert listed == [{"id": payment["id"], "status": "pending"}]

    # The customer confirms on the page; only the webhook brings paystream the outcome.
    await asyncio.to_thread(
        localstripe.confirm_payment_intent_as_browser,
        payment["stripePaymentIntentId"],
        payment["clientSecret"],
    )
    # Reserving the payment and recording its intent are two commits, so the pending list
    # can arrive twice before the webhook's change.
    listed = await next_changed(payments, "payments", listed)
    assert listed == [{"id": payment["id"], "status": "succeeded"}]

    refunds = GraphQLWebSocket(server_url)
    await refunds.connect(bearer(token_for("ops", "admin")))
    await refunds.subscribe(REFUNDS, {"orderId": order["id"]})
    assert (await refunds.next_data())["refunds"] == []

    refund = (await call(http, REFUND, {"paymentId": payment["id"], "amount": 1000}, "ops", "admin"))
    assert refund["refund"]["status"] == "succeeded"
    seen = (await refunds.next_data())["refunds"]
    if seen[0]["status"] == "pending":
        seen = await next_changed(refunds, "refunds", seen)
    assert seen == [
        {
            "id": refund["refund"]["id"],
            "status": "succeeded",
            "amount": 1000,
            "order": {"status": "partially_refunded"},
        }
    ]
    await payments.close()
    await refunds.close()


async def test_pay_with_visa_succeeds(http):
    order = (await call(http, CREATE_ORDER, {"price": "12.34"}))["createOrder"]
    payment = (
        await call(http, PAY, {"orderId": order["id"], "amount": 1234, "method": "pm_card_visa"})
    )["pay"]
    assert payment["status"] == "succeeded"


async def test_pay_with_declining_card_fails(http):
    order = (await call(http, CREATE_ORDER, {"price": "12.34"}))["createOrder"]
    payment = (
        await call(
            http,
            PAY,
            {"orderId": order["id"], "amount": 1234, "method": "pm_card_chargeCustomerFail"},
        )
    )["pay"]
    assert payment["status"] == "failed"
    assert payment["failureCode"] == "card_declined"
    assert payment["failureMessage"]
