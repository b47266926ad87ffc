"""Signed PaymentIntent events: applied once, in any order, recorded, and checked against the order.

The payloads are the real captures in `stripe_events/`. Their intent
`pi_000000000000000000000000` (2000 USD) is the intent of the payment each test seeds.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette

from callbacks.events import EVENT_HANDLERS
from db.models import Order
from tests.conftest import (
    graphql,
    load_event,
    post_event,
    seed_payment,
    stored_events,
    stripe_event,
)

INTENT_ID = "pi_000000000000000000000000"
SUCCEEDED_ID = "evt_000000000000000000000001"
FAILED_ID = "evt_000000000000000000000002"
CANCELED_ID = "evt_000000000000000000000003"
PROCESSING_ID = "evt_built_processing_0001"

PAYMENT_QUERY = """
query($id: Int!) {
  payment(id: $id) {
    status stripePaymentIntentId failureCode failureMessage callbackProcessed updatedAt
    order { status paymentDiscrepancy }
  }
}
"""


def processing_event(event_id: str = PROCESSING_ID) -> dict[str, Any]:
    """A `payment_intent.processing` event built from the succeeded capture.

    No public capture of this type was found, so the intent is rewound to `processing`:
    nothing received yet and no charge.
    """
    event = stripe_event(
        "payment_intent.succeeded",
        event_id,
        status="processing",
        amount_received=0,
        charges={"object": "list", "data": [], "has_more": False, "total_count": 0},
    )
    event["type"] = "payment_intent.processing"
    return event


async def payment_state(client: Any, payment_id: int, role: str = "user") -> dict[str, Any]:
    body = await graphql(client, PAYMENT_QUERY, {"id": payment_id}, role=role)
    assert "errors" not in body, body
    payment: dict[str, Any] = body["data"]["payment"]
    return payment


async def event_outcomes(app: Starlette) -> dict[str, str | None]:
    return {event_id: row.outcome for event_id, row in (await stored_events(app)).items()}


@pytest.fixture
async def payment_id(app: Starlette) -> int:
    """A pending 20.00 USD order and its payment on the captured intent."""
    _, seeded = await seed_payment(app, price="20.00", amount=2000, intent_id=INTENT_ID)
    return seeded


# Applying each PaymentIntent event


async def test_payment_succeeded_marks_order_paid(app, client, payment_id):
    event = load_event("payment_intent.succeeded")

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["callbackProcessed"] is True
    assert payment["order"] == {"status": "paid", "paymentDiscrepancy": None}


async def test_payment_succeeded_event_row_recorded(app, client, payment_id):
    event = load_event("payment_intent.succeeded")

    response = await post_event(client, event)

    rows = await stored_events(app)
    assert response.status_code == 200
    assert list(rows) == [SUCCEEDED_ID]
    row = rows[SUCCEEDED_ID]
    assert row.type == "payment_intent.succeeded"
    assert row.outcome == "processed"
    assert row.api_version == "2020-08-27"
    assert row.created == 1648320033
    assert row.endpoint == "main"
    assert row.payload == response.request.content.decode()
    assert row.processed_at is not None
    assert row.error is None


async def test_payment_failed_records_decline(app, client, payment_id):
    response = await post_event(client, load_event("payment_intent.payment_failed"))

    assert response.status_code == 200
    assert response.json() == {"id": FAILED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "failed"
    assert payment["failureCode"] == "generic_decline"
    assert payment["failureMessage"] == "Your card was declined."
    assert payment["order"]["status"] == "pending"


async def test_payment_processing_then_succeeded(app, client, payment_id):
    first = await post_event(client, processing_event())
    processing = await payment_state(client, payment_id)
    second = await post_event(client, load_event("payment_intent.succeeded"))

    assert first.json() == {"id": PROCESSING_ID, "outcome": "processed"}
    assert processing["status"] == "processing"
    assert processing["order"]["status"] == "pending"
    assert second.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


async def test_payment_canceled_recorded(app, client, payment_id):
    response = await post_event(client, load_event("payment_intent.canceled"))

    assert response.status_code == 200
    assert response.json() == {"id": CANCELED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "canceled"
    assert payment["order"]["status"] == "pending"


# Events out of order


async def test_payment_failed_after_succeeded_ignored(app, client, payment_id):
    await post_event(client, load_event("payment_intent.succeeded"))

    response = await post_event(client, load_event("payment_intent.payment_failed"))

    assert response.status_code == 200
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["failureCode"] is None
    assert payment["failureMessage"] is None
    assert payment["order"]["status"] == "paid"
    assert set(await event_outcomes(app)) == {SUCCEEDED_ID, FAILED_ID}


async def test_payment_succeeded_after_failed(app, client, payment_id):
    # A declined card leaves the intent open, so the customer can retry it and succeed.
    await post_event(client, load_event("payment_intent.payment_failed"))

    response = await post_event(client, load_event("payment_intent.succeeded"))

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


async def test_payment_processing_after_succeeded_ignored(app, client, payment_id):
    await post_event(client, load_event("payment_intent.succeeded"))

    response = await post_event(client, processing_event())

    assert response.status_code == 200
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


@pytest.mark.parametrize("late", ["payment_intent.payment_failed", "payment_intent.succeeded"])
async def test_payment_canceled_is_final(app, client, payment_id, late):
    await post_event(client, load_event("payment_intent.canceled"))

    response = await post_event(client, load_event(late))

    assert response.status_code == 200
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "canceled"
    assert payment["failureCode"] is None
    assert payment["order"]["status"] == "pending"


async def test_payment_concurrent_failed_succeeded(app, client, payment_id):
    responses = await asyncio.gather(
        post_event(client, load_event("payment_intent.payment_failed")),
        post_event(client, load_event("payment_intent.succeeded")),
    )

    assert [response.status_code for response in responses] == [200, 200]
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


# Duplicates


async def test_duplicate_sequential_changes_nothing(app, client, payment_id):
    event = load_event("payment_intent.payment_failed")
    first = await post_event(client, event)
    before = await payment_state(client, payment_id)
    recorded = (await stored_events(app))[FAILED_ID].processed_at

    second = await post_event(client, event)

    assert first.json() == {"id": FAILED_ID, "outcome": "processed"}
    assert second.status_code == 200
    assert second.json() == {"id": FAILED_ID, "outcome": "duplicate"}
    assert await payment_state(client, payment_id) == before
    rows = await stored_events(app)
    assert list(rows) == [FAILED_ID]
    assert rows[FAILED_ID].processed_at == recorded


async def test_duplicate_after_newer_state_not_reapplied(app, client, payment_id):
    # A redelivered decline must not be applied again once a retry has succeeded.
    failed = load_event("payment_intent.payment_failed")
    await post_event(client, failed)
    await post_event(client, load_event("payment_intent.succeeded"))

    response = await post_event(client, failed)

    assert response.json() == {"id": FAILED_ID, "outcome": "duplicate"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["failureCode"] == "generic_decline"


async def test_duplicate_concurrent_processed_once(app, client, payment_id):
    event = load_event("payment_intent.succeeded")

    responses = await asyncio.gather(*(post_event(client, event) for _ in range(8)))

    assert [response.status_code for response in responses] == [200] * 8
    outcomes = [response.json()["outcome"] for response in responses]
    assert outcomes.count("processed") == 1
    assert outcomes.count("duplicate") == 7
    assert await event_outcomes(app) == {SUCCEEDED_ID: "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


# Objects and types paystream does not handle


async def test_payment_unknown_intent_ignored(app, client, payment_id):
    event = stripe_event(
        "payment_intent.succeeded", "evt_other_app_intent_01", id="pi_belongs_to_another_app"
    )

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": "evt_other_app_intent_01", "outcome": "ignored"}
    assert await event_outcomes(app) == {"evt_other_app_intent_01": "ignored"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "pending"
    assert payment["order"]["status"] == "pending"


async def test_payment_unknown_intent_redelivery_duplicate(app, client, payment_id):
    event = stripe_event("payment_intent.succeeded", id="pi_belongs_to_another_app")
    await post_event(client, event)

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "duplicate"}
    assert await event_outcomes(app) == {SUCCEEDED_ID: "ignored"}


@pytest.mark.parametrize(
    ("name", "event_id"),
    [
        ("checkout.session.completed", "evt_000000000000000000000010"),
        ("charge.succeeded", "evt_000000000000000000000004"),
        ("charge.failed", "evt_000000000000000000000005"),
    ],
)
async def test_webhook_unhandled_type_ignored(app, client, payment_id, name, event_id):
    # These captures point at the seeded intent, yet must not run the payment callback.
    response = await post_event(client, load_event(name))

    assert response.status_code == 200
    assert response.json() == {"id": event_id, "outcome": "ignored"}
    assert await event_outcomes(app) == {event_id: "ignored"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "pending"
    assert payment["order"]["status"] == "pending"


async def test_payment_metadata_links_unrecorded_intent(app, client):
    # `pay` stores the intent id only after Stripe returns the intent, so its events can
    # arrive first.
    _, payment_id = await seed_payment(app, intent_id=None)
    event = load_event("payment_intent.succeeded")
    event["data"]["object"]["metadata"]["paymentId"] = str(payment_id)

    response = await post_event(client, event)

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["stripePaymentIntentId"] == INTENT_ID
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"


async def test_payment_metadata_other_intent_ignored(app, client):
    _, payment_id = await seed_payment(app, intent_id="pi_recorded_for_this_payment")
    event = load_event("payment_intent.succeeded")
    event["data"]["object"]["metadata"]["paymentId"] = str(payment_id)

    response = await post_event(client, event)

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "ignored"}
    payment = await payment_state(client, payment_id)
    assert payment["stripePaymentIntentId"] == "pi_recorded_for_this_payment"
    assert payment["status"] == "pending"


@pytest.mark.parametrize(
    "metadata_id",
    [
        "\u00b2",  # a digit to str.isdigit(), not to int()
        "2147483648",  # beyond PostgreSQL's INTEGER
        "9" * 5000,  # beyond the digits int() converts
        "-1",
        "1.0",
    ],
)
async def test_payment_malformed_metadata_ignored(app, client, payment_id, metadata_id):
    # Another app's intent on the same Stripe account may carry any paymentId.
    event = stripe_event("payment_intent.succeeded", id="pi_belongs_to_another_app")
    event["data"]["object"]["metadata"]["paymentId"] = metadata_id

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "ignored"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "pending"


# The amount cross-check


async def test_amount_mismatch_leaves_order_pending(app, client):
    _, payment_id = await seed_payment(app, price="25.00", amount=2500, intent_id=INTENT_ID)

    response = await post_event(client, load_event("payment_intent.succeeded"))

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "pending"
    assert payment["order"]["paymentDiscrepancy"] == (
        f"payment {payment_id} succeeded for 2000 USD but the order's price is 2500 USD "
        "in minor units."
    )


async def test_amount_other_currency_leaves_order_pending(app, client, payment_id):
    event = stripe_event("payment_intent.succeeded", currency="eur")

    response = await post_event(client, event)

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "pending"
    assert payment["order"]["paymentDiscrepancy"] == (
        f"payment {payment_id} succeeded for 2000 EUR but the order's price is 2000 USD "
        "in minor units."
    )


@pytest.mark.parametrize(
    ("currency", "price", "amount"),
    [("usd", "20.00", 2000), ("jpy", "500", 500), ("kwd", "5.120", 5120)],
)
async def test_amount_each_currency_class_pays(app, client, currency, price, amount):
    _, payment_id = await seed_payment(
        app, price=price, currency=currency, amount=amount, intent_id=INTENT_ID
    )
    event = stripe_event(
        "payment_intent.succeeded", currency=currency, amount=amount, amount_received=amount
    )

    response = await post_event(client, event)

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"] == {"status": "paid", "paymentDiscrepancy": None}


@pytest.mark.parametrize(
    ("currency", "price", "amount", "expected"),
    [
        # Zero-decimal: a charge multiplied by 100 as if JPY had cents.
        ("jpy", "500", 50000, 500),
        # Three-decimal: a charge computed with two decimals.
        ("kwd", "5.120", 512, 5120),
    ],
)
async def test_amount_wrong_exponent_flagged(app, client, currency, price, amount, expected):
    _, payment_id = await seed_payment(
        app, price=price, currency=currency, amount=amount, intent_id=INTENT_ID
    )
    event = stripe_event(
        "payment_intent.succeeded", currency=currency, amount=amount, amount_received=amount
    )

    response = await post_event(client, event)

    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "pending"
    label = currency.upper()
    assert payment["order"]["paymentDiscrepancy"] == (
        f"payment {payment_id} succeeded for {amount} {label} but the order's price is "
        f"{expected} {label} in minor units."
    )


# A callback that fails


async def fix_order_price(app: Starlette, order_id: int, price: str) -> None:
    async with app.state.services.db.write() as session:
        order = await session.scalar(select(Order).where(Order.id == order_id))
        assert order is not None
        order.price = Decimal(price)


async def test_handler_failure_rolls_back(app, client):
    # 20.005 has more decimal places than USD allows, so the payment callback raises after
    # it has already moved the payment to succeeded.
    _, payment_id = await seed_payment(app, price="20.005", amount=2000, intent_id=INTENT_ID)

    response = await post_event(client, load_event("payment_intent.succeeded"))

    assert response.status_code == 500
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "failed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "pending"
    assert payment["callbackProcessed"] is False
    assert payment["order"] == {"status": "pending", "paymentDiscrepancy": None}
    rows = await stored_events(app)
    assert list(rows) == [SUCCEEDED_ID]
    assert rows[SUCCEEDED_ID].outcome == "failed"
    assert rows[SUCCEEDED_ID].error == (
        "MoneyError: price 20.005 USD has more decimal places than the 2 that USD allows."
    )


async def test_failed_event_redelivery_processed(app, client):
    order_id, payment_id = await seed_payment(app, price="20.005", amount=2000, intent_id=INTENT_ID)
    event = load_event("payment_intent.succeeded")
    failed = await post_event(client, event)
    await fix_order_price(app, order_id, "20.00")

    redelivered = await post_event(client, event)

    assert failed.status_code == 500
    assert redelivered.status_code == 200
    assert redelivered.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"
    assert payment["order"]["status"] == "paid"
    rows = await stored_events(app)
    assert list(rows) == [SUCCEEDED_ID]
    assert rows[SUCCEEDED_ID].outcome == "processed"
    assert rows[SUCCEEDED_ID].error is None


async def test_failed_event_fails_again_until_fixed(app, client):
    await seed_payment(app, price="20.005", amount=2000, intent_id=INTENT_ID)
    event = load_event("payment_intent.succeeded")
    await post_event(client, event)

    response = await post_event(client, event)

    assert response.status_code == 500
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "failed"}
    assert await event_outcomes(app) == {SUCCEEDED_ID: "failed"}


async def test_failed_event_concurrent_redelivery_once(app, client):
    order_id, payment_id = await seed_payment(app, price="20.005", amount=2000, intent_id=INTENT_ID)
    event = load_event("payment_intent.succeeded")
    await post_event(client, event)
    await fix_order_price(app, order_id, "20.00")

    responses = await asyncio.gather(*(post_event(client, event) for _ in range(6)))

    assert [response.status_code for response in responses] == [200] * 6
    outcomes = [response.json()["outcome"] for response in responses]
    assert outcomes.count("processed") == 1
    assert outcomes.count("duplicate") == 5
    assert await event_outcomes(app) == {SUCCEEDED_ID: "processed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "succeeded"


@pytest.fixture
def payment_callback_violates_constraint(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `payment_intent.succeeded` raise the IntegrityError a violated constraint raises.

    The callbacks read before they insert, so no real payload reaches a constraint. This
    fake stands for any constraint a callback violates: that error is a failure, although
    a duplicate delivery is detected by the same exception on the event row's primary key.
    """

    async def violate(session: Any, event: dict[str, Any]) -> bool:
        raise IntegrityError("INSERT INTO payments", {}, Exception("unique violation"))

    monkeypatch.setitem(EVENT_HANDLERS, "payment_intent.succeeded", violate)


async def test_handler_integrity_error_is_failure(
    app, client, payment_id, payment_callback_violates_constraint
):
    response = await post_event(client, load_event("payment_intent.succeeded"))

    assert response.status_code == 500
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "failed"}
    assert await event_outcomes(app) == {SUCCEEDED_ID: "failed"}
    payment = await payment_state(client, payment_id)
    assert payment["status"] == "pending"
