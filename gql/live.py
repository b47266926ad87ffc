"""Fan-out of published row changes to the live subscriptions of this process.

The process keeps one broadcaster subscription per table, decodes each message once, and
hands it to every local subscriber's bounded queue. A subscriber whose queue overflows gets
a resync marker instead of more messages, and reloads its list from the database.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from broadcaster import Broadcast

from db.publish import DEFAULT_CHANNEL_PREFIX, channel_for

logger = logging.getLogger("paystream.live")

TABLES = ("orders", "payments", "refunds", "recurring_payments")
QUEUE_SIZE = 256
RETRY_DELAY_SECONDS = (0.5, 1, 2, 5)


class Resync:
    """Queued in place of messages a subscriber missed; it must reload its rows."""


RESYNC = Resync()


class LiveHub:
    """One broadcaster subscription per table, shared by every subscriber in the process."""

    def __init__(
        self,
        broadcast: Broadcast,
        prefix: str = DEFAULT_CHANNEL_PREFIX,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.broadcast = broadcast
        self.prefix = prefix
        # Called for every change and resync that arrives, from any process.
        self.on_change = on_change
        self._queues: dict[str, set[asyncio.Queue[Any]]] = {table: set() for table in TABLES}
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: dict[str, asyncio.Event] = {}
        self._stopping = False

    async def start(self) -> None:
        for table in TABLES:
            self._ready[table] = asyncio.Event()
            task = asyncio.create_task(self._listen(table), name=f"live-{table}")
            self._tasks.append(task)
        await asyncio.gather(*(event.wait() for event in self._ready.values()))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def _listen(self, table: str) -> None:
        attempt = 0
        while True:
            try:
                async with self.broadcast.subscribe(channel_for(table, self.prefix)) as subscriber:
                    self._ready[table].set()
                    if attempt:
                        logger.info("listening to %s again", table)
                        self._resync_all(table)
                    attempt = 0
                    async for event in subscriber:  # type: ignore[union-attr]
                        message = json.loads(event.message)
                        if self.on_change is not None:
                            self.on_change()
                        if message.get("op") == "resync":
                            self._resync_all(table)
                        else:
                            self._deliver(table, message)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping:
                    # A failure while unsubscribing on shutdown can replace the
                    # cancellation; there is nothing left to listen for.
                    return
                delay = RETRY_DELAY_SECONDS[min(attempt, len(RETRY_DELAY_SECONDS) - 1)]
                attempt += 1
                logger.exception("listening to %s failed; retrying in %s s", table, delay)
                self._ready[table].set()
                await asyncio.sleep(delay)

    def _deliver(self, table: str, message: dict[str, Any]) -> None:
        for queue in self._queues[table]:
            if queue.full():
                continue
            if queue.qsize() == queue.maxsize - 1:
                queue.put_nowait(RESYNC)
            else:
                queue.put_nowait(message)

    def _resync_all(self, table: str) -> None:
        for queue in self._queues[table]:
            if not queue.full():
                queue.put_nowait(RESYNC)

    @asynccontextmanager
    async def listen(self, table: str) -> AsyncIterator[asyncio.Queue[Any]]:
        """Yield a queue of this table's changes, registered until the block exits."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues[table].add(queue)
        try:
            yield queue
        finally:
            self._queues[table].discard(queue)
