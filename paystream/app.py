"""Application assembly: the Starlette app, its routes, and what starts and stops with it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from callbacks.hook_config import load_hook_config
from callbacks.hook_runner import HookRunner
from callbacks.routes import routes as webhook_routes
from db.broadcast import broadcast_connected, create_broadcast
from db.engine import Database
from db.migrate import upgrade_async
from db.publish import Publisher
from gql.app import PaystreamGraphQL
from gql.live import LiveHub
from gql.read_cache import ReadCache
from paystream.server import OpenWebSockets, TrackWebSockets
from paystream.services import Services
from paystream.settings import Settings, get_settings
from paystream.stripe_api import StripeGateway

logger = logging.getLogger("paystream")


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app; the database is migrated and the broadcaster connected at start-up."""
    settings = settings or get_settings()
    broadcast = create_broadcast(settings.broadcast_url)
    read_cache = ReadCache(available=lambda: broadcast_connected(broadcast))
    prefix = settings.broadcast_channel_prefix
    db = Database(settings.database_url, Publisher(broadcast, prefix, read_cache.clear))
    hooks = load_hook_config(settings)
    services = Services(settings=settings, db=db, stripe=StripeGateway(settings), hooks=hooks)
    hook_runner = HookRunner(db, hooks, settings)
    hub = LiveHub(broadcast, prefix, read_cache.clear)
    graphql = PaystreamGraphQL(services, hub, read_cache)
    websockets = OpenWebSockets()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await upgrade_async(db.url)
        await broadcast.connect()
        await hub.start()
        if not settings.stripe_configured:
            logger.warning("STRIPE_SECRET_KEY is not set: pay and refund are unavailable")
        if not settings.stripe_webhook_secret:
            logger.warning("STRIPE_WEBHOOK_SECRET is not set: every webhook will be rejected")
        if hooks.hooks:
            await hook_runner.start()
        try:
            yield
        finally:
            await hook_runner.stop()
            await graphql.schema.shared_streams.close()  # type: ignore[attr-defined]
            await hub.stop()
            await broadcast.disconnect()
            await services.stripe.close()
            await db.dispose()

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
            *webhook_routes,
        ],
        lifespan=lifespan,
        middleware=[Middleware(TrackWebSockets, registry=websockets)],
    )
    app.state.services = services
    app.state.hub = hub
    app.state.hook_runner = hook_runner
    app.state.graphql = graphql
    app.state.websockets = websockets
    return app
