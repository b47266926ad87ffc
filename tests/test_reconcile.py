"""`paystream reconcile` against localstripe, on SQLite and PostgreSQL.

No test here registers a webhook for the app, and the app is reached over ASGI only, so
localstripe's webhooks never arrive: each row stays where paystream left it until reconcile
reads Stripe's state. Rows that a request left behind when it stopped half-way (a pending
payment or refund with no Stripe id) are inserted as that request leaves them, and the
Stripe object it may have created is made directly at localstripe.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from db.models import Order, Payment, RecurringPayment, Refund
from paystream.cli import main
from paystream.settings import Settings, get_settings
from tests.conftest import post_event, stored_events
from tests.emulator.harness import LocalStripe, LocalStripeError
from tests.payment_helpers import (
    DECLINING_CARD,
    VISA,
    create_order,
    emulator_settings,
    paid_order,
    pay,
    read_stripe_object,
)

AN_HOUR_AGO = dt.timedelta(hours=1)


@pytest.fixture
def settings(database_url: str, localstripe: LocalStripe) -> Settings:
    return emulator_settings(database_url, localstripe)


@pytest.fixture
def cli_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str, localstripe: LocalStripe
) -> Iterator[None]:
    """Point the command at the test's database and at localstripe, from an empty folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROADCAST_URL", "memory://")
    monkeypatch.setenv("STRIPE_SECRET_KEY", localstripe.secret_key)
    monkeypatch.setenv("STRIPE_API_BASE", localstripe.url)
    for name in ("PAYSTREAM_HOOKS", "PAYSTREAM_HOOKS_FILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def reconcile(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `paystream reconcile ARGV` in a worker thread; return exit code, stdout, stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["reconcile", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def stripe_post(localstripe: LocalStripe, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body to localstripe with the secret key, as a Stripe call paystream made."""
    headers = {"Authorization": f"Bearer {localstripe.secret_key}"}
    async with httpx.AsyncClient(base_url=localstripe.url, headers=headers) as http:
        response = await http.post(path, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def row(app: Starlette, model: type[Any], row_id: int) -> Any:
    async with app.state.services.db.read() as session:
        found = await session.get(model, row_id)
    assert found is not None
    return found


async def insert(app: Starlette, new_row: Any) -> int:
    async with app.state.services.db.write() as session:
        session.add(new_row)
        await session.flush()
        return int(new_row.id)


async def unrecorded_payment(app: Starlette, order: dict[str, Any], age: dt.timedelta) -> int:
    """A pending payment with no intent id, as `pay` leaves it when it stops after reserving."""
    created = dt.datetime.now(dt.UTC) - age
    return await insert(
        app,
        Payment(
            order_id=order["id"],
            user_id=order["userId"],
            amount=7319,
            currency="usd",
            status="pending",
            created_at=created,
            updated_at=created,
        ),
    )


async def pending_refund(
    app: Starlette, payment: dict[str, Any], amount: int, stripe_refund_id: str | None
) -> int:
    """A pending refund row, as the refund mutation leaves it before Stripe's final state."""
    created = dt.datetime.now(dt.UTC) - AN_HOUR_AGO
    order = await row(app, Order, payment["orderId"])
    return await insert(
        app,
        Refund(
            payment_id=payment["id"],
            order_id=payment["orderId"],
            user_id=order.user_id,
            amount=amount,
            currency="usd",
            status="pending",
            stripe_refund_id=stripe_refund_id,
            requested_by="root",
            created_at=created,
            updated_at=created,
        ),
    )


async def create_intent(
    localstripe: LocalStripe, order_id: int, payment_id: int, *, confirm: bool
) -> dict[str, Any]:
    """The intent `pay` creates for a payment, with its metadata, confirmed or not."""
    return await stripe_post(
        localstripe,
        "/v1/payment_intents",
        {
            "amount": 7319,
            "currency": "usd",
            "payment_method": VISA,
            "payment_method_types": ["card"],
            "metadata": {"orderId": str(order_id), "paymentId": str(payment_id)},
            "confirm": confirm,
        },
    )


# Payments whose webhook never arrived


async def test_reconcile_repairs_undelivered_payment(
    cli_environment, capsys, app, client, localstripe
):
    order = await create_order(client, "19.99")
    payment = (await pay(client, order["id"], 1999))["data"]["pay"]
    intent_id = payment["stripePaymentIntentId"]
    confirmed = await asyncio.to_thread(
        localstripe.confirm_payment_intent_as_browser, intent_id, payment["clientSecret"]
    )
    assert confirmed["status"] == "succeeded"
    assert (await row(app, Payment, payment["id"])).status == "pending"

    code, out, err = await reconcile(capsys)

    assert code == 0, err
    assert out.splitlines() == [
        f"payment {payment['id']}: pending -> succeeded",
        "checked 1, changed 1, errors 0",
    ]
    assert (await row(app, Payment, payment["id"])).status == "succeeded"
    assert (await row(app, Order, order["id"])).status == "paid"
    assert await stored_events(app) == {}


async def test_reconcile_twice_changes_nothing(cli_environment, capsys, app, client, localstripe):
    order = await create_order(client, "19.99")
    payment = (await pay(client, order["id"], 1999))["data"]["pay"]
    await asyncio.to_thread(
        localstripe.confirm_payment_intent_as_browser,
        payment["stripePaymentIntentId"],
        payment["clientSecret"],
    )
    await reconcile(capsys)
    updated_at = (await row(app, Payment, payment["id"])).updated_at

    code, out, _ = await reconcile(capsys)

    assert code == 0
    assert out == "checked 0, changed 0, errors 0\n"
    assert (await row(app, Payment, payment["id"])).updated_at == updated_at


async def test_reconcile_then_late_webhook_duplicate_free(
    cli_environment, capsys, app, client, localstripe
):
    # localstripe lists events oldest first, so earlier tests' events would fill the page.
    await asyncio.to_thread(localstripe.reset)
    order = await create_order(client, "19.99")
    payment = (await pay(client, order["id"], 1999))["data"]["pay"]
    intent_id = payment["stripePaymentIntentId"]
    await asyncio.to_thread(
        localstripe.confirm_payment_intent_as_browser, intent_id, payment["clientSecret"]
    )
    await reconcile(capsys)
    listing = await read_stripe_object(localstripe, "/v1/events?type=payment_intent.succeeded")
    [event] = [item for item in listing["data"] if item["data"]["object"]["id"] == intent_id]

    response = await post_event(client, event)

    # The event applies to a payment that is already succeeded: recorded, nothing moves.
    assert response.status_code == 200
    assert (await stored_events(app))[event["id"]].outcome == "processed"
    assert (await row(app, Payment, payment["id"])).status == "succeeded"
    assert (await row(app, Order, order["id"])).status == "paid"


async def test_reconcile_declined_payment_failed(cli_environment, capsys, app, client, localstripe):
    order = await create_order(client, "15.00")
    payment = (await pay(client, order["id"], 1500))["data"]["pay"]
    with pytest.raises(LocalStripeError) as declined:
        await asyncio.to_thread(
            localstripe.confirm_payment_intent_as_browser,
            payment["stripePaymentIntentId"],
            payment["clientSecret"],
            DECLINING_CARD,
        )
    assert declined.value.status_code == 402

    code, out, _ = await reconcile(capsys)

    stored = await row(app, Payment, payment["id"])
    assert code == 0
    assert out.splitlines()[0] == f"payment {payment['id']}: pending -> failed"
    assert stored.status == "failed"
    assert stored.failure_code == "card_declined"
    assert (await row(app, Order, order["id"])).status == "pending"


async def test_reconcile_unconfirmed_payment_unchanged(cli_environment, capsys, app, client):
    order = await create_order(client, "19.99")
    payment = (await pay(client, order["id"], 1999))["data"]["pay"]

    code, out, _ = await reconcile(capsys)

    assert code == 0
    assert out == "checked 1, changed 0, errors 0\n"
    assert (await row(app, Payment, payment["id"])).status == "pending"


async def test_reconcile_unknown_intent_is_error(cli_environment, capsys, app, client):
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, dt.timedelta(0))
    async with app.state.services.db.write() as session:
        (await session.get(Payment, payment_id)).stripe_payment_intent_id = "pi_unknown"

    code, out, err = await reconcile(capsys)

    assert code == 1
    assert out == "checked 1, changed 0, errors 1\n"
    assert err.startswith(
        f"error: payment {payment_id}: Stripe rejected the request to read the payment intent: "
    )
    assert (await row(app, Payment, payment_id)).status == "pending"


# Payments whose intent id was never recorded


async def test_reconcile_records_confirmed_unrecorded_intent(
    cli_environment, capsys, app, client, localstripe
):
    # localstripe keeps the events of earlier tests, whose metadata may name the same ids.
    await asyncio.to_thread(localstripe.reset)
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, AN_HOUR_AGO)
    intent = await create_intent(localstripe, order["id"], payment_id, confirm=True)
    assert intent["status"] == "succeeded"

    code, out, err = await reconcile(capsys)

    stored = await row(app, Payment, payment_id)
    assert code == 0, err
    assert out.splitlines() == [
        f"payment {payment_id}: pending -> succeeded, recorded intent {intent['id']}",
        "checked 1, changed 1, errors 0",
    ]
    assert stored.status == "succeeded"
    assert stored.stripe_payment_intent_id == intent["id"]
    assert (await row(app, Order, order["id"])).status == "paid"


