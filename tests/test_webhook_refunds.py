"""Signed refund events: one row per Stripe refund, totals summed from rows, never from deltas.

The acacia `refund.*` captures and the 2020-03-02 `charge.refunded` capture come from
unrelated accounts, so each test points them at the seeded payment's intent and charge,
which are those of the `payment_intent.succeeded` capture.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from starlette.applications import Starlette

from callbacks.events import EVENT_HANDLERS
from callbacks.refund import handle_refund_event
from db.models import Refund
from tests.conftest import (
    graphql,
    load_event,
    post_event,
    seed_payment,
    stored_events,
    stripe_event,
)

INTENT_ID = "pi_000000000000000000000000"
CHARGE_ID = "ch_000000000000000000000000"
REFUND_ID = "re_1Nispe2eZvKYlo2Cd31jOCgZ"
SECOND_REFUND_ID = "re_chain_second_partial_01"
CREATED_ID = "evt_EXAMPLErefundcreated0001"
UPDATED_ID = "evt_EXAMPLErefundupdated0001"
FAILED_ID = "evt_EXAMPLErefundfailed00001"
CHARGE_REFUNDED_ID = "evt_3KtQThJDPojXS6LN0E06aNxq"

REFUNDS_QUERY = """
query($id: Int!) {
  payment(id: $id) { status amountRefunded order { status } }
  refunds(paymentId: $id) {
    paymentId amount currency status stripeRefundId failureReason requestedBy
  }
}
"""


def refund_event(
    name: str, event_id: str | None = None, *, refund_id: str = REFUND_ID, amount: int = 1000
) -> dict[str, Any]:
    """A captured `refund.*` event moved onto the seeded payment's intent and charge."""
    return stripe_event(
        name, event_id, id=refund_id, amount=amount, payment_intent=INTENT_ID, charge=CHARGE_ID
    )


def charge_refunded_event(event_id: str, refunds: list[tuple[str, int]]) -> dict[str, Any]:
    """The captured `charge.refunded` moved onto the seeded charge, embedding `refunds`.

    Stripe lists a charge's refunds newest first, and `amount_refunded` is their sum.
    """
    event = load_event("charge.refunded")
    template = event["data"]["object"]["refunds"]["data"][0]
    embedded = []
    for refund_id, amount in refunds:
        refund = copy.deepcopy(template)
        refund.update(id=refund_id, amount=amount, charge=CHARGE_ID, payment_intent=INTENT_ID)
        embedded.append(refund)
    total = sum(amount for _, amount in refunds)
    event["id"] = event_id
    event["data"]["object"].update(
        id=CHARGE_ID,
        payment_intent=INTENT_ID,
        amount=2000,
        amount_captured=2000,
        amount_refunded=total,
        refunded=total == 2000,
    )
    event["data"]["object"]["refunds"].update(data=embedded, total_count=len(embedded))
    return event


async def refund_state(client: Any, payment_id: int) -> dict[str, Any]:
    body = await graphql(client, REFUNDS_QUERY, {"id": payment_id}, user="admin", role="admin")
    assert "errors" not in body, body
    state: dict[str, Any] = body["data"]
    return state


def stripe_refund_row(
    payment_id: int, amount: int, status: str = "succeeded", refund_id: str = REFUND_ID
) -> dict[str, Any]:
    """A refund row as GraphQL shows one that Stripe reported and paystream did not request."""
    return {
        "paymentId": payment_id,
        "amount": amount,
        "currency": "usd",
        "status": status,
        "stripeRefundId": refund_id,
        "failureReason": None,
        "requestedBy": "stripe",
    }


async def event_outcomes(app: Starlette) -> dict[str, str | None]:
    return {event_id: row.outcome for event_id, row in (await stored_events(app)).items()}


@pytest.fixture
async def payment_id(app: Starlette, client: Any) -> int:
    """A 20.00 USD payment that its `payment_intent.succeeded` event has marked paid."""
    _, seeded = await seed_payment(app, price="20.00", amount=2000, intent_id=INTENT_ID)
    response = await post_event(client, load_event("payment_intent.succeeded"))
    assert response.json()["outcome"] == "processed"
    return seeded


# refund.created, refund.updated, refund.failed


async def test_refund_created_records_refund(app, client, payment_id):
    response = await post_event(client, refund_event("refund.created"))

    assert response.status_code == 200
    assert response.json() == {"id": CREATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"] == {
        "status": "succeeded",
        "amountRefunded": 1000,
        "order": {"status": "partially_refunded"},
    }


