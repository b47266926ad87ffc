"""One execution per subscription shape, shared by every subscriber of that shape.

Subscribers that send the same document and variables and may read the same rows receive
the same lists. Their subscription is executed once and each result is handed to all of
them, instead of Strawberry executing the selection once per socket for every change.

Every result is a complete list, so a subscriber that falls behind only needs the newest
one: each subscriber keeps a single slot, and a newer result replaces an unsent older one.
That bounds what a slow socket can make the server hold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

from graphql import GraphQLError
from strawberry.types import ExecutionResult

from paystream.errors import Unauthenticated
from paystream.viewer import Viewer

logger = logging.getLogger("paystream.live")

Source = Callable[[], Awaitable[AsyncIterator[Any]]]


class TokenExpired(Unauthenticated):
    def __init__(self) -> None:
        super().__init__("The bearer token has expired; reconnect with a fresh one.")


def expired_result() -> ExecutionResult:
    error = TokenExpired()
    return ExecutionResult(data=None, errors=[GraphQLError(error.message, original_error=error)])


class _Subscriber:
    def __init__(self) -> None:
        self.pending: Any = None
        self.has_pending = False
        self.ended = False
        self.wake = asyncio.Event()

    def offer(self, result: Any) -> None:
        self.pending = result
        self.has_pending = True
        self.wake.set()

    def end(self) -> None:
        # Kept apart from the slot, so the last result is still sent before the end.
        self.ended = True
        self.wake.set()

    def take(self) -> Any:
        result, self.pending = self.pending, None
        self.has_pending = False
        self.wake.clear()
        return result


def _same_result(first: Any, second: Any) -> bool:
    if not isinstance(first, ExecutionResult) or not isinstance(second, ExecutionResult):
        return False
    return not first.errors and not second.errors and first.data == second.data


class _Group:
    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.subscribers: set[_Subscriber] = set()
        self.latest: Any = None
        self.has_latest = False
        self.finished = False
        self.task: asyncio.Task[None] | None = None

    def publish(self, result: Any) -> None:
        # A change to a field no subscriber selected yields the same list again, so it is not sent.
        if self.has_latest and _same_result(result, self.latest):
            return
        self.latest, self.has_latest = result, True
        for subscriber in self.subscribers:
            subscriber.offer(result)


class SharedStreams:
    """The running subscription groups of this process, by shape."""

    def __init__(self) -> None:
        self._groups: dict[Hashable, _Group] = {}

    def __len__(self) -> int:
        return len(self._groups)

    async def join(self, key: Hashable, viewer: Viewer, source: Source) -> AsyncGenerator[Any, None]:
        """Subscribe to the group `key`, starting its execution from `source` if needed."""
        group = self._groups.get(key)
        if group is None or group.finished:
            group = _Group(key)
            self._groups[key] = group
            group.task = asyncio.create_task(self._pump(group, source), name=f"live-group-{id(group)}")
        return self._follow(group, viewer)

    async def _pump(self, group: _Group, source: Source) -> None:
        try:
            results = await source()
            try:
                async for result in results:
                    group.publish(result)
            finally:
                closer = getattr(results, "aclose", None)
                if closer is not None:
                    await closer()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("a shared subscription failed")
        finally:
            group.finished = True
            if self._groups.get(group.key) is group:
                del self._groups[group.key]
            for subscriber in group.subscribers:
                subscriber.end()

    async def _follow(self, group: _Group, viewer: Viewer) -> AsyncGenerator[Any, None]:
        subscriber = _Subscriber()
        group.subscribers.add(subscriber)
        if group.has_latest:
            subscriber.offer(group.latest)
        if group.finished:
            subscriber.end()
        try:
            while True:
                if viewer.expires_at is not None and viewer.expires_at <= time.time():
                    yield expired_result()
                    return
                if subscriber.has_pending:
                    yield subscriber.take()
                    continue
                if subscriber.ended:
                    return
                if not await self._wait(subscriber, viewer):
                    yield expired_result()
                    return
        finally:
            group.subscribers.discard(subscriber)
            if not group.subscribers and not group.finished:
                await self._stop(group)

    @staticmethod
    async def _wait(subscriber: _Subscriber, viewer: Viewer) -> bool:
        """Wait for a result or the end; return False once the viewer's token has expired."""
        if viewer.expires_at is None:
            await subscriber.wake.wait()
            return True
        remaining = viewer.expires_at - time.time()
        if remaining <= 0:
            return False
        try:
            # asyncio.timeout adds a timer only, where wait_for would add a task per wait.
            async with asyncio.timeout(remaining):
                await subscriber.wake.wait()
        except TimeoutError:
            return False
        return True

    async def _stop(self, group: _Group) -> None:
        # The pump closes the execution in its own `finally` and logs its own errors.
        group.finished = True
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        if group.task is not None:
            group.task.cancel()

    async def close(self) -> None:
        """Cancel every group and wait for their executions to close."""
        tasks = [group.task for group in self._groups.values() if group.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._groups.clear()
