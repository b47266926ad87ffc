"""GraphQL documents, helpers and a recording Stripe proxy for the order, pay and refund tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paystream.settings import Settings
from tests.conftest import graphql, make_settings, running_app, uvicorn_server
from tests.emulator.harness import LocalStripe

ADMIN_USER = "root"
# localstripe's test payment method ids: the first is charged, the second is declined with
# `card_declined`.
VISA = "pm_card_visa"
DECLINING_CARD = "pm_card_chargeCustomerFail"

CREATE_ORDER = """
mutation($price: Decimal!, $currency: String!, $metadata: JSON, $userId: String) {
  createOrder(price: $price, currency: $currency, metadata: $metadata, userId: $userId) {
    id userId price currency status kind metadata
  }
}
"""
PAY = """
mutation($orderId: Int!, $currency: String!, $amount: Int!, $paymentMethodId: String) {
  pay(orderId: $orderId, currency: $currency, amount: $amount,
      paymentMethodId: $paymentMethodId) {
    id orderId amount currency status stripePaymentIntentId clientSecret amountRefunded
    failureCode failureMessage order { status }
  }
}
"""
REFUND = """
mutation($paymentId: Int!, $refundAmount: Int!) {
  refund(paymentId: $paymentId, refundAmount: $refundAmount) {
    id paymentId orderId amount currency status stripeRefundId requestedBy order { status }
  }
}
"""
ORDERS = "query { orders { id userId price currency status } }"
PAYMENTS = "query { payments { id orderId status amount amountRefunded stripePaymentIntentId } }"
REFUNDS = "query { refunds { id paymentId status amount stripeRefundId } }"


def emulator_settings(database_url: str, localstripe: LocalStripe, api_base: str = "") -> Settings:
    """Settings that send paystream's Stripe calls to localstripe, or to `api_base`."""
    return make_settings(
        database_url,
        stripe_secret_key=localstripe.secret_key,
        stripe_api_base=api_base or localstripe.url,
        stripe_publishable_key=localstripe.publishable_key,
    )


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Start the app with `settings` and yield an ASGI client for it."""
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            yield http


async def create_order(
    client: httpx.AsyncClient,
    price: str = "100.00",
    currency: str = "usd",
    *,
    user: str = "alice",
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Create an order for `user` and return it, failing the test on any GraphQL error."""
    variables = {"price": price, "currency": currency, "metadata": metadata}
    body = await graphql(client, CREATE_ORDER, variables, user=user)
    assert "errors" not in body, body
    order: dict[str, Any] = body["data"]["createOrder"]
    return order


async def pay(
    client: httpx.AsyncClient,
    order_id: int,
    amount: int,
    currency: str = "usd",
    payment_method_id: str | None = None,
    *,
    user: str = "alice",
) -> dict[str, Any]:
    """Send the pay mutation and return the whole response body."""
    variables = {
        "orderId": order_id,
        "currency": currency,
        "amount": amount,
        "paymentMethodId": payment_method_id,
    }
    return await graphql(client, PAY, variables, user=user)


async def refund(client: httpx.AsyncClient, payment_id: int, amount: int) -> dict[str, Any]:
    """Send the refund mutation as an admin and return the whole response body."""
    variables = {"paymentId": payment_id, "refundAmount": amount}
    return await graphql(client, REFUND, variables, user=ADMIN_USER, role="admin")


async def paid_order(
    client: httpx.AsyncClient, price: str = "100.00", amount: int = 10000
) -> dict[str, Any]:
    """Create a USD order, pay it with a card that succeeds and return the payment."""
    order = await create_order(client, price)
    body = await pay(client, order["id"], amount, payment_method_id=VISA)
    assert "errors" not in body, body
    payment: dict[str, Any] = body["data"]["pay"]
    assert payment["status"] == "succeeded", payment
    return payment


async def list_rows(client: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    """Run a list query as an admin, who may read every row, and return its rows."""
    body = await graphql(client, query, user=ADMIN_USER, role="admin")
    assert "errors" not in body, body
    rows: list[dict[str, Any]] = next(iter(body["data"].values()))
    return rows


def error_message(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or []
    return errors[0].get("message") if errors else None


async def read_stripe_object(localstripe: LocalStripe, path: str) -> dict[str, Any]:
    """GET a Stripe API path from localstripe with the secret key, e.g. a payment intent."""
    headers = {"Authorization": f"Bearer {localstripe.secret_key}"}
    async with httpx.AsyncClient(base_url=localstripe.url, headers=headers) as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def count_payment_intents(localstripe: LocalStripe) -> int:
    """Count the payment intents localstripe stores, from the `total_count` of its list."""
    listing = await read_stripe_object(localstripe, "/v1/payment_intents?limit=1")
    return int(listing["total_count"])


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    idempotency_key: str | None


class RecordingStripeProxy:
    """A stand-in Stripe API that forwards each request to localstripe and records it.

    localstripe ignores the Idempotency-Key header, so only a recorder in front of it can
    show which key paystream sent with each call.
    """

    def __init__(self, upstream: str) -> None:
        self.url = ""
        self.requests: list[RecordedRequest] = []
        self._upstream = httpx.AsyncClient(base_url=upstream)
        self.app = Starlette(
            routes=[Route("/{path:path}", self._forward, methods=["GET", "POST", "DELETE"])]
        )

    def idempotency_keys(self, method: str, path: str) -> list[str | None]:
        """The keys sent with each recorded request for `method` and `path`, in order."""
        return [
            recorded.idempotency_key
            for recorded in self.requests
            if recorded.method == method and recorded.path == path
        ]

    async def _forward(self, request: Request) -> Response:
        self.requests.append(
            RecordedRequest(
                request.method, request.url.path, request.headers.get("idempotency-key")
            )
        )
        forwarded = {
            name: value
            for name, value in request.headers.items()
            if name in ("authorization", "content-type", "idempotency-key", "stripe-version")
        }
        answer = await self._upstream.request(
            request.method,
            request.url.path,
            params=request.url.query,
            content=await request.body(),
            headers=forwarded,
        )
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
        )

    async def close(self) -> None:
        await self._upstream.aclose()


@contextlib.asynccontextmanager
async def recording_proxy(localstripe: LocalStripe) -> AsyncIterator[RecordingStripeProxy]:
    """Serve a `RecordingStripeProxy` in front of localstripe on a free 127.0.0.1 port."""
    proxy = RecordingStripeProxy(localstripe.url)
    try:
        async with uvicorn_server(proxy.app) as url:
            proxy.url = url
            yield proxy
    finally:
        await proxy.close()