async def test_reconcile_cancels_unconfirmed_unrecorded(
    cli_environment, capsys, app, client, localstripe
):
    await asyncio.to_thread(localstripe.reset)
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, AN_HOUR_AGO)
    await create_intent(localstripe, order["id"], payment_id, confirm=False)

    code, out, _ = await reconcile(capsys)

    stored = await row(app, Payment, payment_id)
    assert code == 0
    assert out.splitlines() == [
        f"payment {payment_id}: pending -> canceled, no confirmed intent at Stripe",
        "checked 1, changed 1, errors 0",
    ]
    assert stored.status == "canceled"
    assert stored.failure_message == (
        "canceled by reconcile: no PaymentIntent was recorded for this payment and Stripe has "
        "no confirmed one."
    )
    assert (await row(app, Order, order["id"])).status == "pending"
    retried = await pay(client, order["id"], 7319, payment_method_id=VISA)
    assert "errors" not in retried, retried
    assert retried["data"]["pay"]["status"] == "succeeded"


async def test_reconcile_leaves_young_unrecorded(cli_environment, capsys, app, client):
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, dt.timedelta(minutes=10))

    code, out, _ = await reconcile(capsys)

    assert code == 0
    assert out == "checked 0, changed 0, errors 0\n"
    assert (await row(app, Payment, payment_id)).status == "pending"


