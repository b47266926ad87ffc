"""A lean WebSocket client on the websockets package's sans-I/O protocol.

Each message is stamped with `time.perf_counter()` in `data_received`, before any task is
woken, so a client process with a thousand sockets adds little to the times it reports.
On Linux, perf_counter reads CLOCK_MONOTONIC, so stamps compare across processes.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

CONNECT_TIMEOUT_SECONDS = 10.0
MESSAGE_TIMEOUT_SECONDS = 10.0
GRAPHQL_TRANSPORT_WS = Subprotocol("graphql-transport-ws")
# Large enough for the initial list of any subscription the benchmark opens.
MAX_MESSAGE_BYTES = 16 * 2**20


class WebSocketClient(asyncio.Protocol):
    """One client connection, which queues received text messages in `inbox` as (time, text)."""

    def __init__(self, url: str, subprotocol: Subprotocol | None = None) -> None:
        subprotocols = [subprotocol] if subprotocol is not None else None
        # No extensions are offered, so frames are never compressed.
        self.protocol = ClientProtocol(
            parse_uri(url), subprotocols=subprotocols, max_size=MAX_MESSAGE_BYTES
        )
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.inbox: deque[tuple[float, str]] = deque()
        # Called after each message is queued. The benchmark counts arrivals with it.
        self.on_message: Callable[[WebSocketClient], None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame_received(event, arrived)
        # Pongs and closing-handshake replies that the protocol produced by itself.
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        error = ConnectionError(f"the WebSocket connection was lost: {exc}")
        if not self.opened.done():
            self.opened.set_exception(error)
        self._wake()

    def _handshake_done(self) -> None:
        if self.opened.done():
            return
        if self.protocol.state is State.OPEN:
            self.opened.set_result(None)
        else:
            self.opened.set_exception(
                ConnectionError(f"the WebSocket handshake failed: {self.protocol.handshake_exc}")
            )

    def _frame_received(self, frame: Frame, arrived: float) -> None:
        if frame.opcode not in (Opcode.TEXT, Opcode.CONT):
            return
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return
        text = b"".join(self._fragments).decode()
        self._fragments.clear()
        self.inbox.append((arrived, text))
        if self.on_message is not None:
            self.on_message(self)
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _flush(self) -> None:
        data = self.protocol.data_to_send()
        if self.transport is not None and data:
            self.transport.write(b"".join(data))

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN and self.transport is not None

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def send_json(self, message: dict[str, Any]) -> None:
        self.send_text(json.dumps(message))

    async def receive(self, timeout: float = MESSAGE_TIMEOUT_SECONDS) -> tuple[float, str]:
        """Return the oldest unread message and its arrival time, waiting for one if needed."""
        deadline = time.monotonic() + timeout
        while not self.inbox:
            if not self.is_open:
                raise ConnectionError("the WebSocket is closed and has no unread message.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no WebSocket message arrived within {timeout:g} s.")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, remaining)
            except TimeoutError:
                continue
        return self.inbox.popleft()

    async def receive_json(self, timeout: float = MESSAGE_TIMEOUT_SECONDS) -> dict[str, Any]:
        _, text = await self.receive(timeout)
        message: dict[str, Any] = json.loads(text)
        return message

    def close(self) -> None:
        if self.transport is None:
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        self.transport.close()


async def open_websocket(
    url: str, subprotocol: Subprotocol | None = None
) -> WebSocketClient:
    """Connect to a ws:// URL on 127.0.0.1 and wait for the handshake to finish."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: WebSocketClient(url, subprotocol), uri.host, uri.port),
        CONNECT_TIMEOUT_SECONDS,
    )
    await asyncio.wait_for(client.opened, CONNECT_TIMEOUT_SECONDS)
    return client


class GraphQLSubscriptionError(Exception):
    """The server rejected the connection or the subscription."""


async def subscribe(
    url: str, token: str, query: str, variables: dict[str, Any] | None = None
) -> tuple[WebSocketClient, dict[str, Any]]:
    """Open a graphql-transport-ws subscription and return it with its first result."""
    client = await open_websocket(url, GRAPHQL_TRANSPORT_WS)
    try:
        client.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        )
        ack = await client.receive_json()
        if ack.get("type") != "connection_ack":
            raise GraphQLSubscriptionError(f"expected connection_ack, got {ack}")
        client.send_json(
            {"id": "1", "type": "subscribe",
             "payload": {"query": query, "variables": variables or {}}}
        )
        first = await client.receive_json()
        if first.get("type") != "next" or first["payload"].get("errors"):
            raise GraphQLSubscriptionError(f"the subscription's first message is {first}")
    except BaseException:
        client.close()
        raise
    return client, first
