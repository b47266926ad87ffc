"""Subscriptions end to end: a recurring price at localstripe, subscribe with a test card,
and watch the recurring payment over a real WebSocket as Stripe's webhooks arrive."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
import stripe

from tests.conftest import WEBHOOK_SECRET, make_settings, stored_events, token_for
from tests.ws_client import GraphQLWebSocket, bearer

CREATE_ORDER = """
mutation ($price: Decimal!) { createOrder(price: $price, currency: "usd") { id status } }
"""
SUBSCRIBE = """
mutation ($orderId: Int!, $priceId: String!) {
  subscribe(orderId: $orderId, priceId: $priceId, paymentMethodId: "pm_card_visa") {
    id status stripeSubscriptionId cancelAtPeriodEnd order { status }
  }
}
"""
CANCEL = """
mutation ($id: Int!, $atPeriodEnd: Boolean!) {
  cancelSubscription(recurringPaymentId: $id, atPeriodEnd: $atPeriodEnd) {
    id status cancelAtPeriodEnd canceledAt
  }
}
"""
LIVE = """
subscription ($orderId: Int) {
  recurringPayments(orderId: $orderId) { id status cancelAtPeriodEnd }
}
"""


@pytest.fixture
def settings(database_url, localstripe):
    return make_settings(
        database_url,
        stripe_secret_key=localstripe.secret_key,
        stripe_api_base=localstripe.url,
    )


@pytest.fixture
async def http(server_url, localstripe):
    localstripe.register_webhook(
        f"recurring-{uuid.uuid4().hex[:8]}", f"{server_url}/webhooks/stripe", WEBHOOK_SECRET
    )
    async with httpx.AsyncClient(base_url=server_url, timeout=30) as client:
        yield client


@pytest.fixture
async def monthly_price(localstripe):
    http_client = stripe.HTTPXClient()
    client = stripe.StripeClient(
        localstripe.secret_key, base_addresses={"api": localstripe.url}, http_client=http_client
    )
    product = await client.v1.products.create_async(params={"name": "Pro"})
    price = await client.v1.prices.create_async(
        params={
            "product": product.id,
            "unit_amount": 1500,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    await http_client.close_async()
    return price.id


async def call(http, query, variables, user="alice"):
    response = await http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers={"Authorization": f"Bearer {token_for(user)}"},
    )
    return response.json()


async def next_changed(socket, previous, timeout=15):
    while True:
        listed = (await socket.next_data(timeout))["recurringPayments"]
        if listed != previous:
            return listed


async def wait_for_event(app, event_type, subscription_id, timeout=10):
    """The stored event of `event_type` for this subscription, once its webhook arrived.

    The emulator is shared by the whole run, so events of other tests' subscriptions can
    reach this app too.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for row in (await stored_events(app)).values():
            about = json.loads(row.payload)["data"]["object"].get("id")
            if row.type == event_type and about == subscription_id:
                return row
        await asyncio.sleep(0.2)
    return None


async def test_subscribe_then_cancel_live(app, http, server_url, monthly_price):
    order = (await call(http, CREATE_ORDER, {"price": "15.00"}))["data"]["createOrder"]
    socket = GraphQLWebSocket(server_url)
    await socket.connect(bearer(token_for("alice")))
    await socket.subscribe(LIVE, {"orderId": order["id"]})
    listed = (await socket.next_data())["recurringPayments"]
    assert listed == []

    body = await call(http, SUBSCRIBE, {"orderId": order["id"], "priceId": monthly_price})
    started = body["data"]["subscribe"]
    assert started["status"] == "active"
    assert started["stripeSubscriptionId"].startswith("sub_")
    assert started["order"] == {"status": "paid"}

    listed = await next_changed(socket, listed)
    while listed[0]["status"] != "active":
        listed = await next_changed(socket, listed)
    assert listed == [{"id": started["id"], "status": "active", "cancelAtPeriodEnd": False}]
    created = await wait_for_event(app, "customer.subscription.created", started["stripeSubscriptionId"])
    assert created is not None
    assert created.outcome == "processed"

    later = await call(http, CANCEL, {"id": started["id"], "atPeriodEnd": True})
    assert later["data"]["cancelSubscription"]["status"] == "active"
    assert later["data"]["cancelSubscription"]["cancelAtPeriodEnd"] is True
    listed = await next_changed(socket, listed)
    assert listed == [{"id": started["id"], "status": "active", "cancelAtPeriodEnd": True}]

    now = await call(http, CANCEL, {"id": started["id"], "atPeriodEnd": False})
    assert now["data"]["cancelSubscription"]["status"] == "canceled"
    assert now["data"]["cancelSubscription"]["canceledAt"] is not None
    listed = await next_changed(socket, listed)
    assert listed[0]["status"] == "canceled"
    deleted = await wait_for_event(app, "customer.subscription.deleted", started["stripeSubscriptionId"])
    assert deleted is not None
    assert deleted.outcome == "processed"

    again = await call(http, CANCEL, {"id": started["id"], "atPeriodEnd": False})
    assert again["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert again["errors"][0]["message"] == f"recurring payment {started['id']} is already canceled."
    await socket.close()


async def test_subscribe_price_mismatch_rejected(http, monthly_price):
    order = (await call(http, CREATE_ORDER, {"price": "20.00"}))["data"]["createOrder"]
    body = await call(http, SUBSCRIBE, {"orderId": order["id"], "priceId": monthly_price})
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"] == (
        f"price {monthly_price} charges 1500 USD but order {order['id']}'s price is 2000 USD "
        "in minor units."
    )


async def test_pay_after_subscribe_is_rejected(http, monthly_price):
    order = (await call(http, CREATE_ORDER, {"price": "15.00"}))["data"]["createOrder"]
    # A declined first invoice leaves the subscription incomplete and the order unpaid, with
    # an invoice the customer can still pay.
    declined = SUBSCRIBE.replace("pm_card_visa", "pm_card_chargeCustomerFail")
    started = await call(http, declined, {"orderId": order["id"], "priceId": monthly_price})
    assert started["data"]["subscribe"]["status"] == "incomplete"
    recurring_id = started["data"]["subscribe"]["id"]

    body = await call(
        http,
        """mutation ($orderId: Int!) {
          pay(orderId: $orderId, currency: "usd", amount: 1500, paymentMethodId: "pm_card_visa") {
            id status } }""",
        {"orderId": order["id"]},
    )

    assert body["errors"][0]["extensions"]["code"] == "CONFLICT"
    assert f"recurring payment {recurring_id}" in body["errors"][0]["message"]