async def test_reconcile_keeps_unrecorded_past_event_window(cli_environment, capsys, app, client):
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, dt.timedelta(days=40))

    code, out, err = await reconcile(capsys)

    assert code == 1
    assert out == "checked 1, changed 0, errors 1\n"
    assert err == (
        f"error: payment {payment_id}: created before the 30 days of events Stripe lists, so "
        "whether its intent was confirmed is unknown: look for an intent with metadata "
        f"paymentId {payment_id} in the Stripe Dashboard.\n"
    )
    assert (await row(app, Payment, payment_id)).status == "pending"


async def test_reconcile_older_than_option(cli_environment, capsys, app, client, localstripe):
    await asyncio.to_thread(localstripe.reset)
    order = await create_order(client, "73.19")
    payment_id = await unrecorded_payment(app, order, dt.timedelta(minutes=10))

    code, out, _ = await reconcile(capsys, "--older-than", "5m")

    assert code == 0
    assert out.splitlines()[-1] == "checked 1, changed 1, errors 0"
    assert (await row(app, Payment, payment_id)).status == "canceled"


async def test_reconcile_older_than_minimum(cli_environment, capsys, app):
    code, out, err = await reconcile(capsys, "--older-than", "4m")

    assert code == 2
    assert out == ""
    assert err == (
        "paystream reconcile: older_than 240 s is below the minimum of 300 s: a pay or refund "
        "request may still be waiting for Stripe that long.\n"
    )


# Refunds


async def test_reconcile_repairs_pending_refund(cli_environment, capsys, app, client, localstripe):
    payment = await paid_order(client)
    stripe_refund = await stripe_post(
        localstripe,
        "/v1/refunds",
        {"payment_intent": payment["stripePaymentIntentId"], "amount": 2500},
    )
    assert stripe_refund["status"] == "succeeded"
    refund_id = await pending_refund(app, payment, 2500, stripe_refund["id"])

    code, out, err = await reconcile(capsys)

    assert code == 0, err
    assert out.splitlines() == [
        f"refund {refund_id}: pending -> succeeded",
        "checked 1, changed 1, errors 0",
    ]
    assert (await row(app, Refund, refund_id)).status == "succeeded"
    assert (await row(app, Payment, payment["id"])).amount_refunded == 2500
    assert (await row(app, Order, payment["orderId"])).status == "partially_refunded"


