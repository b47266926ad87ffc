"""The bare Starlette apps that paystream's figures are measured against.

Each factory builds the least app that does the same job as the paystream path it stands for,
and bench/servers.py serves it under uvicorn with the options `paystream serve` uses. They
read their configuration from the same environment variables as paystream.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import strawberry
import stripe
from broadcaster import Broadcast
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache

from callbacks.signature import SignatureError, verify

FANOUT_CHANNEL = "bench.fanout"
# The values paystream's StripeGateway uses, so both sides make the same SDK calls alike.
STRIPE_TIMEOUT_SECONDS = 30
STRIPE_MAX_NETWORK_RETRIES = 1


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_webhook_app() -> Starlette:
    """Read the body and check its Stripe-Signature, as paystream does before anything else."""
    secrets = [os.environ["STRIPE_WEBHOOK_SECRET"]]

    async def webhook(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            verify(payload, request.headers.get("stripe-signature"), secrets, tolerance=300)
        except SignatureError as error:
            return JSONResponse({"error": str(error)}, 400)
        return JSONResponse({"outcome": "verified"})

    return Starlette(
        routes=[Route("/health", health), Route("/webhooks/stripe", webhook, methods=["POST"])]
    )


def create_fanout_app() -> Starlette:
    """Forward every message POSTed to /publish to each WebSocket on /ws, via broadcaster.

    Each socket has its own broadcaster subscription, served by the sender and receiver task
    pair of broadcaster's own Starlette example. The socket sends the text "ready" once its
    subscription is registered.
    """
    broadcast = Broadcast("memory://")

    async def publish(request: Request) -> PlainTextResponse:
        await broadcast.publish(FANOUT_CHANNEL, (await request.body()).decode())
        return PlainTextResponse("published")

    async def send_messages(websocket: WebSocket) -> None:
        async with broadcast.subscribe(FANOUT_CHANNEL) as subscriber:
            await websocket.send_text("ready")
            while True:
                event = await subscriber.get()
                await websocket.send_text(event.message)

    async def fanout(websocket: WebSocket) -> None:
        await websocket.accept()
        async with anyio.create_task_group() as tasks:

            async def receive_until_closed() -> None:
                async for _ in websocket.iter_text():
                    pass
                tasks.cancel_scope.cancel()

            tasks.start_soon(receive_until_closed)
            await send_messages(websocket)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with broadcast:
            yield

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/publish", publish, methods=["POST"]),
            WebSocketRoute("/ws", fanout),
        ],
        lifespan=lifespan,
    )


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


def create_graphql_app() -> Starlette:
    """Strawberry with the parser and validation caches paystream's schema also uses."""
    schema = strawberry.Schema(
        query=Query,
        extensions=[lambda: ParserCache(maxsize=1024), lambda: ValidationCache(maxsize=1024)],
    )
    graphql = GraphQL(schema, graphql_ide=None)
    return Starlette(
        routes=[Route("/health", health), Route("/graphql", graphql, methods=["GET", "POST"])]
    )


def create_pay_app() -> Starlette:
    """Create and confirm a PaymentIntent with the Stripe SDK, configured as paystream does."""
    http_client = stripe.HTTPXClient(timeout=STRIPE_TIMEOUT_SECONDS)
    client = stripe.StripeClient(
        os.environ["STRIPE_SECRET_KEY"],
        base_addresses={"api": os.environ["STRIPE_API_BASE"]},
        http_client=http_client,
        max_network_retries=STRIPE_MAX_NETWORK_RETRIES,
    )
    counter = 0

    async def pay(request: Request) -> JSONResponse:
        nonlocal counter
        counter += 1
        wanted = await request.json()
        params: dict[str, Any] = {
            "amount": wanted["amount"],
            "currency": wanted["currency"],
            "metadata": {"orderId": str(counter), "paymentId": str(counter)},
            "payment_method_types": ["card"],
            "payment_method": wanted["paymentMethodId"],
        }
        intent = await client.v1.payment_intents.create_async(
            params=params,  # type: ignore[arg-type]  # a plain dict, as paystream passes it
            options={"idempotency_key": f"baseline-{os.getpid()}-{counter}"},
        )
        intent = await client.v1.payment_intents.confirm_async(intent.id)
        return JSONResponse({"id": intent.id, "status": intent.status})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            # stripe 16 ships close_async without annotations.
            await http_client.close_async()  # type: ignore[no-untyped-call]

    return Starlette(
        routes=[Route("/health", health), Route("/pay", pay, methods=["POST"])],
        lifespan=lifespan,
    )
