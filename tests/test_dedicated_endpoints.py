"""Dedicated webhook endpoints: `POST /webhooks/stripe/<name>` with its own secret and types.

The hooks file configures one endpoint, `charges`, taking `charge.failed`. Its events run the
`stripe:charge.failed` hooks (tests/hook_app.py's `charge_failed` and the HTTP hook `shop`)
and never a system callback. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.applications import Starlette

from db.models import Payment
from paystream.settings import Settings
from tests import hook_app
from tests.conftest import WEBHOOK_SECRET, load_event, post_event, seed_payment
from tests.hook_helpers import (
    CHARGE_FAILED,
    CHARGES_SECRET,
    SHOP,
    Receiver,
    all_finished,
    event_rows,
    hook_runs,
    hook_settings,
    post_to_endpoint,
    running_receiver,
    wait_for_runs,
    write_hooks_file,
)

CHARGE_FAILED_ID = "evt_000000000000000000000005"
SUCCEEDED_ID = "evt_000000000000000000000001"
INTENT_ID = "pi_000000000000000000000000"


@pytest.fixture(autouse=True)
def hook_app_state() -> None:
    hook_app.reset()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as started:
        yield started


@pytest.fixture
def settings(database_url: str, broadcast_url: str, receiver: Receiver, tmp_path: Path) -> Settings:
    hooks_file = write_hooks_file(
        tmp_path / "hooks.toml",
        receiver.url,
        callbacks=["stripe:charge.failed"],
        events=["charge.failed"],
    )
    return hook_settings(database_url, broadcast_url, hooks_file)


async def payment_status(app: Starlette, payment_id: int) -> str:
    async with app.state.services.db.read() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        return payment.status


async def test_endpoint_runs_stripe_event_hooks(app, client, receiver):
    response = await post_to_endpoint(client, "charges", load_event("charge.failed"))

    assert response.status_code == 200
    assert response.json() == {"id": CHARGE_FAILED_ID, "outcome": "processed"}
    runs = await wait_for_runs(app, lambda runs: len(runs) == 2 and all_finished(runs))
    assert sorted(run.hook for run in runs) == sorted([CHARGE_FAILED, SHOP])
    assert {run.callback for run in runs} == {"stripe:charge.failed"}
    assert {run.status for run in runs} == {"succeeded"}
    assert await event_rows(app) == {(CHARGE_FAILED_ID, "charges"): "processed"}
    [call] = hook_app.calls("charge_failed")
    assert call.callback == "stripe:charge.failed"
    assert call.rows == {}
    assert call.previous_status is None
    assert call.event is not None
    assert call.event["id"] == CHARGE_FAILED_ID
    assert call.event["data"]["object"]["failure_code"] == "card_declined"
    [body] = receiver.bodies
    assert body["callback"] == "stripe:charge.failed"
    assert body["event"]["id"] == CHARGE_FAILED_ID
    assert receiver.rejected == 0


async def test_endpoint_other_type_ignored(app, client):
    # The intent is the seeded payment's, yet the endpoint must not run the payment callback.
    _, payment_id = await seed_payment(app, intent_id=INTENT_ID)

    response = await post_to_endpoint(client, "charges", load_event("payment_intent.succeeded"))

    assert response.status_code == 200
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "ignored"}
    assert await event_rows(app) == {(SUCCEEDED_ID, "charges"): "ignored"}
    await asyncio.sleep(0.3)
    assert await hook_runs(app) == []
    assert hook_app.CALLS == []
    assert await payment_status(app, payment_id) == "pending"


async def test_endpoint_rejects_main_secret(app, client):
    response = await post_to_endpoint(
        client, "charges", load_event("charge.failed"), secret=WEBHOOK_SECRET
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    assert await event_rows(app) == {}
    assert await hook_runs(app) == []


async def test_main_endpoint_rejects_endpoint_secret(app, client):
    response = await post_event(client, load_event("charge.failed"), secret=CHARGES_SECRET)

    assert response.status_code == 400
    assert await event_rows(app) == {}


async def test_unknown_endpoint_not_found(app, client):
    response = await post_to_endpoint(client, "refunds", load_event("charge.failed"))

    assert response.status_code == 404
    assert response.json() == {"error": "no webhook endpoint is named 'refunds'."}
    assert await event_rows(app) == {}


async def test_endpoint_redelivery_runs_hooks_once(app, client):
    event = load_event("charge.failed")

    first = await post_to_endpoint(client, "charges", event)
    concurrent = await asyncio.gather(*(post_to_endpoint(client, "charges", event) for _ in range(3)))
    await wait_for_runs(app, lambda runs: len(runs) == 2 and all_finished(runs))
    later = await post_to_endpoint(client, "charges", event)

    assert first.json()["outcome"] == "processed"
    assert [response.json()["outcome"] for response in concurrent] == ["duplicate"] * 3
    assert later.json() == {"id": CHARGE_FAILED_ID, "outcome": "duplicate"}
    await asyncio.sleep(0.3)
    assert len(await hook_runs(app)) == 2
    assert len(hook_app.calls("charge_failed")) == 1


async def test_same_event_at_main_and_endpoint(app, client):
    # Stripe sends one event, with one id, to every endpoint registered for its type; each
    # endpoint records and applies it once.
    event = load_event("charge.failed")

    at_main = await post_event(client, event)
    at_endpoint = await post_to_endpoint(client, "charges", event)

    assert at_main.json() == {"id": CHARGE_FAILED_ID, "outcome": "ignored"}
    assert at_endpoint.json() == {"id": CHARGE_FAILED_ID, "outcome": "processed"}
    assert await event_rows(app) == {
        (CHARGE_FAILED_ID, "main"): "ignored",
        (CHARGE_FAILED_ID, "charges"): "processed",
    }
    runs = await wait_for_runs(app, lambda runs: len(runs) == 2 and all_finished(runs))
    assert {run.callback for run in runs} == {"stripe:charge.failed"}
    assert len(hook_app.calls("charge_failed")) == 1


async def test_main_endpoint_runs_no_stripe_event_hooks(app, client):
    response = await post_event(client, load_event("charge.failed"))

    assert response.json() == {"id": CHARGE_FAILED_ID, "outcome": "ignored"}
    await asyncio.sleep(0.3)
    assert await hook_runs(app) == []
    assert hook_app.CALLS == []


async def test_endpoint_keeps_serving_when_hook_fails(app, client, receiver):
    receiver.failures_left = 1

    response = await post_to_endpoint(client, "charges", load_event("charge.failed"))

    assert response.json()["outcome"] == "processed"
    runs = await wait_for_runs(app, lambda runs: len(runs) == 2 and all_finished(runs))
    shop = next(run for run in runs if run.hook == SHOP)
    assert shop.status == "succeeded"
    assert shop.attempts == 2
    assert await event_rows(app) == {(CHARGE_FAILED_ID, "charges"): "processed"}