async def test_reconcile_records_unrecorded_refund(
    cli_environment, capsys, app, client, localstripe
):
    payment = await paid_order(client)
    refund_id = await pending_refund(app, payment, 10000, None)
    stripe_refund = await stripe_post(
        localstripe,
        "/v1/refunds",
        {
            "payment_intent": payment["stripePaymentIntentId"],
            "amount": 10000,
            "metadata": {"refundId": str(refund_id), "paymentId": str(payment["id"])},
        },
    )

    code, out, err = await reconcile(capsys)

    stored = await row(app, Refund, refund_id)
    assert code == 0, err
    assert out.splitlines() == [
        f"refund {refund_id}: pending -> succeeded, recorded Stripe refund {stripe_refund['id']}",
        "checked 1, changed 1, errors 0",
    ]
    assert stored.status == "succeeded"
    assert stored.stripe_refund_id == stripe_refund["id"]
    assert (await row(app, Order, payment["orderId"])).status == "refunded"


async def test_reconcile_cancels_refund_missing_at_stripe(cli_environment, capsys, app, client):
    payment = await paid_order(client)
    refund_id = await pending_refund(app, payment, 4000, None)

    code, out, _ = await reconcile(capsys)

    stored = await row(app, Refund, refund_id)
    assert code == 0
    assert out.splitlines() == [
        f"refund {refund_id}: pending -> canceled, no refund at Stripe",
        "checked 1, changed 1, errors 0",
    ]
    assert stored.status == "canceled"
    assert stored.failure_reason == "canceled by reconcile: Stripe has no refund for it."
    assert (await row(app, Order, payment["orderId"])).status == "paid"


# Recurring payments


async def active_subscription(localstripe: LocalStripe, amount: int) -> dict[str, Any]:
    """A subscription that localstripe charged at once, its first invoice paid."""
    customer = await stripe_post(localstripe, "/v1/customers", {"metadata": {"userId": "alice"}})
    method = await stripe_post(
        localstripe, f"/v1/payment_methods/{VISA}/attach", {"customer": customer["id"]}
    )
    await stripe_post(
        localstripe,
        f"/v1/customers/{customer['id']}",
        {"invoice_settings": {"default_payment_method": method["id"]}},
    )
    product = await stripe_post(localstripe, "/v1/products", {"name": "Pro"})
    price = await stripe_post(
        localstripe,
        "/v1/prices",
        {
            "product": product["id"],
            "unit_amount": amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
        },
    )
    return await stripe_post(
        localstripe,
        "/v1/subscriptions",
        {"customer": customer["id"], "items": [{"price": price["id"]}]},
    )


async def test_reconcile_activates_incomplete_subscription(
    cli_environment, capsys, app, client, localstripe
):
    order = await create_order(client, "15.00")
    subscription = await active_subscription(localstripe, 1500)
    assert subscription["status"] == "active"
    recurring_id = await insert(
        app,
        RecurringPayment(
            order_id=order["id"],
            user_id="alice",
            price_id=subscription["items"]["data"][0]["price"]["id"],
            status="incomplete",
            stripe_subscription_id=subscription["id"],
            stripe_customer_id=subscription["customer"],
        ),
    )

    code, out, err = await reconcile(capsys)

    stored = await row(app, RecurringPayment, recurring_id)
    assert code == 0, err
    assert out.splitlines() == [
        (
            f"recurring payment {recurring_id}: incomplete -> active, recorded paid invoice "
            f"{subscription['latest_invoice']}"
        ),
        "checked 1, changed 1, errors 0",
    ]
    assert stored.status == "active"
    assert stored.current_period_end is not None
    paid = await row(app, Order, order["id"])
    assert paid.status == "paid"
    assert paid.stripe_invoice_id == subscription["latest_invoice"]
    async with app.state.services.db.read() as session:
        payments = (await session.scalars(select(Payment))).all()
    assert [(payment.order_id, payment.amount, payment.status) for payment in payments] == [
        (order["id"], 1500, "succeeded")
    ]


async def test_reconcile_no_stripe_key(cli_environment, capsys, app, monkeypatch):
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    get_settings.cache_clear()

    code, out, err = await reconcile(capsys)

    assert code == 2
    assert out == ""
    assert err == (
        "paystream reconcile: Stripe is not configured: set STRIPE_SECRET_KEY to take payments.\n"
    )
