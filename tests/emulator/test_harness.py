"""Tests that the localstripe harness starts, serves the SDK, signs webhooks and shims Prices."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import stripe
from aiohttp import web

from .harness import LocalStripe, LocalStripeError, running_localstripe

WEBHOOK_SECRET = "whsec_paystream_harness"
WEBHOOK_TIMEOUT_SECONDS = 5.0
# localstripe 1.15.10 hard-codes this path for its pickled store.
LOCALSTRIPE_PICKLE = Path("/tmp/localstripe.pickle")
VISA_3DS_REQUIRED = "4000002500003155"


@dataclass(frozen=True)
class Delivery:
    payload: bytes
    signature: str
    received_at: float


class WebhookReceiver:
    """An HTTP endpoint on 127.0.0.1 that queues each webhook delivery it receives."""

    def __init__(self) -> None:
        self.url = ""
        self.deliveries: asyncio.Queue[Delivery] = asyncio.Queue()

    async def handle(self, request: web.Request) -> web.Response:
        delivery = Delivery(
            payload=await request.read(),
            signature=request.headers.get("Stripe-Signature", ""),
            received_at=time.monotonic(),
        )
        await self.deliveries.put(delivery)
        return web.Response()

    async def wait_for_event(self, event_type: str, object_id: str) -> Delivery:
        """Return the first delivery of `event_type` about `object_id`, skipping others.

        Other deliveries come from earlier tests, because localstripe sends each event to every
        target registered when it sends, about 1 s after the event.
        """
        async with asyncio.timeout(WEBHOOK_TIMEOUT_SECONDS):
            while True:
                delivery = await self.deliveries.get()
                event = json.loads(delivery.payload)
                if event["type"] == event_type and event["data"]["object"]["id"] == object_id:
                    return delivery


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    """A server of this module's own, in place of the session one, because a test resets it."""
    with running_localstripe() as server:
        yield server


@pytest.fixture
async def stripe_client(localstripe: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.HTTPXClient()
    client = stripe.StripeClient(
        localstripe.secret_key,
        base_addresses={"api": localstripe.url},
        http_client=http_client,
    )
    try:
        yield client
    finally:
        await http_client.close_async()


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    app = web.Application()
    app.router.add_post("/webhooks", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/webhooks"
        yield receiver
    finally:
        await runner.cleanup()


async def create_card(client: stripe.StripeClient, number: str) -> stripe.PaymentMethod:
    return await client.v1.payment_methods.create_async(
        params={
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        }
    )


async def create_monthly_price(client: stripe.StripeClient, unit_amount: int) -> stripe.Price:
    product = await client.v1.products.create_async(params={"name": "Pro"})
    return await client.v1.prices.create_async(
        params={
            "product": product.id,
            "unit_amount": unit_amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )


def test_url_is_loopback_with_real_port(localstripe: LocalStripe) -> None:
    match = re.fullmatch(r"http://127\.0\.0\.1:(\d+)", localstripe.url)

    assert match is not None
    assert int(match.group(1)) > 0


def test_stop_exits_cleanly() -> None:
    server = LocalStripe()
    server.start()
    url = server.url

    assert server.stop() == 0
    assert server.stop() is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(url)


async def test_store_stays_off_disk(stripe_client: stripe.StripeClient) -> None:
    before = LOCALSTRIPE_PICKLE.stat() if LOCALSTRIPE_PICKLE.exists() else None

    await stripe_client.v1.customers.create_async(params={"email": "disk@example.com"})

    after = LOCALSTRIPE_PICKLE.stat() if LOCALSTRIPE_PICKLE.exists() else None
    assert after == before


async def test_sdk_confirm_succeeds(stripe_client: stripe.StripeClient) -> None:
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 2000, "currency": "usd", "payment_method": "pm_card_visa"}
    )
    confirmed = await stripe_client.v1.payment_intents.confirm_async(created.id)

    assert created.status == "requires_confirmation"
    assert confirmed.status == "succeeded"
    assert confirmed.amount == 2000


async def test_browser_confirm_succeeds(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 1500, "currency": "eur"}
    )
    assert created.client_secret is not None

    confirmed = localstripe.confirm_payment_intent_as_browser(created.id, created.client_secret)
    retrieved = await stripe_client.v1.payment_intents.retrieve_async(created.id)

    assert created.status == "requires_payment_method"
    assert confirmed["status"] == "succeeded"
    assert retrieved.status == "succeeded"


async def test_browser_confirm_decline_raises(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 1500, "currency": "eur"}
    )
    assert created.client_secret is not None

    with pytest.raises(LocalStripeError) as raised:
        localstripe.confirm_payment_intent_as_browser(
            created.id, created.client_secret, payment_method="pm_card_chargeCustomerFail"
        )
    retrieved = await stripe_client.v1.payment_intents.retrieve_async(created.id)

    assert raised.value.status_code == 402
    assert raised.value.error["code"] == "card_declined"
    assert retrieved.status == "requires_payment_method"


async def test_browser_confirm_retry_after_decline(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 1500, "currency": "eur"}
    )
    assert created.client_secret is not None

    with pytest.raises(LocalStripeError):
        localstripe.confirm_payment_intent_as_browser(
            created.id, created.client_secret, payment_method="pm_card_chargeCustomerFail"
        )
    retried = localstripe.confirm_payment_intent_as_browser(created.id, created.client_secret)

    assert retried["status"] == "succeeded"
    assert retried["last_payment_error"] is None
    assert retried["latest_charge"]["status"] == "succeeded"


