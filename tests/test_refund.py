"""The refund mutation over GraphQL against the localstripe emulator, on SQLite and PostgreSQL.

localstripe creates refunds as `succeeded` at once and sends no refund events, so each
refund here is final when the mutation returns.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from paystream.settings import Settings
from tests.conftest import error_code, graphql, make_settings, running_app, seed_payment
from tests.emulator.harness import LocalStripe
from tests.payment_helpers import (
    DECLINING_CARD,
    PAYMENTS,
    REFUND,
    REFUNDS,
    VISA,
    app_client,
    create_order,
    emulator_settings,
    error_message,
    list_rows,
    paid_order,
    pay,
    read_stripe_object,
    recording_proxy,
    refund,
)


@pytest.fixture
def settings(database_url: str, localstripe: LocalStripe) -> Settings:
    return emulator_settings(database_url, localstripe)


async def refunded_at_stripe(localstripe: LocalStripe, intent_id: str) -> int:
    """The amount localstripe has refunded on the intent's charge."""
    intent = await read_stripe_object(localstripe, f"/v1/payment_intents/{intent_id}")
    refunded: int = intent["latest_charge"]["amount_refunded"]
    return refunded


async def test_refund_partial_succeeds(client, localstripe):
    payment = await paid_order(client, "100.00", 10000)

    body = await refund(client, payment["id"], 6000)

    assert "errors" not in body
    row = body["data"]["refund"]
    assert row["status"] == "succeeded"
    assert row["amount"] == 6000
    assert row["currency"] == "usd"
    assert row["paymentId"] == payment["id"]
    assert row["requestedBy"] == "root"
    assert row["stripeRefundId"].startswith("re_")
    assert row["order"] == {"status": "partially_refunded"}
    payments = await list_rows(client, PAYMENTS)
    assert payments[0]["amountRefunded"] == 6000
    assert await refunded_at_stripe(localstripe, payment["stripePaymentIntentId"]) == 6000


async def test_refund_rest_marks_refunded(client, localstripe):
    payment = await paid_order(client, "100.00", 10000)
    await refund(client, payment["id"], 6000)

    body = await refund(client, payment["id"], 4000)

    assert "errors" not in body
    assert body["data"]["refund"]["status"] == "succeeded"
    assert body["data"]["refund"]["order"] == {"status": "refunded"}
    payments = await list_rows(client, PAYMENTS)
    assert payments[0]["amountRefunded"] == 10000
    assert len(await list_rows(client, REFUNDS)) == 2
    assert await refunded_at_stripe(localstripe, payment["stripePaymentIntentId"]) == 10000


async def test_refund_whole_payment_at_once(client):
    payment = await paid_order(client, "100.00", 10000)

    body = await refund(client, payment["id"], 10000)

    assert body["data"]["refund"]["status"] == "succeeded"
    assert body["data"]["refund"]["order"] == {"status": "refunded"}


async def test_refund_over_remaining_rejected(client, localstripe):
    payment = await paid_order(client, "100.00", 10000)
    await refund(client, payment["id"], 6000)

    body = await refund(client, payment["id"], 6000)

    assert body["data"] is None
    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"refundAmount 6000 exceeds the 4000 still refundable on payment {payment['id']}."
    )
    assert len(await list_rows(client, REFUNDS)) == 1
    assert await refunded_at_stripe(localstripe, payment["stripePaymentIntentId"]) == 6000


async def test_refund_after_full_refund_rejected(client):
    payment = await paid_order(client, "100.00", 10000)
    await refund(client, payment["id"], 10000)

    body = await refund(client, payment["id"], 1)

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        f"refundAmount 1 exceeds the 0 still refundable on payment {payment['id']}."
    )


@pytest.mark.parametrize("amount", [0, -500])
async def test_refund_non_positive_rejected(client, amount):
    payment = await paid_order(client, "100.00", 10000)

    body = await refund(client, payment["id"], amount)

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == f"refundAmount {amount} must be a positive integer."
    assert await list_rows(client, REFUNDS) == []


async def test_refund_kwd_last_digit_rejected(client):
    order = await create_order(client, "5.120", "kwd")
    paid = await pay(client, order["id"], 5120, currency="kwd", payment_method_id=VISA)

    body = await refund(client, paid["data"]["pay"]["id"], 5)

    assert error_code(body) == "BAD_USER_INPUT"
    assert error_message(body) == (
        "amount 5 (0.005 KWD) does not end in 0, which Stripe requires for three-decimal "
        "currencies."
    )
    assert await list_rows(client, REFUNDS) == []


