"""Webhook ingest: signed payment_intent.succeeded events applied per second.

Each event is distinct and moves a distinct pending payment to succeeded (and its order to
paid). The baseline reads the same bodies and checks the same signatures, and does nothing
else.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import seed
from bench.common import WEBHOOK_SECRET, CaseResult, Row, RunContext
from bench.load import LoadResult, closed_loop, http_request
from bench.profile import profile_while
from bench.servers import Server, baseline_server, paystream_server, running, total_cpu_seconds
from callbacks.signature import sign

TEMPLATE = Path(__file__).resolve().parents[2] / "tests/stripe_events/payment_intent.succeeded.json"
WARMUP_EVENTS = 100
USERS = 100
TARGET_RATE_RATIO = 0.25


def load_template() -> dict[str, Any]:
    event: dict[str, Any] = json.loads(TEMPLATE.read_text())
    return event


def succeeded_event(
    template: dict[str, Any], payment: seed.SeededPayment, created: int
) -> dict[str, Any]:
    """Copy the real Stripe event and point it at one seeded payment."""
    event = copy.deepcopy(template)
    event["id"] = f"evt_bench{payment.payment_id:012d}"
    event["created"] = created
    intent = event["data"]["object"]
    intent.update(
        id=payment.intent_id,
        amount=seed.AMOUNT,
        amount_received=seed.AMOUNT,
        currency=seed.CURRENCY,
        metadata={"orderId": str(payment.order_id), "paymentId": str(payment.payment_id)},
        client_secret=f"{payment.intent_id}_secret_bench",
    )
    for charge in intent.get("charges", {}).get("data", []):
        charge["payment_intent"] = payment.intent_id
    return event


def webhook_request(port: int, event: dict[str, Any], timestamp: int) -> bytes:
    payload = json.dumps(event).encode()
    signature = f"t={timestamp},v1={sign(payload, WEBHOOK_SECRET, timestamp)}"
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
    return http_request("POST", "/webhooks/stripe", port, payload, headers)


def is_processed(status: int, body: bytes) -> bool:
    return status == 200 and b'"outcome":"processed"' in body


@dataclass
class IngestRun:
    """One measurement of paystream under webhook load.

    `applied` counts the payments that moved to succeeded under load, and
    `server_cpu_seconds` is the CPU time of every server process, summed.
    """

    load: LoadResult
    applied: int
    server_cpu_seconds: float
    profile: dict[str, Any] | None


async def measure_paystream(
    context: RunContext,
    case: str,
    servers: list[Server],
    payments: list[seed.SeededPayment],
    url: str,
) -> IngestRun:
    """Warm up, then drive `servers` with the rest of the events, spread over all of them.

    The profile is taken if `case` is one of the cases to profile.
    """
    scale = context.scale
    ports = [server.port for server in servers]
    # Signed now, because paystream rejects timestamps more than 300 s old.
    now = int(time.time())
    template = load_template()
    requests = [webhook_request(ports[0], succeeded_event(template, p, now), now)
                for p in payments]
    warmup = await closed_loop(ports, requests[:WARMUP_EVENTS], concurrency=4,
                               duration=30, max_requests=WARMUP_EVENTS, check=is_processed)
    if warmup.succeeded != WARMUP_EVENTS:
        raise RuntimeError(f"the ingest warm-up failed: {warmup.failures[:3]}")
    load = closed_loop(
        ports, requests[WARMUP_EVENTS:], concurrency=scale.ingest_concurrency,
        duration=scale.ingest_seconds, max_requests=len(requests) - WARMUP_EVENTS,
        check=is_processed,
    )
    pids = [server.pid for server in servers]
    cpu_before = total_cpu_seconds(pids)
    result, profile = await profile_while(
        case in context.profile_cases, pids, context.workdir / f"{case}.pyspy",
        scale.ingest_seconds, load,
    )
    cpu = total_cpu_seconds(pids) - cpu_before
    applied = await seed.count_payments(url, "succeeded")
    return IngestRun(result, applied - WARMUP_EVENTS, cpu, profile)


async def measure_baseline(context: RunContext, payments: list[seed.SeededPayment]) -> LoadResult:
    scale = context.scale
    server = baseline_server("baseline-ingest", "create_webhook_app", context.workdir,
                             STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET)
    template = load_template()
    async with running(server):
        now = int(time.time())
        requests = [webhook_request(server.port, succeeded_event(template, p, now), now)
                    for p in payments]
        await closed_loop(server.port, requests, concurrency=4, duration=1.0)
        # The bodies repeat in a long run: the baseline does not look past the signature.
        return await closed_loop(server.port, requests, concurrency=scale.ingest_concurrency,
                                 duration=scale.ingest_seconds)


async def shared_baseline(
    context: RunContext, payments: list[seed.SeededPayment]
) -> tuple[LoadResult, bool]:
    """Return the baseline measured earlier in this run, or measure and keep it now.

    The flag is true when the baseline was measured by this call.
    """
    earlier: LoadResult | None = context.baselines.get("webhook_ingest")
    if earlier is not None:
        return earlier, False
    measured = await measure_baseline(context, payments)
    context.baselines["webhook_ingest"] = measured
    return measured, True


def seeded_users(count: int) -> list[str]:
    return [f"user-{i % USERS:03d}" for i in range(count)]


def compare(
    context: RunContext, measured: IngestRun, baseline: LoadResult
) -> tuple[list[Row], dict[str, Any]]:
    """Check that every webhook was applied, and build the case's rows and details."""
    paystream, applied = measured.load, measured.applied
    if paystream.failures:
        raise RuntimeError(f"paystream rejected webhooks: {paystream.failures[:3]}")
    if baseline.failures:
        raise RuntimeError(f"the ingest baseline rejected webhooks: {baseline.failures[:3]}")
    if applied != paystream.succeeded:
        raise RuntimeError(
            f"paystream returned processed for {paystream.succeeded} webhooks, but "
            f"{applied} payments moved to succeeded."
        )

    rate_ratio = paystream.rate / baseline.rate
    rows = [
        Row("events applied per second", "1/s", paystream.rate, baseline.rate,
            f">= {TARGET_RATE_RATIO} x baseline", rate_ratio >= TARGET_RATE_RATIO, "higher"),
        Row("p99 answer time", "ms", paystream.latency(0.99) * 1000,
            baseline.latency(0.99) * 1000, "reported", None, "lower"),
    ]
    cpu_per_event = measured.server_cpu_seconds / max(applied, 1)
    details = {
        "concurrency": context.scale.ingest_concurrency,
        "paystream": {"events": paystream.succeeded, "seconds": paystream.elapsed,
                      "p50_ms": paystream.latency(0.5) * 1000, "applied_in_database": applied,
                      "server_cpu_ms_per_event": cpu_per_event * 1000},
        "baseline": {"requests": baseline.succeeded, "seconds": baseline.elapsed,
                     "p50_ms": baseline.latency(0.5) * 1000},
        "body_bytes": len(json.dumps(load_template())),
    }
    return rows, details


async def run(context: RunContext) -> CaseResult:
    count = WARMUP_EVENTS + context.scale.ingest_events
    url = await asyncio.to_thread(seed.create_database, context.workdir / "ingest.db")
    payments = await seed.insert_payments(url, seeded_users(count), ["pending"] * count)

    server = paystream_server("paystream-ingest", context.workdir,
                              **context.paystream_settings(url))
    async with running(server):
        measured = await measure_paystream(context, "webhook_ingest", [server], payments, url)
    baseline, _ = await shared_baseline(context, payments)

    rows, details = compare(context, measured, baseline)
    return CaseResult("webhook_ingest", "webhook ingest", rows, details, measured.profile)