async def test_browser_confirm_wrong_secret_raises(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 1500, "currency": "eur"}
    )

    expected_message = f"client_secret does not belong to payment intent {created.id}"
    with pytest.raises(ValueError, match=expected_message):
        localstripe.confirm_payment_intent_as_browser(created.id, "pi_other_secret_x")
    retrieved = await stripe_client.v1.payment_intents.retrieve_async(created.id)

    assert retrieved.status == "requires_payment_method"


async def test_3ds_card_needs_authentication(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    card = await create_card(stripe_client, VISA_3DS_REQUIRED)
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 3000, "currency": "usd"}
    )
    assert created.client_secret is not None

    confirmed = localstripe.confirm_payment_intent_as_browser(
        created.id, created.client_secret, payment_method=card.id
    )
    authenticated = localstripe.authenticate_payment_intent(created.id, created.client_secret)

    assert confirmed["status"] == "requires_action"
    assert authenticated["status"] == "succeeded"


async def test_3ds_failed_authentication(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    card = await create_card(stripe_client, VISA_3DS_REQUIRED)
    created = await stripe_client.v1.payment_intents.create_async(
        params={"amount": 3000, "currency": "usd", "payment_method": card.id, "confirm": True}
    )
    assert created.client_secret is not None

    failed = localstripe.authenticate_payment_intent(
        created.id, created.client_secret, success=False
    )

    assert created.status == "requires_action"
    assert failed["status"] == "requires_payment_method"
    assert failed["last_payment_error"]["code"] == "payment_intent_authentication_failure"


async def test_succeeded_webhook_is_signed(
    localstripe: LocalStripe,
    stripe_client: stripe.StripeClient,
    webhook_receiver: WebhookReceiver,
) -> None:
    localstripe.register_webhook(
        "harness-test", webhook_receiver.url, WEBHOOK_SECRET, events=["payment_intent.succeeded"]
    )

    payment_intent = await stripe_client.v1.payment_intents.create_async(
        params={
            "amount": 2500,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    confirmed_at = time.monotonic()
    delivery = await webhook_receiver.wait_for_event("payment_intent.succeeded", payment_intent.id)
    event = stripe.Webhook.construct_event(delivery.payload, delivery.signature, WEBHOOK_SECRET)

    assert delivery.received_at - confirmed_at > 0.9
    assert event.type == "payment_intent.succeeded"
    assert isinstance(event.data.object, stripe.PaymentIntent)
    assert event.data.object.id == payment_intent.id
    assert event.data.object.status == "succeeded"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(delivery.payload, delivery.signature, "whsec_wrong")


async def test_recurring_price_round_trip(stripe_client: stripe.StripeClient) -> None:
    created = await create_monthly_price(stripe_client, unit_amount=2500)
    retrieved = await stripe_client.v1.prices.retrieve_async(created.id)

    assert isinstance(created, stripe.Price)
    assert created.id.startswith("price_")
    assert retrieved.id == created.id
    assert retrieved.unit_amount == 2500
    assert retrieved.currency == "usd"
    assert retrieved.type == "recurring"
    assert retrieved.recurring is not None
    assert retrieved.recurring.interval == "month"
    assert retrieved.recurring.interval_count == 1


async def test_one_time_price_is_rejected(stripe_client: stripe.StripeClient) -> None:
    product = await stripe_client.v1.products.create_async(params={"name": "Setup fee"})

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await stripe_client.v1.prices.create_async(
            params={"product": product.id, "unit_amount": 900, "currency": "usd"}
        )

    assert raised.value.http_status == 400
    assert raised.value.user_message == (
        "Only recurring prices are supported by this emulator: pass recurring[interval]."
    )


async def test_unknown_price_is_not_found(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as raised:
        await stripe_client.v1.prices.retrieve_async("price_missing")

    assert raised.value.http_status == 404
    assert raised.value.user_message == "No such price: 'price_missing'"


async def test_subscription_items_take_prices(stripe_client: stripe.StripeClient) -> None:
    monthly = await create_monthly_price(stripe_client, unit_amount=2500)
    yearly = await stripe_client.v1.prices.create_async(
        params={
            "product_data": {"name": "Pro yearly"},
            "unit_amount": 25000,
            "currency": "usd",
            "recurring": {"interval": "year"},
        }
    )
    card = await create_card(stripe_client, "4242424242424242")
    customer = await stripe_client.v1.customers.create_async(params={"email": "sub@example.com"})
    await stripe_client.v1.payment_methods.attach_async(card.id, params={"customer": customer.id})
    await stripe_client.v1.customers.update_async(
        customer.id, params={"invoice_settings": {"default_payment_method": card.id}}
    )

    created = await stripe_client.v1.subscriptions.create_async(
        params={"customer": customer.id, "items": [{"price": monthly.id}]}
    )
    item = created["items"].data[0]
    updated = await stripe_client.v1.subscriptions.update_async(
        created.id, params={"items": [{"id": item.id, "price": yearly.id}]}
    )

    assert created.status == "active"
    assert item.price.id == monthly.id
    assert item.price.unit_amount == 2500
    assert updated["items"].data[0].price.id == yearly.id
    assert updated["items"].data[0].price.recurring.interval == "year"


async def test_reset_deletes_objects(
    localstripe: LocalStripe, stripe_client: stripe.StripeClient
) -> None:
    customer = await stripe_client.v1.customers.create_async(params={"email": "reset@example.com"})

    localstripe.reset()

    with pytest.raises(stripe.InvalidRequestError) as raised:
        await stripe_client.v1.customers.retrieve_async(customer.id)
    assert raised.value.http_status == 404
