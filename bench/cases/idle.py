"""Idle subscription: server memory per open, idle `payments` subscription.

Each subscriber is a distinct user with one payment of their own, watching `payments` with a
token of their own over graphql-transport-ws. So each keeps the one-row list that a
payments screen shows. The baseline socket has one broadcaster subscription and nothing else. Both
servers get warm-up sockets first, so that code loading and pool growth land before the first
reading. The figure is the growth of the server's resident set divided by the socket count.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import seed
from bench.cases.screen import open_many
from bench.common import PAYMENT_FIELDS, CaseResult, Row, RunContext, token_for
from bench.profile import request_snapshot, summarize_snapshots
from bench.servers import baseline_server, paystream_server, rss_kib, running
from bench.wsclient import WebSocketClient, open_websocket, subscribe

TRACED_SERVE = Path(__file__).resolve().parents[1] / "tracemalloc_serve.py"
SUBSCRIPTION = "subscription { payments { " + PAYMENT_FIELDS + " } }"
WARMUP_SOCKETS = 50
SETTLE_SECONDS = 0.5
TARGET_RATIO = 1.2


async def settled_rss(pid: int) -> int:
    """Read the resident set after a pause, so that the server has finished its work."""
    await asyncio.sleep(SETTLE_SECONDS)
    return rss_kib(pid)


@dataclass(frozen=True)
class MemoryReading:
    """The server's resident set before and after `subscriptions` more sockets, in KiB."""

    before_kib: int
    after_kib: int
    subscriptions: int

    @property
    def per_subscription_kib(self) -> float:
        return (self.after_kib - self.before_kib) / self.subscriptions


async def measure_paystream(
    context: RunContext,
) -> tuple[MemoryReading, dict[str, Any] | None]:
    count = context.scale.idle_subscriptions
    database = context.workdir / "idle.db"
    url = await asyncio.to_thread(seed.create_database, database)
    users = [f"user-{index:05d}" for index in range(WARMUP_SOCKETS + count)]
    await seed.insert_payments(url, users, ["pending"] * len(users))
    server = paystream_server("paystream-idle", context.workdir, **context.paystream_settings(url))
    profiling = "idle_subscription" in context.profile_cases
    snapshots = str(context.workdir / "idle.tracemalloc")
    if profiling:
        server.argv = [sys.executable, str(TRACED_SERVE)]
        server.environment["BENCH_TRACEMALLOC_OUTPUT"] = snapshots
    profile = None
    clients: list[WebSocketClient] = []
    async with running(server):
        websocket_url = f"ws://127.0.0.1:{server.port}/graphql"

        async def open_user(index: int) -> WebSocketClient:
            client, first = await subscribe(
                websocket_url, token_for(users[len(clients) + index]), SUBSCRIPTION
            )
            if len(first["payload"]["data"]["payments"]) != 1:
                raise RuntimeError(f"a user's first list is not one row: {first}")
            return client

        try:
            clients += await open_many(WARMUP_SOCKETS, open_user)
            before = await settled_rss(server.pid)
            first = await request_snapshot(server.pid, snapshots, 1) if profiling else None
            clients += await open_many(count, open_user)
            after = await settled_rss(server.pid)
            if first is not None:
                second = await request_snapshot(server.pid, snapshots, 2)
                profile = await asyncio.to_thread(summarize_snapshots, first, second, count)
        finally:
            for client in clients:
                client.close()
    return MemoryReading(before, after, count), profile


async def measure_baseline(context: RunContext) -> MemoryReading:
    count = context.scale.idle_subscriptions
    server = baseline_server("baseline-idle", "create_fanout_app", context.workdir)
    clients: list[WebSocketClient] = []
    async with running(server):
        websocket_url = f"ws://127.0.0.1:{server.port}/ws"

        async def open_bare(index: int) -> WebSocketClient:
            client = await open_websocket(websocket_url)
            _, text = await client.receive()
            if text != "ready":
                raise RuntimeError(f"the baseline socket sent {text!r} before ready")
            return client

        try:
            clients += await open_many(WARMUP_SOCKETS, open_bare)
            before = await settled_rss(server.pid)
            clients += await open_many(count, open_bare)
            after = await settled_rss(server.pid)
        finally:
            for client in clients:
                client.close()
    return MemoryReading(before, after, count)


async def run(context: RunContext) -> CaseResult:
    paystream, profile = await measure_paystream(context)
    baseline = await measure_baseline(context)
    ours, theirs = paystream.per_subscription_kib, baseline.per_subscription_kib
    row = Row(
        f"RSS per subscription (N = {context.scale.idle_subscriptions})", "KiB", ours, theirs,
        f"<= {TARGET_RATIO} x baseline", ours <= TARGET_RATIO * theirs, "lower",
    )
    details = {"paystream": asdict(paystream), "baseline": asdict(baseline),
               "warmup_sockets": WARMUP_SOCKETS}
    return CaseResult("idle_subscription", "idle subscription", [row], details, profile)
