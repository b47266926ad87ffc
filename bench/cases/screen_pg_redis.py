"""Change to screen on two `paystream serve` processes sharing PostgreSQL and Redis.

The subscribers are as many as at the single-process case's largest count, and they are
split evenly between the two processes. Every webhook goes to the first process, and a sample
ends when the change has arrived on every subscriber of both, so the figure includes the hop
through Redis. The
figures are compared with the single-process case's baseline from the same run. If that case
did not run, this one measures the baseline at the same count itself.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from bench import cluster, seed
from bench.cases.ingest import webhook_request
from bench.cases.screen import (
    SUBSCRIPTION,
    WARMUP_SAMPLES,
    FanoutSamples,
    check_next_message,
    measure_baseline,
    measure_fanout,
    open_many,
    p99_row,
    sample_event,
)
from bench.common import CaseResult, RunContext, token_for
from bench.profile import profile_while
from bench.servers import Server
from bench.wsclient import WebSocketClient, subscribe

CASE = "change_to_screen_pg_redis"
TITLE = "change to screen (2 processes, PostgreSQL + Redis)"


async def measure_paystream(
    context: RunContext, servers: list[Server], payment: seed.SeededPayment, count: int
) -> tuple[FanoutSamples, str, dict[str, Any] | None]:
    """Open `count` subscriptions, alternating between `servers`, and time each change.

    Returns the samples, the last `next` message (the baseline's payload if the baseline is
    measured here) and the profile of both servers, if one was taken.
    """
    sample_count = context.scale.screen_samples[count]
    urls = [f"ws://127.0.0.1:{server.port}/graphql" for server in servers]

    async def open_admin(index: int) -> WebSocketClient:
        token = token_for(f"admin-{index:05d}", "admin")
        client, _ = await subscribe(urls[index % len(urls)], token, SUBSCRIPTION,
                                    {"orderId": payment.order_id})
        return client

    clients = await open_many(count, open_admin)
    try:
        requests, statuses = [], []
        for sample in range(WARMUP_SAMPLES + sample_count):
            event, status = sample_event(payment, sample)
            requests.append(webhook_request(servers[0].port, event, int(time.time())))
            statuses.append(status)

        check = functools.partial(check_next_message, statuses)
        pids = [server.pid for server in servers]
        work = measure_fanout(clients, pids, servers[0].port, requests, check)
        samples, profile = await profile_while(
            CASE in context.profile_cases, pids, context.workdir / f"{CASE}.pyspy", 60, work
        )
        payload = clients[0].inbox[0][1]
    finally:
        for client in clients:
            client.close()
    return samples, payload, profile


async def shared_baseline(
    context: RunContext, payload: str, count: int
) -> tuple[FanoutSamples, bool]:
    """Return the single-process case's baseline at `count`, or measure it now.

    The flag is true when the baseline was measured by this call.
    """
    earlier: dict[int, FanoutSamples] = context.baselines.get("change_to_screen", {})
    if count in earlier:
        return earlier[count], False
    counts = {count: context.scale.screen_samples[count]}
    measured = await measure_baseline(context, payload, counts)
    return measured[count], True


async def run(context: RunContext) -> CaseResult:
    count = max(context.scale.screen_samples)
    async with cluster.backends(context, "screen") as backends:
        url = backends.database_url
        [payment] = await seed.insert_payments(url, ["owner"], ["pending"])
        async with cluster.serving(context, "paystream-screen-pg", url) as servers:
            paystream, payload, profile = await measure_paystream(context, servers, payment, count)
    baseline, measured_here = await shared_baseline(context, payload, count)

    row = p99_row(count, paystream, baseline, with_target=True)
    details: dict[str, Any] = {
        "processes": cluster.PROCESSES,
        "postgresql": backends.postgres_version,
        "redis": backends.redis_version,
        "subscribers_per_process": [
            len(range(first, count, cluster.PROCESSES)) for first in range(cluster.PROCESSES)
        ],
        "payload_bytes": len(payload.encode()),
        "baseline_measured_by": CASE if measured_here else "change_to_screen",
        "paystream": paystream.summary(),
        "baseline": baseline.summary(),
    }
    return CaseResult(CASE, TITLE, [row], details, profile)
