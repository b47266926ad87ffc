"""Two `paystream serve` processes sharing one PostgreSQL database and one Redis broadcast.

Two processes are the smallest deployment in which a change committed by one process must
reach the live subscriptions of the other, through Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from bench import seed
from bench.common import RunContext
from bench.servers import Server, paystream_server

PROCESSES = 2
REDIS_TIMEOUT_SECONDS = 5


async def redis_version(url: str) -> str:
    """Return the version of the Redis at `url`, or raise RuntimeError if it does not reply."""
    client = aioredis.Redis.from_url(
        url, socket_connect_timeout=REDIS_TIMEOUT_SECONDS, socket_timeout=REDIS_TIMEOUT_SECONDS
    )
    try:
        server = await client.info("server")
    except (RedisError, OSError) as error:
        reason = f"{type(error).__name__}: {str(error).rstrip('.')}"
        raise RuntimeError(
            f"connecting to Redis at {url} failed with {reason}. Start Redis there, or name "
            "another server with bench/run --redis."
        ) from error
    finally:
        await client.aclose()
    return str(server["redis_version"])


@dataclass(frozen=True)
class Backends:
    """The case's own PostgreSQL database, and the server versions for the results file."""

    database_url: str
    postgres_version: str
    redis_version: str


@contextlib.asynccontextmanager
async def backends(context: RunContext, label: str) -> AsyncIterator[Backends]:
    """Check Redis, then create and migrate a PostgreSQL database of this case's own.

    The database is dropped when the block ends. Redis is checked first so that a missing
    Redis fails the case before any database is created.
    """
    redis = await redis_version(context.redis_url)
    async with seed.postgres_database(context.postgres_admin_url, label) as url:
        await asyncio.to_thread(seed.migrate, url)
        yield Backends(url, await seed.server_version(url), redis)


@contextlib.asynccontextmanager
async def serving(context: RunContext, name: str, database_url: str) -> AsyncIterator[list[Server]]:
    """Start two `paystream serve` processes of one uvicorn worker each on `database_url`.

    They broadcast through the run's Redis with a channel prefix of their own, so that no
    other paystream on the same Redis reaches their subscribers. Both are stopped when the
    block ends, also when one of them failed to start.
    """
    prefix = f"paystream-bench-{uuid.uuid4().hex[:12]}."
    settings = context.paystream_settings(database_url) | {
        "BROADCAST_URL": context.redis_url,
        "BROADCAST_CHANNEL_PREFIX": prefix,
    }
    servers = [
        paystream_server(f"{name}-{number}", context.workdir, **settings)
        for number in range(1, PROCESSES + 1)
    ]
    try:
        started = await asyncio.gather(
            *(asyncio.to_thread(server.start) for server in servers), return_exceptions=True
        )
        for outcome in started:
            if isinstance(outcome, BaseException):
                raise outcome
        yield servers
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.stop) for server in servers))
