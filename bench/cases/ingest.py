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
from pathlib import Path
from typing import Any

from bench import seed
from bench.common import WEBHOOK_SECRET, CaseResult, Row, RunContext
from bench.load import LoadResult, closed_loop, http_request
from bench.profile import profile_while
from bench.servers import baseline_server, paystream_server, running
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


async def measure_paystream(
    context: RunContext, payments: list[seed.SeededPayment], database: Path, url: str
) -> tuple[LoadResult, int, dict[str, Any] | None]:
    scale = context.scale
    settings = context.paystream_settings(url)
    server = paystream_server("paystream-ingest", context.workdir, **settings)
    template = load_template()
    async with running(server):
        # Signed now, because paystream rejects timestamps more than 300 s old.
        now = int(time.time())
        requests = [webhook_request(server.port, succeeded_event(template, p, now), now)
                    for p in payments]
        warmup = await closed_loop(server.port, requests[:WARMUP_EVENTS], concurrency=4,
                                   duration=30, max_requests=WARMUP_EVENTS, check=is_processed)
        if warmup.succeeded != WARMUP_EVENTS:
            raise RuntimeError(f"the ingest warm-up failed: {warmup.failures[:3]}")
        load = closed_loop(
            server.port, requests[WARMUP_EVENTS:], concurrency=scale.ingest_concurrency,
            duration=scale.ingest_seconds, max_requests=len(requests) - WARMUP_EVENTS,
            check=is_processed,
        )
        result, profile = await profile_while(
            "webhook_ingest" in context.profile_cases, server.pid, context.workdir / "ingest.pyspy",
            scale.ingest_seconds, load,
        )
    applied = await asyncio.to_thread(seed.count_payments, database, "succeeded")
    return result, applied - WARMUP_EVENTS, profile


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


async def run(context: RunContext) -> CaseResult:
    scale = context.scale
    database = context.workdir / "ingest.db"
    url = await asyncio.to_thread(seed.create_database, database)
    count = WARMUP_EVENTS + scale.ingest_events
    users = [f"user-{i % USERS:03d}" for i in range(count)]
    payments = await asyncio.to_thread(seed.insert_payments, database, users, ["pending"] * count)

    paystream, applied, profile = await measure_paystream(context, payments, database, url)
    baseline = await measure_baseline(context, payments)
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
    details = {
        "concurrency": scale.ingest_concurrency,
        "paystream": {"events": paystream.succeeded, "seconds": paystream.elapsed,
                      "p50_ms": paystream.latency(0.5) * 1000, "applied_in_database": applied},
        "baseline": {"requests": baseline.succeeded, "seconds": baseline.elapsed,
                     "p50_ms": baseline.latency(0.5) * 1000},
        "body_bytes": len(json.dumps(load_template())),
    }
    return CaseResult("webhook_ingest", "webhook ingest", rows, details, profile)