async def test_refund_visible_to_owner(app, client, payment_id):
    await post_event(client, refund_event("refund.created"))

    body = await graphql(
        client, "query($id:Int!){ refunds(paymentId:$id){ amount status } }", {"id": payment_id}
    )

    assert body["data"]["refunds"] == [{"amount": 1000, "status": "succeeded"}]


async def test_refund_full_marks_order_refunded(app, client, payment_id):
    response = await post_event(client, refund_event("refund.created", amount=2000))

    assert response.json() == {"id": CREATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 2000)]
    assert state["payment"]["amountRefunded"] == 2000
    assert state["payment"]["order"]["status"] == "refunded"


async def test_refund_updated_keeps_one_row(app, client, payment_id):
    await post_event(client, refund_event("refund.created"))

    response = await post_event(client, refund_event("refund.updated"))

    assert response.json() == {"id": UPDATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000
    assert await event_outcomes(app) == {
        "evt_000000000000000000000001": "processed",
        CREATED_ID: "processed",
        UPDATED_ID: "processed",
    }


async def test_refund_updated_before_created(app, client, payment_id):
    await post_event(client, refund_event("refund.updated"))

    response = await post_event(client, refund_event("refund.created"))

    assert response.json() == {"id": CREATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000


@pytest.mark.parametrize(
    ("amount", "status_before"), [(1000, "partially_refunded"), (2000, "refunded")]
)
async def test_refund_failed_after_succeeded(app, client, payment_id, amount, status_before):
    # A failed refund is undone: the money stays with the merchant, so the order is paid again.
    await post_event(client, refund_event("refund.created", amount=amount))
    before = await refund_state(client, payment_id)

    response = await post_event(client, refund_event("refund.failed", amount=amount))

    assert before["payment"]["order"]["status"] == status_before
    assert response.json() == {"id": FAILED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [
        {
            **stripe_refund_row(payment_id, amount, status="failed"),
            "failureReason": "expired_or_canceled_card",
        }
    ]
    assert state["payment"]["amountRefunded"] == 0
    assert state["payment"]["order"]["status"] == "paid"


async def test_refund_failed_one_of_two(app, client, payment_id):
    await post_event(client, refund_event("refund.created", amount=500))
    await post_event(
        client,
        refund_event(
            "refund.created", "evt_chain_second_created", refund_id=SECOND_REFUND_ID, amount=1500
        ),
    )

    await post_event(client, refund_event("refund.failed", amount=500))

    state = await refund_state(client, payment_id)
    assert [row["status"] for row in state["refunds"]] == ["failed", "succeeded"]
    assert state["payment"]["amountRefunded"] == 1500
    assert state["payment"]["order"]["status"] == "partially_refunded"


async def test_refund_failed_first_stays_failed(app, client, payment_id):
    await post_event(client, refund_event("refund.failed"))

    late = [
        await post_event(client, refund_event("refund.created")),
        await post_event(client, refund_event("refund.updated")),
    ]

    assert [response.status_code for response in late] == [200, 200]
    state = await refund_state(client, payment_id)
    assert len(state["refunds"]) == 1
    assert state["refunds"][0]["status"] == "failed"
    assert state["payment"]["amountRefunded"] == 0
    assert state["payment"]["order"]["status"] == "paid"


async def test_refund_two_partials_sum(app, client, payment_id):
    await post_event(client, refund_event("refund.created", amount=500))
    after_first = await refund_state(client, payment_id)

    await post_event(
        client,
        refund_event(
            "refund.created", "evt_chain_second_created", refund_id=SECOND_REFUND_ID, amount=1500
        ),
    )

    assert after_first["payment"]["amountRefunded"] == 500
    assert after_first["payment"]["order"]["status"] == "partially_refunded"
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [
        stripe_refund_row(payment_id, 500),
        stripe_refund_row(payment_id, 1500, refund_id=SECOND_REFUND_ID),
    ]
    assert state["payment"]["amountRefunded"] == 2000
    assert state["payment"]["order"]["status"] == "refunded"


async def test_refund_redelivery_not_double_counted(app, client, payment_id):
    created = refund_event("refund.created")
    await post_event(client, created)

    again = await post_event(client, created)
    updated = await post_event(client, refund_event("refund.updated"))
    charge = await post_event(
        client, charge_refunded_event("evt_chain_charge_01", [(REFUND_ID, 1000)])
    )

    assert again.json() == {"id": CREATED_ID, "outcome": "duplicate"}
    assert updated.status_code == 200
    assert charge.status_code == 200
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000
    assert state["payment"]["order"]["status"] == "partially_refunded"


async def test_refund_concurrent_duplicates_one_row(app, client, payment_id):
    event = refund_event("refund.created")

    responses = await asyncio.gather(*(post_event(client, event) for _ in range(8)))

    assert [response.status_code for response in responses] == [200] * 8
    outcomes = [response.json()["outcome"] for response in responses]
    assert outcomes.count("processed") == 1
    assert outcomes.count("duplicate") == 7
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000


async def test_refund_concurrent_events_one_row(app, client, payment_id):
    # Two different events for one new refund race to insert its row.
    events = [
        refund_event("refund.created"),
        charge_refunded_event("evt_chain_charge_01", [(REFUND_ID, 1000)]),
    ]

    responses = await asyncio.gather(*(post_event(client, event) for event in events))

    assert [response.status_code for response in responses] == [200, 200]
    assert [response.json()["outcome"] for response in responses] == ["processed", "processed"]
    assert await event_outcomes(app) == {
        "evt_000000000000000000000001": "processed",
        CREATED_ID: "processed",
        "evt_chain_charge_01": "processed",
    }
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000


async def test_refund_unknown_intent_ignored(app, client, payment_id):
    response = await post_event(client, load_event("refund.created"))

    assert response.status_code == 200
    assert response.json() == {"id": CREATED_ID, "outcome": "ignored"}
    assert (await event_outcomes(app))[CREATED_ID] == "ignored"
    state = await refund_state(client, payment_id)
    assert state["refunds"] == []
    assert state["payment"]["amountRefunded"] == 0
    assert state["payment"]["order"]["status"] == "paid"


@pytest.mark.parametrize("metadata_id", ["\u00b9", "2147483648", "9" * 5000])
async def test_refund_malformed_metadata_ignored(app, client, payment_id, metadata_id):
    event = load_event("refund.created")
    event["data"]["object"]["metadata"] = {"refundId": metadata_id}

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": CREATED_ID, "outcome": "ignored"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == []


@pytest.mark.parametrize(
    ("amount", "order_status"), [(1000, "partially_refunded"), (2000, "refunded")]
)
async def test_refund_before_payment_success(app, client, amount, order_status):
    # Stripe does not order events, so a refund can be reported before the payment's success.
    _, payment_id = await seed_payment(app, price="20.00", amount=2000, intent_id=INTENT_ID)

    early = await post_event(client, refund_event("refund.created", amount=amount))
    before = await refund_state(client, payment_id)
    succeeded = await post_event(client, load_event("payment_intent.succeeded"))

    assert early.json() == {"id": CREATED_ID, "outcome": "processed"}
    assert before["refunds"] == [stripe_refund_row(payment_id, amount)]
    assert before["payment"]["amountRefunded"] == amount
    assert before["payment"]["order"]["status"] == "pending"
    assert succeeded.json()["outcome"] == "processed"
    state = await refund_state(client, payment_id)
    assert state["payment"]["status"] == "succeeded"
    assert state["payment"]["amountRefunded"] == amount
    assert state["payment"]["order"]["status"] == order_status


async def test_refund_links_reserved_row(app, client, payment_id):
    # The refund mutation reserves a pending row before it calls Stripe. If paystream stops
    # before it stores Stripe's response, the event finds the row by its refundId metadata.
    body = await graphql(
        client, "query($id:Int!){ payment(id:$id){ orderId } }", {"id": payment_id}
    )
    async with app.state.services.db.write() as session:
        reserved = Refund(
            payment_id=payment_id,
            order_id=body["data"]["payment"]["orderId"],
            user_id="alice",
            amount=1000,
            currency="usd",
            status="pending",
            requested_by="admin",
        )
        session.add(reserved)
    event = refund_event("refund.created")
    event["data"]["object"]["metadata"] = {"refundId": str(reserved.id)}

    response = await post_event(client, event)

    assert response.json() == {"id": CREATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [{**stripe_refund_row(payment_id, 1000), "requestedBy": "admin"}]
    assert state["payment"]["amountRefunded"] == 1000


# charge.refunded


async def test_charge_refunded_embedded_refund(app, client):
    # The 2020-03-02 capture as it is, for a 25.00 USD payment on its own intent.
    event = load_event("charge.refunded")
    intent_id = event["data"]["object"]["payment_intent"]
    _, payment_id = await seed_payment(app, price="25.00", amount=2500, intent_id=intent_id)
    paid = stripe_event("payment_intent.succeeded", id=intent_id, amount=2500, amount_received=2500)
    await post_event(client, paid)

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json() == {"id": CHARGE_REFUNDED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [
        stripe_refund_row(payment_id, 2500, refund_id="re_3Kl36gJDPojXS6LN0eP4yPDz")
    ]
    assert state["payment"]["amountRefunded"] == 2500
    assert state["payment"]["order"]["status"] == "refunded"


@pytest.mark.parametrize("reverse", [False, True], ids=["in_order", "reversed"])
async def test_charge_refunded_partials_cumulative(app, client, payment_id, reverse):
    first = charge_refunded_event("evt_chain_charge_01", [(REFUND_ID, 500)])
    second = charge_refunded_event(
        "evt_chain_charge_02", [(SECOND_REFUND_ID, 1500), (REFUND_ID, 500)]
    )
    deliveries = [second, first] if reverse else [first, second]

    responses = [await post_event(client, event) for event in deliveries]

    assert [response.json()["outcome"] for response in responses] == ["processed", "processed"]
    state = await refund_state(client, payment_id)
    assert sorted((row["stripeRefundId"], row["amount"]) for row in state["refunds"]) == [
        (REFUND_ID, 500),
        (SECOND_REFUND_ID, 1500),
    ]
    assert state["payment"]["amountRefunded"] == 2000
    assert state["payment"]["order"]["status"] == "refunded"


async def test_charge_refunded_first_partial(app, client, payment_id):
    response = await post_event(
        client, charge_refunded_event("evt_chain_charge_01", [(REFUND_ID, 500)])
    )

    assert response.json() == {"id": "evt_chain_charge_01", "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 500)]
    assert state["payment"]["amountRefunded"] == 500
    assert state["payment"]["order"]["status"] == "partially_refunded"


async def test_charge_refunded_unknown_charge_ignored(app, client, payment_id):
    response = await post_event(client, load_event("charge.refunded"))

    assert response.json() == {"id": CHARGE_REFUNDED_ID, "outcome": "ignored"}
    assert (await event_outcomes(app))[CHARGE_REFUNDED_ID] == "ignored"
    state = await refund_state(client, payment_id)
    assert state["refunds"] == []


# A refund callback that fails


@pytest.fixture
def refund_callback_fails(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Make `refund.created` raise after the real refund callback has written its rows.

    No real payload makes the refund callback raise once it has written, so this fake is
    what shows that the rows a failing callback already flushed are rolled back. Calling
    `undo()` on the returned monkeypatch restores the real callback.
    """

    async def write_then_fail(session: Any, event: dict[str, Any]) -> bool:
        await handle_refund_event(session, event)
        await session.flush()
        raise RuntimeError("the refund callback failed after writing")

    monkeypatch.setitem(EVENT_HANDLERS, "refund.created", write_then_fail)
    return monkeypatch


async def test_refund_failure_rolls_back(app, client, payment_id, refund_callback_fails):
    response = await post_event(client, refund_event("refund.created"))

    assert response.status_code == 500
    assert response.json() == {"id": CREATED_ID, "outcome": "failed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == []
    assert state["payment"]["amountRefunded"] == 0
    assert state["payment"]["order"]["status"] == "paid"
    row = (await stored_events(app))[CREATED_ID]
    assert row.outcome == "failed"
    assert row.error == "RuntimeError: the refund callback failed after writing"


async def test_refund_failure_redelivery_processed(app, client, payment_id, refund_callback_fails):
    event = refund_event("refund.created")
    failed = await post_event(client, event)
    refund_callback_fails.undo()

    redelivered = await post_event(client, event)

    assert failed.status_code == 500
    assert redelivered.status_code == 200
    assert redelivered.json() == {"id": CREATED_ID, "outcome": "processed"}
    state = await refund_state(client, payment_id)
    assert state["refunds"] == [stripe_refund_row(payment_id, 1000)]
    assert state["payment"]["amountRefunded"] == 1000
    row = (await stored_events(app))[CREATED_ID]
    assert row.outcome == "processed"
    assert row.error is None