async def test_refund_pending_payment_rejected(client):
    order = await create_order(client, "100.00", "usd")
    pending = (await pay(client, order["id"], 10000))["data"]["pay"]

    body = await refund(client, pending["id"], 1000)

    assert error_code(body) == "CONFLICT"
    assert error_message(body) == (
        f"payment {pending['id']} is pending; only a succeeded payment can be refunded."
    )
    assert await list_rows(client, REFUNDS) == []


async def test_refund_failed_payment_rejected(client):
    order = await create_order(client, "100.00", "usd")
    failed = (await pay(client, order["id"], 10000, payment_method_id=DECLINING_CARD))["data"]

    body = await refund(client, failed["pay"]["id"], 1000)

    assert error_code(body) == "CONFLICT"
    assert error_message(body) == (
        f"payment {failed['pay']['id']} is failed; only a succeeded payment can be refunded."
    )
    assert await list_rows(client, REFUNDS) == []


async def test_refund_unknown_payment_not_found(client):
    body = await refund(client, 999, 1000)

    assert error_code(body) == "NOT_FOUND"
    assert error_message(body) == "payment 999 does not exist."


async def test_refund_by_user_forbidden(client, localstripe):
    payment = await paid_order(client, "100.00", 10000)

    body = await graphql(
        client, REFUND, {"paymentId": payment["id"], "refundAmount": 1000}, user="alice"
    )

    assert body["data"] is None
    assert error_code(body) == "FORBIDDEN"
    assert error_message(body) == "Only an admin may refund a payment."
    assert await list_rows(client, REFUNDS) == []
    assert await refunded_at_stripe(localstripe, payment["stripePaymentIntentId"]) == 0


async def test_refund_concurrent_never_exceeds(client, localstripe):
    payment = await paid_order(client, "100.00", 10000)

    bodies = await asyncio.gather(
        refund(client, payment["id"], 6000), refund(client, payment["id"], 6000)
    )

    succeeded = [body for body in bodies if "errors" not in body]
    rejected = [body for body in bodies if "errors" in body]
    assert len(succeeded) == 1
    assert succeeded[0]["data"]["refund"]["status"] == "succeeded"
    assert len(rejected) == 1
    assert error_message(rejected[0]) == (
        f"refundAmount 6000 exceeds the 4000 still refundable on payment {payment['id']}."
    )
    refunds = await list_rows(client, REFUNDS)
    assert [row["amount"] for row in refunds] == [6000]
    payments = await list_rows(client, PAYMENTS)
    assert payments[0]["amountRefunded"] == 6000
    assert await refunded_at_stripe(localstripe, payment["stripePaymentIntentId"]) == 6000


async def test_refund_stripe_not_configured(database_url):
    async with running_app(make_settings(database_url)) as app:
        _, payment_id = await seed_payment(app, status="succeeded")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://paystream.test"
        ) as client:
            body = await refund(client, payment_id, 1000)
            refunds = await list_rows(client, REFUNDS)

    assert body["data"] is None
    assert error_code(body) == "STRIPE_NOT_CONFIGURED"
    assert error_message(body) == (
        "Stripe is not configured: set STRIPE_SECRET_KEY to take payments."
    )
    assert refunds == []


async def test_refund_sends_refund_idempotency_key(database_url, localstripe):
    """Each refund sends `refund-<refund id>`, so a retry gets the first refund back.

    localstripe ignores Idempotency-Key, so the keys are read by a recording proxy between
    paystream and localstripe.
    """
    async with recording_proxy(localstripe) as proxy:
        settings = emulator_settings(database_url, localstripe, api_base=proxy.url)
        async with app_client(settings) as client:
            payment = await paid_order(client, "100.00", 10000)
            first = await refund(client, payment["id"], 3000)
            second = await refund(client, payment["id"], 2000)

    first_id = first["data"]["refund"]["id"]
    second_id = second["data"]["refund"]["id"]
    assert first_id != second_id
    assert proxy.idempotency_keys("POST", "/v1/refunds") == [
        f"refund-{first_id}",
        f"refund-{second_id}",
    ]
