"""GraphQL read: `payments(orderId)` returning 10 rows, requests per second.

The order belongs to the user whose token every request carries. Its payments are nine
canceled attempts and the one that succeeded, because an order may have only one payment
that is not canceled. The baseline is Strawberry on Starlette resolving `{ hello }`.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bench import seed
from bench.common import PAYMENT_FIELDS, CaseResult, Row, RunContext, graphql_request, token_for
from bench.load import LoadResult, closed_loop, send_one
from bench.profile import profile_while
from bench.servers import baseline_server, paystream_server, running

QUERY = "query($orderId: Int) { payments(orderId: $orderId) { " + PAYMENT_FIELDS + " } }"
ROWS = 10
READER = "reader"
WARMUP_SECONDS = 0.5
TARGET_RATIO = 0.5


def answered_without_errors(status: int, body: bytes) -> bool:
    return status == 200 and b'"errors"' not in body


async def measure_paystream(context: RunContext) -> tuple[LoadResult, dict[str, Any] | None]:
    scale = context.scale
    database = context.workdir / "read.db"
    url = await asyncio.to_thread(seed.create_database, database)
    statuses = ["canceled"] * (ROWS - 1) + ["succeeded"]
    payments = await seed.insert_payments(
        url, [READER] * ROWS, statuses, order_per_payment=False
    )
    server = paystream_server("paystream-read", context.workdir, **context.paystream_settings(url))
    async with running(server):
        request = graphql_request(server.port, QUERY, {"orderId": payments[0].order_id},
                                  token_for(READER))
        status, body = await send_one(server.port, request)
        rows = json.loads(body)["data"]["payments"] if status == 200 else None
        if rows is None or len(rows) != ROWS:
            raise RuntimeError(f"payments(orderId) did not return {ROWS} rows: {body[:300]!r}")

        await closed_loop(server.port, [request], concurrency=scale.read_concurrency,
                          duration=WARMUP_SECONDS, check=answered_without_errors)
        load = closed_loop(server.port, [request], concurrency=scale.read_concurrency,
                           duration=scale.read_seconds, check=answered_without_errors)
        return await profile_while(
            "graphql_read" in context.profile_cases, server.pid, context.workdir / "read.pyspy",
            scale.read_seconds, load,
        )


async def measure_baseline(context: RunContext) -> LoadResult:
    scale = context.scale
    server = baseline_server("baseline-read", "create_graphql_app", context.workdir)
    async with running(server):
        request = graphql_request(server.port, "{ hello }")
        await closed_loop(server.port, [request], concurrency=scale.read_concurrency,
                          duration=WARMUP_SECONDS, check=answered_without_errors)
        return await closed_loop(server.port, [request], concurrency=scale.read_concurrency,
                                 duration=scale.read_seconds, check=answered_without_errors)


async def run(context: RunContext) -> CaseResult:
    paystream, profile = await measure_paystream(context)
    baseline = await measure_baseline(context)
    for name, result in (("paystream", paystream), ("the read baseline", baseline)):
        if result.failures:
            raise RuntimeError(f"{name} failed requests: {result.failures[:3]}")

    ratio = paystream.rate / baseline.rate
    rows = [
        Row("requests per second", "1/s", paystream.rate, baseline.rate,
            f">= {TARGET_RATIO} x baseline", ratio >= TARGET_RATIO, "higher"),
        Row("p99 answer time", "ms", paystream.latency(0.99) * 1000,
            baseline.latency(0.99) * 1000, "reported", None, "lower"),
    ]
    details = {
        "concurrency": context.scale.read_concurrency,
        "paystream": {"requests": paystream.succeeded, "seconds": paystream.elapsed,
                      "p50_ms": paystream.latency(0.5) * 1000},
        "baseline": {"requests": baseline.succeeded, "seconds": baseline.elapsed,
                     "p50_ms": baseline.latency(0.5) * 1000},
    }
    return CaseResult("graphql_read", "GraphQL read", rows, details, profile)
