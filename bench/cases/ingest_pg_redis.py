"""Webhook ingest on two `paystream serve` processes sharing PostgreSQL and Redis.

The same events as the single-process case, seeded into a PostgreSQL database of the case's
own, go to both processes over the same number of connections, half of them to each process.
The figures are compared with the single-process case's baseline from the same run. If that
case did not run, this one measures the baseline itself.
"""

from __future__ import annotations

from bench import cluster, seed
from bench.cases.ingest import (
    WARMUP_EVENTS,
    compare,
    measure_paystream,
    seeded_users,
    shared_baseline,
)
from bench.common import CaseResult, RunContext

CASE = "webhook_ingest_pg_redis"
TITLE = "webhook ingest (2 processes, PostgreSQL + Redis)"


async def run(context: RunContext) -> CaseResult:
    count = WARMUP_EVENTS + context.scale.ingest_events
    async with cluster.backends(context, "ingest") as backends:
        url = backends.database_url
        payments = await seed.insert_payments(url, seeded_users(count), ["pending"] * count)
        async with cluster.serving(context, "paystream-ingest-pg", url) as servers:
            measured = await measure_paystream(context, CASE, servers, payments, url)
    baseline, measured_here = await shared_baseline(context, payments)

    rows, details = compare(context, measured, baseline)
    details["processes"] = cluster.PROCESSES
    details["postgresql"] = backends.postgres_version
    details["redis"] = backends.redis_version
    details["baseline_measured_by"] = CASE if measured_here else "webhook_ingest"
    return CaseResult(CASE, TITLE, rows, details, measured.profile)
