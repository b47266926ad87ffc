"""Running the app under uvicorn, with a shutdown that closes WebSockets as going away.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish and closes
WebSockets with 1012 (service restart). paystream first closes them with 1001 (going away),
so clients reconnect to another process behind the load balancer.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from typing import Any

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("paystream")

GOING_AWAY = 1001
# Allocations between young-generation collections; Python's default is 700.
GC_THRESHOLD = 20_000


class OpenWebSockets:
    """The `send` of each open WebSocket, so that shutdown can close them all."""

    def __init__(self) -> None:
        self.sends: set[Send] = set()

    async def close_all(self, reason: str) -> None:
        message: Message = {"type": "websocket.close", "code": GOING_AWAY, "reason": reason}
        for send in list(self.sends):
            try:
                await send(message)
            except Exception:  # noqa: BLE001  # a socket already gone needs no close
                logger.debug("closing a WebSocket on shutdown failed", exc_info=True)


class TrackWebSockets:
    """ASGI middleware recording open WebSockets in an `OpenWebSockets`."""

    def __init__(self, app: ASGIApp, registry: OpenWebSockets) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        self.registry.sends.add(send)
        try:
            await self.app(scope, receive, send)
        finally:
            self.registry.sends.discard(send)


class PaystreamServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # What exists after start-up lives as long as the process: the collector need not
        # scan it again, and a higher first threshold makes the full collections, which
        # pause every open socket at once, rarer.
        gc.collect()
        gc.freeze()
        gc.set_threshold(GC_THRESHOLD, 20, 20)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        registry = _registry(self.config)
        if registry is not None and registry.sends:
            logger.info("closing %d WebSocket(s) with 1001", len(registry.sends))
            await asyncio.wait_for(registry.close_all("server shutting down"), timeout=5)
        await super().shutdown(sockets)


def _registry(config: uvicorn.Config) -> OpenWebSockets | None:
    app: Any = getattr(config, "loaded_app", None)
    # uvicorn wraps the app in its own middleware; follow `.app` down to the Starlette app.
    while app is not None:
        registry = getattr(getattr(app, "state", None), "websockets", None)
        if isinstance(registry, OpenWebSockets):
            return registry
        app = getattr(app, "app", None)
    return None


def run(config: uvicorn.Config) -> None:
    """Serve with `config.workers` processes sharing one listening socket."""
    server = PaystreamServer(config)
    if config.workers > 1:
        listener = config.bind_socket()
        Multiprocess(config, target=server.run, sockets=[listener]).run()
    else:
        server.run()
