"""Broadcaster backends that survive their server going away.

broadcaster 0.3.1's own Redis backend marks itself ready before SUBSCRIBE has completed, so a
first subscriber can miss everything, and neither its Redis nor its Postgres backend comes
back after a lost connection. These classes go through broadcaster's documented extension
point, `Broadcast(backend=...)`. After reconnecting they put a resync marker on every
channel, so live subscriptions reload what changed while they were deaf.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any
from urllib.parse import urlparse

import asyncpg
from broadcaster import Broadcast, Event
from broadcaster._backends.base import BroadcastBackend
from redis import asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger("paystream.broadcast")

RESYNC_MESSAGE = json.dumps({"op": "resync"})
RECONNECT_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# How long `subscribe` waits for the server to confirm before carrying on. The listener
# keeps trying, and puts a resync marker on the channel once it is subscribed.
SUBSCRIBE_TIMEOUT_SECONDS = 5.0
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def create_broadcast(url: str) -> Broadcast:
    """Build a Broadcast for `url`, with paystream's backends for Redis and PostgreSQL."""
    scheme = urlparse(url).scheme
    if scheme in ("redis", "rediss"):
        return Broadcast(backend=RedisBroadcastBackend(url))
    if scheme.startswith("postgres"):
        return Broadcast(backend=PostgresBroadcastBackend(url))
    return Broadcast(url)


def broadcast_connected(broadcast: Broadcast) -> bool:
    """Return whether changes from other processes are arriving (always, for the memory backend)."""
    return bool(getattr(broadcast._backend, "connected", True))


def _delay(attempt: int) -> float:
    return RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]


class RedisBroadcastBackend(BroadcastBackend):
    """Redis pub/sub with confirmed subscriptions and reconnection."""

    def __init__(self, url: str) -> None:  # noqa: D107  # the base class raises here
        self._url = url
        self._channels: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._publisher = aioredis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        self._pubsub: Any = None
        self._connected = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def connect(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-broadcast-listener")

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            await asyncio.gather(self._listener, return_exceptions=True)
        await self._publisher.aclose()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        confirmed = self._confirmed.setdefault(channel, asyncio.Event())
        if self._pubsub is not None and self._connected.is_set():
            try:
                await self._pubsub.subscribe(channel)
            except REDIS_ERRORS:
                logger.warning("subscribing to %s failed; the listener will retry", channel)
        try:
            await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("Redis has not confirmed the subscription to %s yet", channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._confirmed.pop(channel, None)
        if self._pubsub is not None and self._connected.is_set():
            try:
                await self._pubsub.unsubscribe(channel)
            except REDIS_ERRORS:
                pass

    async def publish(self, channel: str, message: Any) -> None:
        await self._publisher.publish(channel, message)

    async def next_published(self) -> Event:
        return await self._events.get()

    async def _listen(self) -> None:
        attempt = 0
        while True:
            pubsub = self._publisher.pubsub()
            try:
                await pubsub.connect()
                self._pubsub = pubsub
                self._connected.set()
                if self._channels:
                    await pubsub.subscribe(*self._channels)
                if attempt:
                    logger.info("Redis broadcast connection restored")
                await self._read(pubsub, resync=attempt > 0)
            except asyncio.CancelledError:
                raise
            except REDIS_ERRORS as error:
                delay = _delay(attempt)
                attempt += 1
                logger.warning("Redis broadcast connection lost (%s); retrying in %s s", error, delay)
            finally:
                self._connected.clear()
                self._pubsub = None
                for confirmed in self._confirmed.values():
                    confirmed.clear()
                try:
                    await pubsub.aclose()
                except REDIS_ERRORS:
                    pass
            await asyncio.sleep(_delay(attempt))

    async def _read(self, pubsub: Any, *, resync: bool) -> None:
        while True:
            if not pubsub.subscribed:
                # redis-py cannot read before the first SUBSCRIBE; wait for one.
                await asyncio.sleep(0.05)
                continue
            message = await pubsub.get_message(timeout=1.0)
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"].decode() if message.get("channel") else None
            if kind == "message" and channel is not None:
                self._events.put_nowait(Event(channel=channel, message=message["data"].decode()))
            elif kind == "subscribe" and channel is not None:
                self._confirmed.setdefault(channel, asyncio.Event()).set()
                if resync:
                    self._events.put_nowait(Event(channel=channel, message=RESYNC_MESSAGE))


class PostgresBroadcastBackend(BroadcastBackend):
    """PostgreSQL LISTEN/NOTIFY that listens again after its connection is lost."""

    def __init__(self, url: str) -> None:  # noqa: D107  # the base class raises here
        self._url = url.replace("+asyncpg", "", 1)
        self._channels: set[str] = set()
        self._events: asyncio.Queue[Event] = asyncio.Queue()
        self._listen_connection: asyncpg.Connection | None = None
        self._pool: asyncpg.Pool | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        # asyncpg runs one operation at a time per connection; LISTEN and UNLISTEN for
        # several channels can arrive together.
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        connection = self._listen_connection
        return connection is not None and not connection.is_closed() and not self._lost.is_set()

    async def connect(self) -> None:
        self._pool = await asyncpg.create_pool(self._url, min_size=1, max_size=4)
        await self._open_listener()
        self._supervisor = asyncio.create_task(self._supervise(), name="pg-broadcast-listener")

    async def disconnect(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        async with self._lock:
            if self._listen_connection is not None and not self._listen_connection.is_closed():
                await self._listen_connection.close()
        if self._pool is not None:
            await self._pool.close()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        async with self._lock:
            connection = self._listen_connection
            if connection is not None and not connection.is_closed():
                await connection.add_listener(channel, self._on_notification)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        async with self._lock:
            connection = self._listen_connection
            if connection is not None and not connection.is_closed():
                await connection.remove_listener(channel, self._on_notification)

    async def publish(self, channel: str, message: Any) -> None:
        if self._pool is None:
            raise RuntimeError("the Postgres broadcast backend is not connected")
        await self._pool.execute("SELECT pg_notify($1, $2)", channel, message)

    async def next_published(self) -> Event:
        return await self._events.get()

    def _on_notification(self, _connection: Any, _pid: int, channel: str, payload: str) -> None:
        self._events.put_nowait(Event(channel=channel, message=payload))

    def _on_termination(self, _connection: Any) -> None:
        self._lost.set()

    async def _open_listener(self) -> None:
        async with self._lock:
            connection = await asyncpg.connect(self._url)
            connection.add_termination_listener(self._on_termination)
            for channel in self._channels:
                await connection.add_listener(channel, self._on_notification)
            self._listen_connection = connection

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            self._lost.clear()
            logger.warning("Postgres broadcast connection lost; listening again")
            attempt = 0
            while True:
                await asyncio.sleep(_delay(attempt))
                try:
                    await self._open_listener()
                    break
                except (OSError, asyncpg.PostgresError) as error:
                    attempt += 1
                    logger.warning("reconnecting the Postgres broadcast failed: %s", error)
            logger.info("Postgres broadcast connection restored")
            for channel in self._channels:
                self._events.put_nowait(Event(channel=channel, message=RESYNC_MESSAGE))
