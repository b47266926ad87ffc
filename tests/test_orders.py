"""The createOrder mutation over GraphQL, on SQLite and PostgreSQL."""

from __future__ import annotations

from decimal import Decimal

import pytest

from paystream.settings import Settings
from tests.conftest import error_code, graphql
from tests.emulator.harness import LocalStripe
from tests.payment_helpers import (
    ADMIN_USER,
    CREATE_ORDER,
    ORDERS,
    create_order,
    emulator_settings,
    error_message,
    list_rows,
)


@pytest.fixture
def settings(database_url: str, localstripe: LocalStripe) -> Settings:
    return emulator_settings(database_url, localstripe)


async def test_create_order_keeps_decimal_price(client):
    order = await create_order(client, "19.99", "usd")

    assert order["price"] == "19.99"
    assert order["currency"] == "usd"
    assert order["status"] == "pending"
    assert order["kind"] == "one_time"
    assert order["userId"] == "alice"


async def test_create_order_price_reads_back_exactly(client):
    created = await create_order(client, "19.99", "usd")

    body = await graphql(client, "query($id:Int!){ order(id:$id){ price } }", {"id": created["id"]})

    assert "errors" not in body
    # The price column has three decimal places, for KWD and the like, so USD reads back as
    # 19.990 while the mutation returns 19.99.
    assert Decimal(body["data"]["order"]["price"]) == Decimal("19.99")


async def test_create_order_lowercases_currency(client):
    order = await create_order(client, "10.00", "EUR")

    assert order["currency"] == "eur"


async def test_create_order_metadata_round_trip(client):
    metadata = {
        "sku": "A-1",
        "quantity": 2,
        "tags": ["gift", "express"],
        "note": None,
        "shipping": {"country": "DE", "express": True},
    }
    created = await create_order(client, "10.00", "usd", metadata=metadata)

    body = await graphql(
        client, "query($id:Int!){ order(id:$id){ metadata } }", {"id": created["id"]}
    )

    assert created["metadata"] == metadata
    assert body["data"]["order"]["metadata"] == metadata


async def test_create_order_trailing_zeros_dropped(client):
    order = await create_order(client, "19.9900", "usd")

    assert order["price"] == "19.99"


async def test_create_order_without_metadata(client):
    order = await create_order(client, "10.00", "usd")

    assert order["metadata"] is None


async def test_create_order_zero_decimal_price(client):
    order = await create_order(client, "500", "JPY")

    assert order["price"] == "500"
    assert order["currency"] == "jpy"


async def test_create_order_three_decimal_price(client):
    order = await create_order(client, "5.120", "KWD")

    assert order["price"] == "5.120"
    assert order["currency"] == "kwd"


async def test_create_order_too_many_decimals_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "19.999", "currency": "USD"})

    assert body["data"] is None
    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "price 19.999 USD has more decimal places than the 2 that USD allows."
    )
    assert await list_rows(client, ORDERS) == []


async def test_create_order_fractional_yen_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "500.5", "currency": "jpy"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "price 500.5 JPY has more decimal places than the 0 that JPY allows."
    )


async def test_create_order_unrounded_kwd_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "5.124", "currency": "kwd"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 5124 (5.124 KWD) does not end in 0, which Stripe requires for three-decimal "
        "currencies."
    )


async def test_create_order_fractional_krona_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "150.50", "currency": "isk"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 15050 (150.50 ISK) is not a multiple of 100, which Stripe requires for ISK charges."
    )


async def test_create_order_below_minimum_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "0.49", "currency": "usd"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 49 (0.49 USD) is below Stripe's minimum charge of 50 (0.50 USD)."
    )


@pytest.mark.parametrize("price", ["0", "-10.00"])
async def test_create_order_non_positive_price_rejected(client, price):
    body = await graphql(client, CREATE_ORDER, {"price": price, "currency": "usd"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == f"price {price} USD must be greater than zero."


async def test_create_order_unknown_currency_rejected(client):
    body = await graphql(client, CREATE_ORDER, {"price": "10.00", "currency": "XYZ"})

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == "currency 'XYZ' is not a currency Stripe can charge in."


async def test_create_order_anonymous_unauthenticated(client):
    body = await graphql(client, CREATE_ORDER, {"price": "10.00", "currency": "usd"}, user=None)

    assert body["data"] is None
    assert error_code(body) == "UNAUTHENTICATED"
    assert error_message(body) == "This operation needs a bearer token."
    assert await list_rows(client, ORDERS) == []


async def test_create_order_admin_for_other_user(client):
    variables = {"price": "25.00", "currency": "usd", "userId": "bob"}

    created = await graphql(client, CREATE_ORDER, variables, user=ADMIN_USER, role="admin")
    seen_by_bob = await graphql(client, ORDERS, user="bob")
    seen_by_alice = await graphql(client, ORDERS, user="alice")

    assert "errors" not in created
    assert created["data"]["createOrder"]["userId"] == "bob"
    assert [order["id"] for order in seen_by_bob["data"]["orders"]] == [
        created["data"]["createOrder"]["id"]
    ]
    assert seen_by_alice["data"]["orders"] == []


async def test_create_order_user_for_other_user_forbidden(client):
    variables = {"price": "25.00", "currency": "usd", "userId": "bob"}

    body = await graphql(client, CREATE_ORDER, variables, user="alice")

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert error_message(body) == "Only an admin may create an order for another user."
    assert await list_rows(client, ORDERS) == []


async def test_create_order_user_names_self(client):
    variables = {"price": "25.00", "currency": "usd", "userId": "alice"}

    body = await graphql(client, CREATE_ORDER, variables, user="alice")

    assert "errors" not in body
    assert body["data"]["createOrder"]["userId"] == "alice"


async def test_create_order_oversized_metadata_rejected(client):
    body = await graphql(
        client,
        'mutation ($m: JSON) { createOrder(price: "5.00", currency: "usd", metadata: $m) { id } }',
        {"m": {"note": "x" * 20_000}},
    )

    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert body["errors"][0]["message"].endswith("the limit is 16384.")
