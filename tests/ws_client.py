"""A small GraphQL-over-WebSocket client speaking graphql-transport-ws or the legacy graphql-ws."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


class GraphQLWebSocket:
    def __init__(self, url: str, protocol: str = TRANSPORT_WS) -> None:
        self.url = url.replace("http://", "ws://", 1) + "/graphql"
        self.protocol = protocol
        self.socket: Any = None
        self._next_id = 0

    async def connect(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open the socket and send connection_init; return the server's first reply."""
        self.socket = await websockets.connect(self.url, subprotocols=[self.protocol])
        await self.send({"type": "connection_init", "payload": payload or {}})
        return await self.receive()

    async def send(self, message: dict[str, Any]) -> None:
        await self.socket.send(json.dumps(message))

    async def receive(self, timeout: float = 10) -> dict[str, Any]:
        while True:
            message: dict[str, Any] = json.loads(await asyncio.wait_for(self.socket.recv(), timeout))
            if message.get("type") not in ("ka", "ping", "pong"):
                return message

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> str:
        self._next_id += 1
        operation_id = str(self._next_id)
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        payload = {"query": query, "variables": variables or {}}
        await self.send({"id": operation_id, "type": kind, "payload": payload})
        return operation_id

    async def next_data(self, timeout: float = 10) -> dict[str, Any]:
        """The data of the next result message; fails on an error message."""
        message = await self.receive(timeout)
        if message["type"] not in ("next", "data"):
            raise AssertionError(f"expected a result, got {message}")
        payload: dict[str, Any] = message["payload"]
        if payload.get("errors"):
            raise AssertionError(f"subscription failed: {payload['errors']}")
        data: dict[str, Any] = payload["data"]
        return data

    async def close(self) -> None:
        if self.socket is not None:
            await self.socket.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
