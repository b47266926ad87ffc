"""The pay mutation over GraphQL against the localstripe emulator, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import httpx
import pytest

from db.models import Order
from paystream.settings import Settings
from tests.conftest import error_code, graphql, make_settings, token_for
from tests.emulator.harness import LocalStripe
from tests.payment_helpers import (
    DECLINING_CARD,
    PAY,
    PAYMENTS,
    VISA,
    app_client,
    count_payment_intents,
    create_order,
    emulator_settings,
    error_message,
    list_rows,
    pay,
    read_stripe_object,
    recording_proxy,
)


@pytest.fixture
def settings(database_url: str, localstripe: LocalStripe) -> Settings:
    return emulator_settings(database_url, localstripe)


# Without a payment method: the client confirms with Stripe.js


async def test_pay_without_method_is_pending(client):
    order = await create_order(client, "19.99", "usd")

    body = await pay(client, order["id"], 1999)

    assert "errors" not in body
    payment = body["data"]["pay"]
    assert payment["status"] == "pending"
    assert payment["orderId"] == order["id"]
    assert payment["amount"] == 1999
    assert payment["currency"] == "usd"
    assert payment["stripePaymentIntentId"].startswith("pi_")
    assert payment["clientSecret"].startswith(payment["stripePaymentIntentId"] + "_secret_")
    assert payment["order"] == {"status": "pending"}


async def test_pay_intent_carries_metadata(client, localstripe):
    order = await create_order(client, "19.99", "usd")

    payment = (await pay(client, order["id"], 1999))["data"]["pay"]
    intent = await read_stripe_object(
        localstripe, f"/v1/payment_intents/{payment['stripePaymentIntentId']}"
    )

    assert intent["metadata"] == {"orderId": str(order["id"]), "paymentId": str(payment["id"])}
    assert intent["amount"] == 1999
    assert intent["currency"] == "usd"
    assert intent["client_secret"] == payment["clientSecret"]
    assert intent["status"] == "requires_payment_method"


# With a payment method: confirmed at once


async def test_pay_with_card_succeeds(client, localstripe):
    order = await create_order(client, "19.99", "usd")

    body = await pay(client, order["id"], 1999, payment_method_id=VISA)

    assert "errors" not in body
    payment = body["data"]["pay"]
    assert payment["status"] == "succeeded"
    assert payment["failureCode"] is None
    assert payment["order"] == {"status": "paid"}
    intent = await read_stripe_object(
        localstripe, f"/v1/payment_intents/{payment['stripePaymentIntentId']}"
    )
    assert intent["status"] == "succeeded"


async def test_pay_decline_is_failed_payment(client):
    order = await create_order(client, "15.00", "usd")

    body = await pay(client, order["id"], 1500, payment_method_id=DECLINING_CARD)

    assert "errors" not in body
    payment = body["data"]["pay"]
    assert payment["status"] == "failed"
    assert payment["failureCode"] == "card_declined"
    assert payment["failureMessage"] == "Your card was declined."
    assert payment["order"] == {"status": "pending"}


async def test_pay_raw_declining_card_is_failed(client, localstripe):
    card = await create_card_payment_method(localstripe, "4000000000000341")
    order = await create_order(client, "15.00", "usd")

    body = await pay(client, order["id"], 1500, payment_method_id=card)

    assert "errors" not in body
    assert body["data"]["pay"]["status"] == "failed"
    assert body["data"]["pay"]["failureCode"] == "card_declined"


async def test_pay_retry_after_decline_reuses_intent(client):
    order = await create_order(client, "15.00", "usd")
    declined = (await pay(client, order["id"], 1500, payment_method_id=DECLINING_CARD))["data"]

    body = await pay(client, order["id"], 1500, payment_method_id=VISA)

    assert "errors" not in body
    retried = body["data"]["pay"]
    assert retried["id"] == declined["pay"]["id"]
    assert retried["stripePaymentIntentId"] == declined["pay"]["stripePaymentIntentId"]
    assert retried["status"] == "succeeded"
    assert retried["order"] == {"status": "paid"}
    assert len(await list_rows(client, PAYMENTS)) == 1


async def test_pay_retry_without_method_returns_failed(client):
    order = await create_order(client, "15.00", "usd")
    declined = (await pay(client, order["id"], 1500, payment_method_id=DECLINING_CARD))["data"]

    body = await pay(client, order["id"], 1500)

    assert "errors" not in body
    assert body["data"]["pay"]["id"] == declined["pay"]["id"]
    assert body["data"]["pay"]["status"] == "failed"
    assert body["data"]["pay"]["clientSecret"] == declined["pay"]["clientSecret"]


async def test_pay_empty_method_rejected(client):
    order = await create_order(client, "15.00", "usd")

    body = await pay(client, order["id"], 1500, payment_method_id="  ")

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == "paymentMethodId must not be empty when given."
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_unknown_method_rejected(client):
    order = await create_order(client, "15.00", "usd")

    body = await pay(client, order["id"], 1500, payment_method_id="pm_does_not_exist")

    assert error_code(body) == "STRIPE_REJECTED"
    # The text after the colon is localstripe's message, where Stripe names the missing method.
    assert error_message(body) == (
        "Stripe rejected the request to create a payment intent: Not Found"
    )
    payments = await list_rows(client, PAYMENTS)
    assert [payment["status"] for payment in payments] == ["canceled"]


async def test_pay_after_rejected_method_succeeds(client):
    order = await create_order(client, "15.00", "usd")
    await pay(client, order["id"], 1500, payment_method_id="pm_does_not_exist")

    body = await pay(client, order["id"], 1500, payment_method_id=VISA)

    assert "errors" not in body
    assert body["data"]["pay"]["status"] == "succeeded"


# Money rules


async def test_pay_wrong_currency_rejected(client):
    order = await create_order(client, "19.99", "usd")

    body = await pay(client, order["id"], 1999, currency="EUR")

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"currency EUR does not match order {order['id']}'s currency USD."
    )
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_amount_in_major_units_rejected(client):
    order = await create_order(client, "19.99", "usd")

    body = await pay(client, order["id"], 19)

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"amount 19 does not match order {order['id']}'s price 19.99 USD, which is 1999 in "
        "minor units."
    )
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_fractional_amount_fails_validation(client):
    order = await create_order(client, "19.99", "usd")
    variables = {"orderId": order["id"], "currency": "usd", "amount": 19.99}

    response = await client.post(
        "/graphql",
        json={"query": PAY, "variables": variables},
        headers={"Authorization": f"Bearer {token_for('alice')}"},
    )

    body = response.json()
    assert response.status_code == 200
    assert body["data"] is None
    assert "Int cannot represent non-integer value: 19.99" in error_message(body)
    assert error_code(body) == "BAD_USER_INPUT"
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_zero_decimal_yen(client):
    order = await create_order(client, "500", "jpy")

    body = await pay(client, order["id"], 500, currency="JPY", payment_method_id=VISA)

    assert "errors" not in body
    assert body["data"]["pay"]["amount"] == 500
    assert body["data"]["pay"]["currency"] == "jpy"
    assert body["data"]["pay"]["status"] == "succeeded"


async def test_pay_yen_times_hundred_rejected(client):
    order = await create_order(client, "500", "jpy")

    body = await pay(client, order["id"], 50000, currency="jpy")

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"amount 50000 does not match order {order['id']}'s price 500 JPY, which is 500 in "
        "minor units."
    )
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_three_decimal_kwd(client, localstripe):
    order = await create_order(client, "5.120", "kwd")

    body = await pay(client, order["id"], 5120, currency="kwd")

    assert "errors" not in body
    payment = body["data"]["pay"]
    assert payment["amount"] == 5120
    intent = await read_stripe_object(
        localstripe, f"/v1/payment_intents/{payment['stripePaymentIntentId']}"
    )
    assert intent["amount"] == 5120
    assert intent["currency"] == "kwd"


async def test_pay_kwd_two_decimal_amount_rejected(client):
    order = await create_order(client, "5.120", "kwd")

    body = await pay(client, order["id"], 512, currency="kwd")

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"amount 512 does not match order {order['id']}'s price 5.120 KWD, which is 5120 in "
        "minor units."
    )


async def test_pay_whole_krona(client):
    order = await create_order(client, "150", "isk")

    body = await pay(client, order["id"], 15000, currency="isk")

    assert "errors" not in body
    assert body["data"]["pay"]["amount"] == 15000


async def test_pay_fractional_krona_rejected(app, client):
    # createOrder already rejects such a price, so the order comes straight from the database,
    # as one created before the whole-króna rule would be.
    order_id = await insert_order(app, "150.50", "isk")

    body = await pay(client, order_id, 15050, currency="isk")

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 15050 (150.50 ISK) is not a multiple of 100, which Stripe requires for ISK charges."
    )
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_below_minimum_rejected(app, client):
    order_id = await insert_order(app, "0.30", "usd")

    body = await pay(client, order_id, 30)

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 30 (0.30 USD) is below Stripe's minimum charge of 50 (0.50 USD)."
    )
    assert await list_rows(client, PAYMENTS) == []


# Order state


async def test_pay_paid_order_conflict(client):
    order = await create_order(client, "19.99", "usd")
    await pay(client, order["id"], 1999, payment_method_id=VISA)

    body = await pay(client, order["id"], 1999, payment_method_id=VISA)

    assert body["data"] is None
    assert error_code(body) == "CONFLICT"
    assert error_message(body) == f"order {order['id']} is paid and cannot be paid again."
    assert len(await list_rows(client, PAYMENTS)) == 1


async def test_pay_in_flight_conflict(client):
    order = await create_order(client, "19.99", "usd")
    first = (await pay(client, order["id"], 1999))["data"]["pay"]

    body = await pay(client, order["id"], 1999)

    assert error_code(body) == "CONFLICT"
    assert error_message(body) == (
        f"order {order['id']} already has payment {first['id']} in flight (pending)."
    )
    assert len(await list_rows(client, PAYMENTS)) == 1


async def test_pay_unknown_order_not_found(client):
    body = await pay(client, 999, 1999)

    assert error_code(body) == "NOT_FOUND"
    assert error_message(body) == "order 999 does not exist."


async def test_pay_other_users_order_forbidden(client):
    order = await create_order(client, "19.99", "usd", user="bob")

    body = await pay(client, order["id"], 1999, user="alice")

    assert error_code(body) == "FORBIDDEN"
    assert error_message(body) == f"order {order['id']} belongs to another user."
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_anonymous_unauthenticated(client):
    order = await create_order(client, "19.99", "usd")

    body = await graphql(
        client, PAY, {"orderId": order["id"], "currency": "usd", "amount": 1999}, user=None
    )

    assert error_code(body) == "UNAUTHENTICATED"
    assert await list_rows(client, PAYMENTS) == []


async def test_pay_concurrent_twice_one_payment(client, localstripe):
    order = await create_order(client, "19.99", "usd")
    intents_before = await count_payment_intents(localstripe)

    bodies = await asyncio.gather(pay(client, order["id"], 1999), pay(client, order["id"], 1999))

    codes = [error_code(body) for body in bodies]
    assert codes.count(None) == 1
    assert codes.count("CONFLICT") == 1
    payments = await list_rows(client, PAYMENTS)
    assert len(payments) == 1
    assert payments[0]["status"] == "pending"
    assert await count_payment_intents(localstripe) == intents_before + 1


# Configuration and idempotency


async def test_pay_stripe_not_configured(database_url, localstripe):
    intents_before = await count_payment_intents(localstripe)

    async with app_client(make_settings(database_url)) as client:
        order = await create_order(client, "19.99", "usd")
        body = await pay(client, order["id"], 1999, payment_method_id=VISA)
        payments = await list_rows(client, PAYMENTS)

    assert body["data"] is None
    assert error_code(body) == "STRIPE_NOT_CONFIGURED"
    assert error_message(body) == (
        "Stripe is not configured: set STRIPE_SECRET_KEY to take payments."
    )
    assert payments == []
    assert await count_payment_intents(localstripe) == intents_before


async def test_pay_sends_payment_idempotency_key(database_url, localstripe):
    """Intent creation sends `payment-<payment id>`, so a retry gets the first intent back.

    localstripe ignores Idempotency-Key, so the key is read by a recording proxy between
    paystream and localstripe.
    """
    async with recording_proxy(localstripe) as proxy:
        settings = emulator_settings(database_url, localstripe, api_base=proxy.url)
        async with app_client(settings) as client:
            order = await create_order(client, "19.99", "usd")
            body = await pay(client, order["id"], 1999, payment_method_id=VISA)

    payment = body["data"]["pay"]
    assert payment["status"] == "succeeded"
    assert proxy.idempotency_keys("POST", "/v1/payment_intents") == [f"payment-{payment['id']}"]


# Helpers


async def insert_order(app, price: str, currency: str) -> int:
    """Insert a pending order for alice without createOrder's checks and return its id."""
    async with app.state.services.db.write() as session:
        order = Order(user_id="alice", price=Decimal(price), currency=currency, status="pending")
        session.add(order)
        await session.flush()
        return order.id


async def create_card_payment_method(localstripe: LocalStripe, number: str) -> str:
    """Create a card PaymentMethod at localstripe from a raw test card number."""
    data = {
        "type": "card",
        "card[number]": number,
        "card[exp_month]": "12",
        "card[exp_year]": "2030",
        "card[cvc]": "123",
    }
    headers = {"Authorization": f"Bearer {localstripe.secret_key}"}
    async with httpx.AsyncClient(base_url=localstripe.url, headers=headers) as http:
        response = await http.post("/v1/payment_methods", data=data)
    assert response.status_code == 200, response.text
    method_id: str = response.json()["id"]
    return method_id
