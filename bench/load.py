"""A closed-loop HTTP/1.1 load generator on raw asyncio connections, and latency statistics.

Requests are prepared as bytes before the clock starts, and each keep-alive connection sends
its next request as soon as the previous response is complete. Parsing only the status line
and Content-Length keeps the generator's cost per request at a few microseconds, so on one
core it outpaces the fastest baseline here and the figures measure the server.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

HEADER_END = b"\r\n\r\n"
CONNECT_TIMEOUT_SECONDS = 5.0
RESPONSE_TIMEOUT_SECONDS = 30.0


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile: the least value with `fraction` of values at or below."""
    if not values:
        raise ValueError("percentile of an empty sample is undefined.")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def http_request(
    method: str, path: str, port: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    """Build the bytes of one HTTP/1.1 keep-alive request to 127.0.0.1:`port`."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection that carries one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport implements asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._complete_response()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"the server closed the connection: {exc}"))
        self.waiter = None

    def _complete_response(self) -> None:
        end = self.buffer.find(HEADER_END)
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        status = int(head[9:12])
        start = head.find(b"\r\ncontent-length:")
        if start < 0:
            raise RuntimeError(
                f"the server sent a response without Content-Length, which this generator "
                f"cannot read: {head[:200]!r}"
            )
        stop = head.find(b"\r\n", start + 2)
        length = int(head[start + 17 : stop if stop >= 0 else len(head)])
        total = end + len(HEADER_END) + length
        if len(self.buffer) < total:
            return
        body = bytes(self.buffer[end + len(HEADER_END) : total])
        del self.buffer[:total]
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Send one request and return the response's status and body."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the connection is closed.")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, RESPONSE_TIMEOUT_SECONDS)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int) -> HttpConnection:
    loop = asyncio.get_running_loop()
    _, protocol = await asyncio.wait_for(
        loop.create_connection(HttpConnection, "127.0.0.1", port), CONNECT_TIMEOUT_SECONDS
    )
    return protocol


async def send_one(port: int, request: bytes) -> tuple[int, bytes]:
    """Send one request on a connection of its own."""
    connection = await connect(port)
    try:
        return await connection.send(request)
    finally:
        connection.close()


Check = Callable[[int, bytes], bool]


@dataclass
class LoadResult:
    """Measurements of one closed-loop run, with latencies in seconds."""

    sent: int
    succeeded: int
    elapsed: float
    latencies: array[float] = field(default_factory=lambda: array("d"))
    failures: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.succeeded / self.elapsed if self.elapsed > 0 else 0.0

    def latency(self, fraction: float) -> float:
        return percentile(self.latencies, fraction)


async def closed_loop(
    port: int | Sequence[int],
    requests: Sequence[bytes],
    *,
    concurrency: int,
    duration: float,
    max_requests: int | None = None,
    check: Check | None = None,
) -> LoadResult:
    """Send `requests` in order over `concurrency` connections until time or requests run out.

    With several ports, the connections go to them in turn and take the next request from
    the same list, so no request goes to more than one port (unless the list repeats). The
    Host header of each request stays as it was built. With `max_requests` None the
    requests repeat from the start, so a short list can drive a long run. A response counts
    as succeeded when `check(status, body)` holds, or when its status is 200 if no check is
    given. Up to 10 failures are kept as text.
    """
    limit = len(requests) if max_requests is None else min(max_requests, len(requests))
    repeat = max_requests is None
    ports = [port] if isinstance(port, int) else list(port)
    connections = [await connect(ports[number % len(ports)]) for number in range(concurrency)]
    result = LoadResult(sent=0, succeeded=0, elapsed=0.0)
    next_index = 0
    started = time.perf_counter()
    deadline = started + duration

    async def worker(connection: HttpConnection) -> None:
        nonlocal next_index
        while time.perf_counter() < deadline:
            if next_index >= limit and not repeat:
                return
            request = requests[next_index % limit]
            next_index += 1
            result.sent += 1
            sent_at = time.perf_counter()
            try:
                status, body = await connection.send(request)
            except (ConnectionError, TimeoutError) as error:
                result.failures.append(f"{type(error).__name__}: {error}")
                return
            result.latencies.append(time.perf_counter() - sent_at)
            ok = check(status, body) if check is not None else status == 200
            if ok:
                result.succeeded += 1
            elif len(result.failures) < 10:
                result.failures.append(f"{status}: {body[:300]!r}")

    try:
        await asyncio.gather(*(worker(connection) for connection in connections))
    finally:
        result.elapsed = time.perf_counter() - started
        for connection in connections:
            connection.close()
    return result
