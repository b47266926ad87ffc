"""A long-lived subscription must not grow with every event it delivers."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncGenerator

import strawberry

from gql.schema import PerEventMemoExecutionContext

EVENTS = 2000


@strawberry.type
class Row:
    id: int
    name: str


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def rows(self) -> AsyncGenerator[list[Row], None]:
        for _ in range(EVENTS):
            yield [Row(id=index, name="row") for index in range(10)]


async def growth_over_events(schema: strawberry.Schema) -> int:
    """Bytes allocated and still held between the 200th and the last event."""
    results = await schema.subscribe("subscription { rows { id name } }")
    tracemalloc.start()
    try:
        seen = 0
        async for _ in results:
            seen += 1
            if seen == 200:
                before = tracemalloc.take_snapshot()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


async def test_event_memo_does_not_grow():
    schema = strawberry.Schema(
        query=Query,
        subscription=Subscription,
        execution_context_class=PerEventMemoExecutionContext,
    )
    assert await growth_over_events(schema) < 64 * 1024


async def test_default_executor_grows():
    # Shows what the executor above guards against; if graphql-core fixes its shared memo,
    # this fails and the workaround can go.
    schema = strawberry.Schema(query=Query, subscription=Subscription)
    assert await growth_over_events(schema) > 1024 * 1024
