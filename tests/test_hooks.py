"""The app's own hooks: Python hooks from tests/hook_app.py and an HTTP hook on a real receiver.

Hooks run after the change commits, from the `hook_runs` outbox, so the webhook responds
before any hook finishes, a failing hook is retried without touching the payment, and a
redelivered event queues nothing. Each test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.applications import Starlette

from callbacks.hook_config import HookConfigError, load_hook_config
from callbacks.hook_runner import retry_delay
from db.models import HookAttempt, HookPayload, HookRun, Order, Payment
from paystream import hooks
from paystream.payments import apply_payment_intent
from paystream.settings import Settings
from tests import hook_app
from tests.conftest import (
    error_code,
    graphql,
    load_event,
    make_settings,
    post_event,
    running_app,
    seed_payment,
    stripe_event,
)
from tests.hook_helpers import (
    FLAKY,
    HOOK_SECRET,
    RECORD,
    SHOP,
    SLOW,
    Receiver,
    all_finished,
    attempts_of,
    by_hook,
    hook_runs,
    hook_settings,
    running_receiver,
    verify,
    wait_for_runs,
    write_hooks_file,
)

INTENT_ID = "pi_000000000000000000000000"
SUCCEEDED_ID = "evt_000000000000000000000001"
FAILED_ID = "evt_000000000000000000000002"
# Hooks the payment.succeeded callback runs with this module's configuration.
SUCCEEDED_HOOKS = {RECORD, SLOW, FLAKY, SHOP}

HOOK_RUNS = """
query($status: String, $limit: Int! = 100) {
  hookRuns(status: $status, limit: $limit) {
    id hook callback stripeEventId status attempts maxAttempts lastError finishedAt
    history { attempt outcome error startedAt finishedAt }
  }
}
"""
RERUN = """
mutation($id: Int!) {
  rerunHook(id: $id) { id hook status attempts maxAttempts history { attempt outcome } }
}
"""


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
        callbacks=["payment.succeeded", "refund.succeeded"],
        events=["charge.failed"],
    )
    return hook_settings(database_url, broadcast_url, hooks_file)


@pytest.fixture
async def payment_id(app: Starlette) -> int:
    """A pending 20.00 USD payment on the intent of the `payment_intent.succeeded` capture."""
    _, seeded = await seed_payment(app, price="20.00", amount=2000, intent_id=INTENT_ID)
    return seeded


async def payment_state(app: Starlette, payment_id: int) -> tuple[str, str]:
    async with app.state.services.db.read() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        order = await session.get(Order, payment.order_id)
        assert order is not None
        return payment.status, order.status


# Hooks run after the commit, outside the webhook's response


async def test_slow_hook_does_not_delay_webhook(app, client, payment_id):
    hook_app.STATE["slow_seconds"] = 3.0
    started = time.monotonic()

    response = await post_event(client, load_event("payment_intent.succeeded"))

    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == {"id": SUCCEEDED_ID, "outcome": "processed"}
    assert elapsed < 1.0
    # The other hooks finish while the slow one still sleeps.
    runs = await wait_for_runs(
        app,
        lambda runs: {run.hook for run in runs if run.status == "succeeded"} >= {RECORD, FLAKY, SHOP},
        timeout=2.5,
    )
    assert by_hook(runs)[SLOW][0].status == "running"
    assert hook_app.calls("slow") == []
    runs = await wait_for_runs(app, all_finished, timeout=10)
    assert {run.hook: run.status for run in runs} == dict.fromkeys(SUCCEEDED_HOOKS, "succeeded")
    assert len(hook_app.calls("slow")) == 1


async def test_hooks_queued_in_same_transaction(app, client, payment_id):
    response = await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    assert response.json()["outcome"] == "processed"
    assert sorted(run.hook for run in runs) == sorted(SUCCEEDED_HOOKS)
    assert {run.callback for run in runs} == {"payment.succeeded"}
    assert {run.stripe_event_id for run in runs} == {SUCCEEDED_ID}
    assert len({run.payload_id for run in runs}) == 1
    assert {run.attempts for run in runs} == {1}


async def test_rollback_drops_queued_runs(app, payment_id):
    # A handler that fails after its change queued hooks rolls the runs back with it.
    with pytest.raises(RuntimeError, match="handler failed"):
        async with app.state.services.db.write() as session:
            payment = await session.get(Payment, payment_id)
            await apply_payment_intent(session, payment, {"id": INTENT_ID, "status": "succeeded", "amount": 2000})
            raise RuntimeError("handler failed")

    await asyncio.sleep(0.2)
    assert await hook_runs(app) == []
    assert hook_app.calls("record") == []
    async with app.state.services.db.read() as session:
        assert (await session.scalars(select(HookPayload))).all() == []


# What a Python hook receives


async def test_hook_receives_rows_and_event(app, client, payment_id):
    await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    [call] = hook_app.calls("record", "payment.succeeded")
    assert call.callback == "payment.succeeded"
    assert set(call.rows) == {"payment", "order"}
    assert call.rows["payment"]["id"] == payment_id
    assert call.rows["payment"]["status"] == "succeeded"
    assert call.rows["payment"]["amount"] == 2000
    assert call.rows["order"]["status"] == "paid"
    assert call.rows["order"]["price"] == "20.000"
    assert call.previous_status == "pending"
    assert call.event is not None
    assert call.event["id"] == SUCCEEDED_ID
    assert call.event["type"] == "payment_intent.succeeded"
    assert call.run_id == by_hook(runs)[RECORD][0].id
    assert call.attempt == 1


async def test_payment_failed_hook_from_event(app, client, payment_id):
    await post_event(client, load_event("payment_intent.payment_failed"))

    runs = await wait_for_runs(app, all_finished)
    assert [(run.hook, run.callback) for run in runs] == [(RECORD, "payment.failed")]
    [call] = hook_app.calls("record", "payment.failed")
    assert call.rows["payment"]["status"] == "failed"
    assert call.rows["payment"]["failure_code"] == "generic_decline"
    assert call.rows["order"]["status"] == "pending"
    assert call.previous_status == "pending"
    assert call.event is not None
    assert call.event["id"] == FAILED_ID


async def test_decline_reported_twice_runs_hooks_once(app, client, payment_id):
    # `pay` records the decline from Stripe's response, and the webhook reports it again.
    declined = {
        "id": INTENT_ID,
        "status": "requires_payment_method",
        "last_payment_error": {"code": "card_declined", "message": "Your card was declined."},
    }
    async with app.state.services.db.write() as session:
        payment = await session.get(Payment, payment_id)
        assert await apply_payment_intent(session, payment, declined)
    await wait_for_runs(app, all_finished)

    response = await post_event(client, load_event("payment_intent.payment_failed"))

    assert response.json() == {"id": FAILED_ID, "outcome": "processed"}
    await asyncio.sleep(0.3)
    runs = await hook_runs(app)
    assert [(run.callback, run.stripe_event_id) for run in runs] == [("payment.failed", None)]
    [call] = hook_app.calls("record")
    assert call.rows["payment"]["failure_code"] == "card_declined"


async def test_mutation_change_has_no_event(app, payment_id):
    # `pay` applies the intent that Stripe's API returned, which no event carried.
    intent = load_event("payment_intent.succeeded")["data"]["object"]
    async with app.state.services.db.write() as session:
        payment = await session.get(Payment, payment_id)
        assert await apply_payment_intent(session, payment, intent)

    runs = await wait_for_runs(app, all_finished)
    assert {run.stripe_event_id for run in runs} == {None}
    [call] = hook_app.calls("record", "payment.succeeded")
    assert call.event is None
    assert call.rows["payment"]["status"] == "succeeded"
    assert call.previous_status == "pending"


# Failures, retries and redeliveries


async def test_failing_hook_retried_and_recorded(app, client, payment_id):
    hook_app.STATE["failures_left"] = 2

    await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    flaky = by_hook(runs)[FLAKY][0]
    assert flaky.status == "succeeded"
    assert flaky.attempts == 3
    assert flaky.last_error is None
    attempts = await attempts_of(app, flaky.id)
    assert [(row.attempt, row.outcome, row.error) for row in attempts] == [
        (1, "failed", "RuntimeError: the warehouse is down"),
        (2, "failed", "RuntimeError: the warehouse is down"),
        (3, "succeeded", None),
    ]
    assert all(row.finished_at is not None for row in attempts)
    assert len(hook_app.calls("flaky")) == 1
    assert await payment_state(app, payment_id) == ("succeeded", "paid")


async def test_hook_out_of_attempts_fails_alone(app, client, payment_id):
    hook_app.STATE["failures_left"] = 100

    response = await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    assert response.json()["outcome"] == "processed"
    statuses = {run.hook: run.status for run in runs}
    assert statuses == {RECORD: "succeeded", SLOW: "succeeded", SHOP: "succeeded", FLAKY: "failed"}
    flaky = by_hook(runs)[FLAKY][0]
    assert flaky.attempts == 3
    assert flaky.max_attempts == 3
    assert flaky.last_error == "RuntimeError: the warehouse is down"
    assert flaky.finished_at is not None
    assert await payment_state(app, payment_id) == ("succeeded", "paid")


async def test_redelivered_event_runs_hooks_once(app, client, payment_id):
    event = load_event("payment_intent.succeeded")

    first = await post_event(client, event)
    concurrent = await asyncio.gather(*(post_event(client, event) for _ in range(3)))
    await wait_for_runs(app, all_finished)
    later = await post_event(client, event)

    assert first.json()["outcome"] == "processed"
    assert [response.json()["outcome"] for response in concurrent] == ["duplicate"] * 3
    assert later.json()["outcome"] == "duplicate"
    await asyncio.sleep(0.3)
    runs = await hook_runs(app)
    assert sorted(run.hook for run in runs) == sorted(SUCCEEDED_HOOKS)
    assert len(hook_app.calls("record")) == 1
    assert len(hook_app.calls("flaky")) == 1


async def test_late_event_after_success_runs_nothing(app, client, payment_id):
    await post_event(client, load_event("payment_intent.succeeded"))
    await wait_for_runs(app, all_finished)

    response = await post_event(client, load_event("payment_intent.payment_failed"))

    assert response.json() == {"id": FAILED_ID, "outcome": "processed"}
    await asyncio.sleep(0.3)
    assert {run.callback for run in await hook_runs(app)} == {"payment.succeeded"}
    assert hook_app.calls("record", "payment.failed") == []


def test_retry_delay_doubles_up_to_an_hour():
    assert [retry_delay(10, attempt) for attempt in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert retry_delay(10, 30) == 3600


# The HTTP hook


async def test_http_hook_gets_signed_body(app, client, payment_id, receiver):
    await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    run = by_hook(runs)[SHOP][0]
    assert run.status == "succeeded"
    assert receiver.rejected == 0
    [body] = receiver.bodies
    assert body["hook"] == SHOP
    assert body["run_id"] == run.id
    assert body["attempt"] == 1
    assert body["callback"] == "payment.succeeded"
    assert body["previous_status"] == "pending"
    assert body["rows"]["payment"]["id"] == payment_id
    assert body["rows"]["payment"]["status"] == "succeeded"
    assert body["rows"]["order"]["status"] == "paid"
    assert body["event"]["id"] == SUCCEEDED_ID
    [headers] = receiver.headers
    assert headers["content-type"] == "application/json"
    assert headers["paystream-signature"].startswith("t=")


async def test_http_hook_retried_after_500(app, client, payment_id, receiver):
    receiver.failures_left = 1

    await post_event(client, load_event("payment_intent.succeeded"))

    runs = await wait_for_runs(app, all_finished)
    run = by_hook(runs)[SHOP][0]
    assert run.status == "succeeded"
    assert run.attempts == 2
    attempts = await attempts_of(app, run.id)
    assert [(row.outcome, row.error) for row in attempts] == [
        ("failed", 'HTTP hook shop: responded with 500: {"error":"the shop is restarting"}'),
        ("succeeded", None),
    ]
    assert [body["attempt"] for body in receiver.bodies] == [2]
    assert receiver.bodies[0]["run_id"] == run.id


def test_signature_verification_rejects_tampering():
    from callbacks.http_hooks import signature_header

    body = b'{"callback":"payment.succeeded"}'
    now = int(time.time())
    header = signature_header(body, HOOK_SECRET, now)

    assert verify(body, header, HOOK_SECRET)
    assert not verify(body + b" ", header, HOOK_SECRET)
    assert not verify(body, header, "another secret")
    assert not verify(body, signature_header(body, HOOK_SECRET, now - 301), HOOK_SECRET)


# Refund and subscription callbacks


async def test_refund_succeeded_hooks(app, client, payment_id, receiver):
    await post_event(client, load_event("payment_intent.succeeded"))
    await wait_for_runs(app, all_finished)
    refund = stripe_event(
        "refund.created", amount=1000, payment_intent=INTENT_ID, charge="ch_000000000000000000000000"
    )

    response = await post_event(client, refund)

    assert response.json()["outcome"] == "processed"
    runs = await wait_for_runs(
        app, lambda runs: all_finished(runs) and len(runs) == len(SUCCEEDED_HOOKS) + 2
    )
    refund_runs = [run for run in runs if run.callback == "refund.succeeded"]
    assert sorted(run.hook for run in refund_runs) == sorted([RECORD, SHOP])
    [call] = hook_app.calls("record", "refund.succeeded")
    assert set(call.rows) == {"refund", "payment", "order"}
    assert call.rows["refund"]["amount"] == 1000
    assert call.rows["refund"]["status"] == "succeeded"
    assert call.rows["payment"]["amount_refunded"] == 1000
    assert call.rows["order"]["status"] == "partially_refunded"
    assert call.previous_status == "pending"
    assert receiver.bodies[-1]["callback"] == "refund.succeeded"


async def seed_recurring(app: Starlette, status: str) -> int:
    from decimal import Decimal

    from db.models import RecurringPayment

    async with app.state.services.db.write() as session:
        order = Order(user_id="alice", price=Decimal("15.00"), currency="usd", status="pending")
        session.add(order)
        await session.flush()
        row = RecurringPayment(
            order_id=order.id,
            user_id="alice",
            stripe_subscription_id="sub_000000000000000000000000",
            price_id="price_monthly_1500",
            status=status,
        )
        session.add(row)
        await session.flush()
        return row.id


async def test_subscription_started_then_canceled(app, client):
    recurring_id = await seed_recurring(app, "incomplete")

    await post_event(client, load_event("customer.subscription.created"))
    await wait_for_runs(app, all_finished)
    # The same snapshot again, under another event id, changes nothing.
    again = stripe_event("customer.subscription.created", "evt_subscription_created_again")
    await post_event(client, again)
    deleted = load_event("customer.subscription.deleted")
    # The captures come from unrelated runs; the deletion must be the newest snapshot.
    deleted["created"] = 1700000000
    await post_event(client, deleted)
    runs = await wait_for_runs(app, lambda runs: all_finished(runs) and len(runs) == 2)

    assert [run.callback for run in runs] == ["subscription.started", "subscription.canceled"]
    started, canceled = hook_app.calls("record")
    assert started.rows["recurring_payment"]["id"] == recurring_id
    assert started.rows["recurring_payment"]["status"] == "active"
    assert started.previous_status == "incomplete"
    assert started.event is not None
    assert started.event["type"] == "customer.subscription.created"
    assert canceled.rows["recurring_payment"]["status"] == "canceled"
    assert canceled.previous_status == "active"
    assert set(canceled.rows) == {"recurring_payment", "order"}


async def test_subscription_updated_on_cancel_at_period_end(app, client):
    await seed_recurring(app, "active")
    event = stripe_event(
        "customer.subscription.updated", cancel_at_period_end=True, canceled_at=1648320106
    )

    await post_event(client, event)

    runs = await wait_for_runs(app, all_finished)
    assert [run.callback for run in runs] == ["subscription.updated"]
    [call] = hook_app.calls("record")
    assert call.rows["recurring_payment"]["cancel_at_period_end"] is True
    assert call.previous_status == "active"


async def test_renewal_charged_hook(app, client):
    recurring_id = await seed_recurring(app, "active")
    event = load_event("invoice.payment_failed")
    event.update(id="evt_renewal_paid_hooks", type="invoice.paid")
    event["data"]["object"].update(
        id="in_renewal_hooks_01",
        billing_reason="subscription_cycle",
        status="paid",
        amount_paid=1500,
        currency="usd",
    )
    event["data"]["object"]["parent"]["subscription_details"]["subscription"] = (
        "sub_000000000000000000000000"
    )

    response = await post_event(client, event)
    await post_event(client, event)

    assert response.json()["outcome"] == "processed"
    runs = await wait_for_runs(app, all_finished)
    assert [run.callback for run in runs] == ["renewal.charged"]
    [call] = hook_app.calls("record")
    assert call.rows["recurring_payment"]["id"] == recurring_id
    assert call.rows["order"]["kind"] == "renewal"
    assert call.rows["order"]["stripe_invoice_id"] == "in_renewal_hooks_01"
    assert call.rows["payment"]["amount"] == 1500
    assert call.rows["payment"]["status"] == "succeeded"
    assert call.previous_status is None


# Admins see and rerun hook runs


async def test_hook_runs_admin_only(app, client, payment_id):
    await post_event(client, load_event("payment_intent.succeeded"))
    await wait_for_runs(app, all_finished)

    as_user = await graphql(client, HOOK_RUNS)
    as_admin = await graphql(client, HOOK_RUNS, user="ops", role="admin")
    anonymous = await graphql(client, HOOK_RUNS, user=None)

    assert error_code(as_user) == "FORBIDDEN"
    assert as_user["errors"][0]["message"] == "Only an admin may read hook runs."
    assert error_code(anonymous) == "UNAUTHENTICATED"
    assert "errors" not in as_admin
    runs = as_admin["data"]["hookRuns"]
    assert sorted(run["hook"] for run in runs) == sorted(SUCCEEDED_HOOKS)
    assert [run["id"] for run in runs] == sorted((run["id"] for run in runs), reverse=True)
    for run in runs:
        assert run["callback"] == "payment.succeeded"
        assert run["stripeEventId"] == SUCCEEDED_ID
        assert run["status"] == "succeeded"
        assert run["attempts"] == 1
        assert [attempt["outcome"] for attempt in run["history"]] == ["succeeded"]


async def test_hook_runs_filter_and_limit(app, client, payment_id):
    hook_app.STATE["failures_left"] = 100
    await post_event(client, load_event("payment_intent.succeeded"))
    await wait_for_runs(app, all_finished)

    failed = await graphql(client, HOOK_RUNS, {"status": "failed"}, user="ops", role="admin")
    limited = await graphql(client, HOOK_RUNS, {"limit": 2}, user="ops", role="admin")
    invalid = await graphql(client, HOOK_RUNS, {"status": "done"}, user="ops", role="admin")
    too_many = await graphql(client, HOOK_RUNS, {"limit": 501}, user="ops", role="admin")

    [run] = failed["data"]["hookRuns"]
    assert run["hook"] == FLAKY
    assert run["lastError"] == "RuntimeError: the warehouse is down"
    assert [attempt["error"] for attempt in run["history"]] == [
        "RuntimeError: the warehouse is down"
    ] * 3
    assert len(limited["data"]["hookRuns"]) == 2
    assert error_code(invalid) == "BAD_USER_INPUT"
    assert invalid["errors"][0]["message"] == (
        "status 'done' is not one of pending, running, succeeded, failed."
    )
    assert error_code(too_many) == "BAD_USER_INPUT"


async def test_rerun_hook_runs_again(app, client, payment_id):
    hook_app.STATE["failures_left"] = 100
    await post_event(client, load_event("payment_intent.succeeded"))
    runs = await wait_for_runs(app, all_finished)
    flaky = by_hook(runs)[FLAKY][0]
    assert flaky.status == "failed"
    hook_app.STATE["failures_left"] = 0

    as_user = await graphql(client, RERUN, {"id": flaky.id})
    rerun = await graphql(client, RERUN, {"id": flaky.id}, user="ops", role="admin")

    assert error_code(as_user) == "FORBIDDEN"
    assert "errors" not in rerun
    assert rerun["data"]["rerunHook"]["status"] == "pending"
    assert rerun["data"]["rerunHook"]["maxAttempts"] == 6
    runs = await wait_for_runs(app, all_finished)
    flaky = by_hook(runs)[FLAKY][0]
    assert flaky.status == "succeeded"
    assert flaky.attempts == 4
    assert flaky.last_error is None
    assert [row.outcome for row in await attempts_of(app, flaky.id)] == [
        "failed", "failed", "failed", "succeeded",
    ]
    [call] = hook_app.calls("flaky")
    assert call.attempt == 4
    assert call.run_id == flaky.id
    assert await payment_state(app, payment_id) == ("succeeded", "paid")


async def test_rerun_hook_rejects_pending_and_unknown(app, client, payment_id):
    hook_app.STATE["slow_seconds"] = 3.0
    await post_event(client, load_event("payment_intent.succeeded"))
    runs = await wait_for_runs(app, lambda runs: len(runs) == len(SUCCEEDED_HOOKS))
    slow = by_hook(runs)[SLOW][0]

    busy = await graphql(client, RERUN, {"id": slow.id}, user="ops", role="admin")
    missing = await graphql(client, RERUN, {"id": 999999}, user="ops", role="admin")

    assert error_code(busy) == "CONFLICT"
    assert busy["errors"][0]["message"].startswith(f"hook run {slow.id} is ")
    assert error_code(missing) == "NOT_FOUND"
    assert missing["errors"][0]["message"] == "hook run 999999 does not exist."


# Several processes, and runs a stopped process left behind


async def test_two_runners_run_each_hook_once(settings: Settings):
    # Two apps on one database stand for two processes; both runners claim from one outbox.
    async with running_app(settings) as first, running_app(settings) as second:
        payment_ids = [
            (await seed_payment(first, intent_id=f"pi_two_runners_{index:02d}"))[1]
            for index in range(6)
        ]
        for index, payment_id in enumerate(payment_ids):
            app = first if index % 2 else second
            async with app.state.services.db.write() as session:
                payment = await session.get(Payment, payment_id)
                intent = {"id": f"pi_two_runners_{index:02d}", "status": "succeeded", "amount": 2000}
                await apply_payment_intent(session, payment, intent)

        runs = await wait_for_runs(
            first, lambda runs: len(runs) == 6 * len(SUCCEEDED_HOOKS) and all_finished(runs)
        )

    assert {run.status for run in runs} == {"succeeded"}
    assert {run.attempts for run in runs} == {1}
    assert len(hook_app.calls("record")) == 6
    assert sorted(call.rows["payment"]["id"] for call in hook_app.calls("record")) == payment_ids
    assert len(hook_app.calls("flaky")) == 6


async def test_interrupted_run_is_retried(app, payment_id):
    # A process that stopped mid-attempt leaves its run `running` with an open attempt.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    body = {"callback": "payment.failed", "rows": {"payment": None, "order": None}, "event": None}
    async with app.state.services.db.write() as session:
        payload = HookPayload(body=json.dumps(body))
        session.add(payload)
        await session.flush()
        run = HookRun(
            payload_id=payload.id,
            hook=RECORD,
            callback="payment.failed",
            status="running",
            attempts=1,
            max_attempts=3,
            next_attempt_at=past,
            locked_until=past,
        )
        session.add(run)
        await session.flush()
        session.add(HookAttempt(run_id=run.id, attempt=1, started_at=past))
        run_id = run.id
    app.state.hook_runner.wake()

    runs = await wait_for_runs(app, all_finished)

    assert [(run.id, run.status, run.attempts) for run in runs] == [(run_id, "succeeded", 2)]
    attempts = await attempts_of(app, run_id)
    assert [(row.attempt, row.outcome) for row in attempts] == [(1, "failed"), (2, "succeeded")]
    assert attempts[0].error == (
        "interrupted: the process running this attempt stopped before it finished"
    )
    [call] = hook_app.calls("record")
    assert call.attempt == 2


# Configuration


def test_hook_rejects_unknown_callback():
    with pytest.raises(ValueError, match=r"callback 'payment.done' is not one of payment.succeeded"):
        hooks.hook("payment.done")


def test_hooks_file_rejects_unknown_callback(tmp_path):
    path = tmp_path / "hooks.toml"
    path.write_text(
        '[[http_hooks]]\nname = "shop"\nurl = "http://127.0.0.1:9/hooks"\nsecret = "s"\n'
        'callbacks = ["refund.done"]\n'
    )
    settings = make_settings("sqlite+aiosqlite:///unused.db", paystream_hooks_file=str(path))

    with pytest.raises(HookConfigError, match=r"http_hooks\[0\] \(shop\): callback 'refund.done'"):
        load_hook_config(settings)


def test_hooks_file_json_and_secret_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARGES_SECRETS", "whsec_old, whsec_new")
    path = tmp_path / "hooks.json"
    path.write_text(
        json.dumps(
            {
                "endpoints": [
                    {"name": "charges", "secret_env": "CHARGES_SECRETS", "events": ["charge.failed"]}
                ]
            }
        )
    )
    settings = make_settings("sqlite+aiosqlite:///unused.db", paystream_hooks_file=str(path))

    config = load_hook_config(settings)

    assert config.hooks == {}
    assert config.endpoints["charges"].secrets == ("whsec_old", "whsec_new")
    assert config.endpoints["charges"].events == frozenset({"charge.failed"})


def test_hooks_module_must_import():
    settings = make_settings("sqlite+aiosqlite:///unused.db", paystream_hooks="tests.no_such_hooks")

    with pytest.raises(HookConfigError, match="PAYSTREAM_HOOKS: module 'tests.no_such_hooks'"):
        load_hook_config(settings)


def test_hooks_module_functions_found():
    settings = make_settings("sqlite+aiosqlite:///unused.db", paystream_hooks="tests.hook_app")

    config = load_hook_config(settings)

    assert set(config.hooks) == {RECORD, SLOW, FLAKY, "tests.hook_app.charge_failed"}
    assert config.hook_names("payment.succeeded") == [RECORD, SLOW, FLAKY]
    assert config.hook_names("stripe:charge.failed") == ["tests.hook_app.charge_failed"]
    assert config.hook_names("renewal.charged") == [RECORD]
