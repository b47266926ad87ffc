"""Signed subscription and invoice events: the recurring management and deduction callbacks.

The subscription captures (2020-08-27) all belong to `sub_000000000000000000000000`, the
subscription each test seeds. The only subscription invoice capture is the basil
`invoice.payment_failed`, so the paid renewal invoices are built from it: paid, for 15.00 USD,
with a new invoice id and pointed at the seeded subscription. The two `invoice.paid`
captures are one-off invoices (`billing_reason` manual, no `parent`).

The captures' event `created` times do not follow their story (the `deleted` event is the
oldest), so tests that depend on the order of snapshots set `created` themselves.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from decimal import Decimal
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.conftest import graphql, load_event, post_event, stored_events, stripe_event

SUBSCRIPTION_ID = "sub_000000000000000000000000"
CUSTOMER_ID = "cus_00000000000000"
INVOICE_ID = "in_renewal_0000000000000001"
SECOND_INVOICE_ID = "in_renewal_0000000000000002"
# `current_period_end` and `canceled_at` of the subscription captures.
CREATED_PERIOD_END = 1650998510
UPDATED_PERIOD_END = 1650998505
DELETED_CANCELED_AT = 1648320097
# An event time after every capture's, for snapshots that must count as the newest.
LATER = 1700000000

RECURRING_QUERY = """
query($id: Int!) {
  recurringPayment(id: $id) {
    status currentPeriodEnd cancelAtPeriodEnd canceledAt stripeSubscriptionId stripeCustomerId
  }
}
"""
ORDERS_QUERY = """
query {
  orders { id kind status price currency recurringPaymentId stripeInvoiceId }
}
"""
PAYMENTS_QUERY = """
query($orderId: Int!) {
  payments(orderId: $orderId) { amount currency status stripePaymentIntentId }
}
"""


async def seed_recurring_payment(
    app: Starlette,
    *,
    user: str = "alice",
    order_price: str = "15.00",
    currency: str = "usd",
    subscription_id: str | None = SUBSCRIPTION_ID,
    status: str = "active",
    snapshot_at: int | None = None,
) -> tuple[int, int]:
    """Insert a one-time order and its recurring payment as `subscribe` leaves them.

    Returns the order id and the recurring payment id.
    """
    from db.models import Order, RecurringPayment

    async with app.state.services.db.write() as session:
        order = Order(user_id=user, price=Decimal(order_price), currency=currency, status="pending")
        session.add(order)
        await session.flush()
        recurring = RecurringPayment(
            order_id=order.id,
            user_id=user,
            stripe_subscription_id=subscription_id,
            price_id="price_monthly_1500",
            status=status,
            stripe_snapshot_at=snapshot_at,
        )
        session.add(recurring)
        await session.flush()
        return order.id, recurring.id


def invoice_event(
    event_id: str,
    *,
    event_type: str = "invoice.paid",
    invoice_id: str = INVOICE_ID,
    billing_reason: str = "subscription_cycle",
    subscription_id: str = SUBSCRIPTION_ID,
) -> dict[str, Any]:
    """The basil `invoice.payment_failed` capture turned into a paid 15.00 USD invoice."""
    event = load_event("invoice.payment_failed")
    event["id"] = event_id
    event["type"] = event_type
    invoice = event["data"]["object"]
    invoice.update(
        id=invoice_id,
        billing_reason=billing_reason,
        status="paid",
        amount_due=1500,
        amount_paid=1500,
        amount_remaining=0,
        currency="usd",
    )
    invoice["parent"]["subscription_details"]["subscription"] = subscription_id
    return event


def older_invoice_event(event_id: str, **fields: Any) -> dict[str, Any]:
    """The same paid invoice in the shape before 2025-03-31: `subscription` at the top level."""
    event = invoice_event(event_id, **fields)
    event["api_version"] = "2024-06-20"
    invoice = event["data"]["object"]
    subscription_id = invoice.pop("parent")["subscription_details"]["subscription"]
    invoice.update(subscription=subscription_id, payment_intent="pi_renewal_older_shape_01")
    return event


def subscription_event(
    name: str, event_id: str | None = None, *, created: int | None = None, **fields: Any
) -> dict[str, Any]:
    """A subscription capture, optionally with a new event id, event time and fields."""
    event = stripe_event(name, event_id, **fields)
    if created is not None:
        event["created"] = created
    return event


def utc_time(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, dt.UTC)


def parse_time(value: str | None) -> dt.datetime | None:
    """Parse a GraphQL time as UTC. SQLite returns the stored UTC time without an offset."""
    if value is None:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


async def recurring_state(
    client: httpx.AsyncClient, recurring_id: int, *, user: str = "alice", role: str = "user"
) -> dict[str, Any]:
    body = await graphql(client, RECURRING_QUERY, {"id": recurring_id}, user=user, role=role)
    assert "errors" not in body, body
    state: dict[str, Any] = body["data"]["recurringPayment"]
    return state


async def orders_of(client: httpx.AsyncClient, user: str = "alice") -> list[dict[str, Any]]:
    body = await graphql(client, ORDERS_QUERY, user=user)
    assert "errors" not in body, body
    orders: list[dict[str, Any]] = body["data"]["orders"]
    return orders


async def renewal_orders(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return [order for order in await orders_of(client) if order["kind"] == "renewal"]


async def payments_of(client: httpx.AsyncClient, order_id: int) -> list[dict[str, Any]]:
    body = await graphql(client, PAYMENTS_QUERY, {"orderId": order_id})
    assert "errors" not in body, body
    payments: list[dict[str, Any]] = body["data"]["payments"]
    return payments


async def event_outcomes(app: Starlette) -> dict[str, str | None]:
    return {event_id: row.outcome for event_id, row in (await stored_events(app)).items()}


def succeeded_payment(intent_id: str | None = None) -> dict[str, Any]:
    return {
        "amount": 1500,
        "currency": "usd",
        "status": "succeeded",
        "stripePaymentIntentId": intent_id,
    }


# Recurring deduction: invoice.paid and invoice.payment_succeeded


async def test_renewal_creates_paid_order(app, client):
    order_id, recurring_id = await seed_recurring_payment(app)

    response = await post_event(client, invoice_event("evt_renewal_paid_01"))

    assert response.status_code == 200
    assert response.json() == {"id": "evt_renewal_paid_01", "outcome": "processed"}
    orders = await orders_of(client)
    assert len(orders) == 2
    assert orders[0]["id"] == order_id
    assert orders[0]["status"] == "pending"
    renewal = orders[1]
    assert renewal["kind"] == "renewal"
    assert renewal["status"] == "paid"
    assert renewal["recurringPaymentId"] == recurring_id
    assert renewal["price"] == "15.00"
    assert renewal["currency"] == "usd"
    assert renewal["stripeInvoiceId"] == INVOICE_ID
    assert await payments_of(client, renewal["id"]) == [succeeded_payment()]


async def test_renewal_visible_to_admin(app, client):
    _, recurring_id = await seed_recurring_payment(app)
    await post_event(client, invoice_event("evt_renewal_paid_01"))

    body = await graphql(client, ORDERS_QUERY, user="root", role="admin")

    renewals = [order for order in body["data"]["orders"] if order["kind"] == "renewal"]
    assert len(renewals) == 1
    assert renewals[0]["recurringPaymentId"] == recurring_id


async def test_renewal_older_invoice_shape(app, client):
    _, recurring_id = await seed_recurring_payment(app)

    response = await post_event(client, older_invoice_event("evt_renewal_older_01"))

    assert response.json() == {"id": "evt_renewal_older_01", "outcome": "processed"}
    renewals = await renewal_orders(client)
    assert len(renewals) == 1
    assert renewals[0]["recurringPaymentId"] == recurring_id
    assert renewals[0]["status"] == "paid"
    assert await payments_of(client, renewals[0]["id"]) == [
        succeeded_payment("pi_renewal_older_shape_01")
    ]


async def test_renewal_paid_and_succeeded_once(app, client):
    await seed_recurring_payment(app)
    paid = invoice_event("evt_renewal_paid_01")
    succeeded = invoice_event("evt_renewal_succeeded_01", event_type="invoice.payment_succeeded")

    responses = [
        await post_event(client, paid),
        await post_event(client, succeeded),
        await post_event(client, paid),
        await post_event(client, older_invoice_event("evt_renewal_older_01")),
    ]

    assert [response.status_code for response in responses] == [200, 200, 200, 200]
    assert responses[2].json()["outcome"] == "duplicate"
    renewals = await renewal_orders(client)
    assert len(renewals) == 1
    assert renewals[0]["stripeInvoiceId"] == INVOICE_ID
    assert await payments_of(client, renewals[0]["id"]) == [succeeded_payment()]


async def test_renewal_concurrent_deliveries_once(app, client):
    await seed_recurring_payment(app)
    events = [
        invoice_event(
            f"evt_renewal_concurrent_{index:02d}",
            event_type="invoice.paid" if index % 2 else "invoice.payment_succeeded",
        )
        for index in range(6)
    ]

    responses = await asyncio.gather(*(post_event(client, event) for event in events))

    assert [response.status_code for response in responses] == [200] * 6
    outcomes = await event_outcomes(app)
    assert sorted(outcomes) == sorted(event["id"] for event in events)
    assert "failed" not in outcomes.values()
    renewals = await renewal_orders(client)
    assert len(renewals) == 1
    assert await payments_of(client, renewals[0]["id"]) == [succeeded_payment()]


async def test_renewal_two_invoices_two_orders(app, client):
    _, recurring_id = await seed_recurring_payment(app)

    await post_event(client, invoice_event("evt_renewal_paid_01"))
    await post_event(client, invoice_event("evt_renewal_paid_02", invoice_id=SECOND_INVOICE_ID))

    renewals = await renewal_orders(client)
    assert [order["stripeInvoiceId"] for order in renewals] == [INVOICE_ID, SECOND_INVOICE_ID]
    assert [order["recurringPaymentId"] for order in renewals] == [recurring_id, recurring_id]
    assert [order["status"] for order in renewals] == ["paid", "paid"]
    for order in renewals:
        assert await payments_of(client, order["id"]) == [succeeded_payment()]


def zero_invoice_event(event_id: str, billing_reason: str) -> dict[str, Any]:
    """A paid invoice of 0, as a trial or a 100% coupon makes it."""
    event = invoice_event(event_id, billing_reason=billing_reason)
    event["data"]["object"].update(amount_due=0, amount_paid=0, total=0, subtotal=0)
    return event


async def test_renewal_zero_amount_no_payment(app, client):
    await seed_recurring_payment(app)

    response = await post_event(
        client, zero_invoice_event("evt_zero_paid_01", "subscription_cycle")
    )

    assert response.status_code == 200
    assert response.json() == {"id": "evt_zero_paid_01", "outcome": "processed"}
    renewals = await renewal_orders(client)
    assert len(renewals) == 1
    assert renewals[0]["status"] == "paid"
    assert renewals[0]["price"] == "0.00"
    assert await payments_of(client, renewals[0]["id"]) == []


async def test_first_invoice_zero_amount_no_payment(app, client):
    order_id, _ = await seed_recurring_payment(app)

    response = await post_event(
        client, zero_invoice_event("evt_zero_paid_01", "subscription_create")
    )

    assert response.status_code == 200
    assert response.json() == {"id": "evt_zero_paid_01", "outcome": "processed"}
    assert await payments_of(client, order_id) == []
    assert await renewal_orders(client) == []


async def test_first_invoice_pays_original_order(app, client):
    order_id, _ = await seed_recurring_payment(app)
    first = invoice_event("evt_first_paid_01", billing_reason="subscription_create")
    again = invoice_event(
        "evt_first_succeeded_01",
        event_type="invoice.payment_succeeded",
        billing_reason="subscription_create",
    )

    response = await post_event(client, first)
    await post_event(client, again)

    assert response.json() == {"id": "evt_first_paid_01", "outcome": "processed"}
    orders = await orders_of(client)
    assert len(orders) == 1
    assert orders[0]["id"] == order_id
    assert orders[0]["kind"] == "one_time"
    assert orders[0]["status"] == "paid"
    assert orders[0]["stripeInvoiceId"] == INVOICE_ID
    assert await payments_of(client, order_id) == [succeeded_payment()]


async def test_invoice_manual_reason_ignored(app, client):
    await seed_recurring_payment(app)
    # The real one-off invoice: billing_reason manual and no subscription parent.
    event = load_event("invoice.paid")

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": event["id"], "outcome": "ignored"}
    assert await renewal_orders(client) == []


async def test_invoice_manual_reason_for_subscription_ignored(app, client):
    await seed_recurring_payment(app)

    response = await post_event(
        client, invoice_event("evt_manual_paid_01", billing_reason="manual")
    )

    assert response.json() == {"id": "evt_manual_paid_01", "outcome": "ignored"}
    assert await renewal_orders(client) == []


async def test_invoice_unknown_subscription_ignored(app, client):
    await seed_recurring_payment(app)

    response = await post_event(
        client, invoice_event("evt_unknown_paid_01", subscription_id="sub_not_ours_0001")
    )

    assert response.status_code == 200
    assert response.json() == {"id": "evt_unknown_paid_01", "outcome": "ignored"}
    assert await renewal_orders(client) == []


# invoice.payment_failed


def payment_failed_event() -> dict[str, Any]:
    """The real basil `invoice.payment_failed`, pointed at the seeded subscription."""
    event = load_event("invoice.payment_failed")
    event["data"]["object"]["parent"]["subscription_details"]["subscription"] = SUBSCRIPTION_ID
    return event


async def test_payment_failed_marks_past_due(app, client):
    _, recurring_id = await seed_recurring_payment(app)
    _, other_id = await seed_recurring_payment(app, subscription_id="sub_other_0000001")

    response = await post_event(client, payment_failed_event())

    assert response.json() == {"id": "evt_1234", "outcome": "processed"}
    assert (await recurring_state(client, recurring_id))["status"] == "past_due"
    assert (await recurring_state(client, other_id))["status"] == "active"
    orders = await orders_of(client)
    assert [order["kind"] for order in orders] == ["one_time", "one_time"]
    assert [order["status"] for order in orders] == ["pending", "pending"]


async def test_payment_failed_after_cancel_ignored(app, client):
    _, recurring_id = await seed_recurring_payment(app, status="canceled")

    response = await post_event(client, payment_failed_event())

    assert response.status_code == 200
    assert (await recurring_state(client, recurring_id))["status"] == "canceled"
    assert await renewal_orders(client) == []


async def test_payment_failed_first_invoice_stays_incomplete(app, client):
    # Stripe keeps a subscription whose first payment failed `incomplete` for up to 23 hours:
    # docs.stripe.com/changelog/2019-03-14/subscriptions-successfully-created-first-payment-fails
    _, recurring_id = await seed_recurring_payment(app, status="incomplete")
    event = payment_failed_event()
    event["data"]["object"]["billing_reason"] = "subscription_create"

    response = await post_event(client, event)

    assert response.status_code == 200
    assert (await recurring_state(client, recurring_id))["status"] == "incomplete"
    assert await renewal_orders(client) == []


async def test_payment_failed_unknown_subscription_ignored(app, client):
    _, recurring_id = await seed_recurring_payment(app)

    response = await post_event(client, load_event("invoice.payment_failed"))

    assert response.json() == {"id": "evt_1234", "outcome": "ignored"}
    assert (await recurring_state(client, recurring_id))["status"] == "active"


# Recurring management: customer.subscription.created, .updated, .deleted


async def test_subscription_created_records_period(app, client):
    _, recurring_id = await seed_recurring_payment(app, status="incomplete")

    response = await post_event(client, load_event("customer.subscription.created"))

    assert response.json() == {"id": "evt_000000000000000000000007", "outcome": "processed"}
    state = await recurring_state(client, recurring_id)
    assert state["status"] == "active"
    assert parse_time(state["currentPeriodEnd"]) == utc_time(CREATED_PERIOD_END)
    assert state["cancelAtPeriodEnd"] is False
    assert state["canceledAt"] is None
    assert state["stripeCustomerId"] == CUSTOMER_ID


async def test_subscription_cancel_at_period_end_recorded(app, client):
    _, recurring_id = await seed_recurring_payment(app)
    event = subscription_event(
        "customer.subscription.updated", cancel_at_period_end=True, canceled_at=1648320106
    )

    await post_event(client, event)

    state = await recurring_state(client, recurring_id)
    assert state["status"] == "active"
    assert state["cancelAtPeriodEnd"] is True
    assert parse_time(state["canceledAt"]) == utc_time(1648320106)
    assert parse_time(state["currentPeriodEnd"]) == utc_time(UPDATED_PERIOD_END)


async def test_subscription_deleted_records_canceled_at(app, client):
    _, recurring_id = await seed_recurring_payment(app)

    response = await post_event(client, load_event("customer.subscription.deleted"))

    assert response.json() == {"id": "evt_000000000000000000000009", "outcome": "processed"}
    state = await recurring_state(client, recurring_id, user="root", role="admin")
    assert state["status"] == "canceled"
    assert parse_time(state["canceledAt"]) == utc_time(DELETED_CANCELED_AT)
    assert state["cancelAtPeriodEnd"] is False


async def test_subscription_older_update_ignored(app, client):
    _, recurring_id = await seed_recurring_payment(app, status="past_due", snapshot_at=LATER)
    # The capture's `created` (1648320106) is older than the stored snapshot.
    event = load_event("customer.subscription.updated")

    response = await post_event(client, event)

    assert response.status_code == 200
    state = await recurring_state(client, recurring_id)
    assert state["status"] == "past_due"
    assert state["currentPeriodEnd"] is None


async def test_subscription_newer_update_applied(app, client):
    _, recurring_id = await seed_recurring_payment(app, status="past_due", snapshot_at=LATER)
    event = subscription_event("customer.subscription.updated", created=LATER + 1)

    await post_event(client, event)

    state = await recurring_state(client, recurring_id)
    assert state["status"] == "active"
    assert parse_time(state["currentPeriodEnd"]) == utc_time(UPDATED_PERIOD_END)


async def test_subscription_updates_out_of_order(app, client):
    _, recurring_id = await seed_recurring_payment(app, status="incomplete")
    newer = subscription_event(
        "customer.subscription.updated", created=LATER + 10, status="past_due"
    )
    older = subscription_event(
        "customer.subscription.updated", "evt_older_update_01", created=LATER
    )

    await post_event(client, newer)
    await post_event(client, older)

    assert (await recurring_state(client, recurring_id))["status"] == "past_due"


async def test_subscription_deleted_then_updated(app, client):
    _, recurring_id = await seed_recurring_payment(app)
    deleted = subscription_event("customer.subscription.deleted", created=LATER)
    updated = subscription_event(
        "customer.subscription.updated",
        created=LATER + 10,
        status="active",
        current_period_end=LATER + 2_600_000,
    )

    await post_event(client, deleted)
    response = await post_event(client, updated)

    assert response.status_code == 200
    state = await recurring_state(client, recurring_id)
    assert state["status"] == "canceled"
    assert parse_time(state["canceledAt"]) == utc_time(DELETED_CANCELED_AT)
    assert parse_time(state["currentPeriodEnd"]) == utc_time(1650998496)


async def test_subscription_updated_before_created(app, client):
    # `subscribe` has not recorded the subscription id yet, so the metadata it sent finds the row.
    _, recurring_id = await seed_recurring_payment(app, subscription_id=None, status="incomplete")
    metadata = {"orderId": "42", "recurringPaymentId": str(recurring_id)}
    updated = subscription_event(
        "customer.subscription.updated", created=LATER + 10, metadata=metadata
    )
    created = subscription_event(
        "customer.subscription.created", created=LATER, metadata=metadata, status="incomplete"
    )

    first = await post_event(client, updated)
    second = await post_event(client, created)

    assert first.json() == {"id": "evt_000000000000000000000008", "outcome": "processed"}
    assert second.status_code == 200
    state = await recurring_state(client, recurring_id)
    assert state["stripeSubscriptionId"] == SUBSCRIPTION_ID
    assert state["stripeCustomerId"] == CUSTOMER_ID
    assert state["status"] == "active"
    assert parse_time(state["currentPeriodEnd"]) == utc_time(UPDATED_PERIOD_END)


async def test_subscription_metadata_of_other_row_ignored(app, client):
    # The metadata names a row that belongs to a different subscription.
    _, recurring_id = await seed_recurring_payment(app, subscription_id="sub_other_0000001")
    metadata = {"orderId": "42", "recurringPaymentId": str(recurring_id)}
    event = subscription_event("customer.subscription.updated", metadata=metadata, status="unpaid")

    response = await post_event(client, event)

    assert response.json() == {"id": "evt_000000000000000000000008", "outcome": "ignored"}
    state = await recurring_state(client, recurring_id)
    assert state["stripeSubscriptionId"] == "sub_other_0000001"
    assert state["status"] == "active"


async def test_subscription_unknown_ignored(app, client):
    _, recurring_id = await seed_recurring_payment(app, subscription_id="sub_other_0000001")

    response = await post_event(client, load_event("customer.subscription.created"))

    assert response.status_code == 200
    assert response.json() == {"id": "evt_000000000000000000000007", "outcome": "ignored"}
    state = await recurring_state(client, recurring_id)
    assert state["status"] == "active"
    assert state["currentPeriodEnd"] is None


@pytest.mark.parametrize("name", ["customer.subscription.updated", "invoice.paid"])
async def test_event_without_rows_ignored(app, client, name):
    event = load_event(name)

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": event["id"], "outcome": "ignored"}
    assert await event_outcomes(app) == {event["id"]: "ignored"}
