"""Pay: the `pay` mutation with pm_card_visa against localstripe, median latency.

Each sample first creates an order (not timed), then times `pay` for it, which creates and
confirms a PaymentIntent on localstripe. The baseline route makes the same two SDK calls with
the same client settings and nothing else. Samples alternate between the two servers, one
request at a time, so both see the same localstripe and the same machine load.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

from bench import seed
from bench.common import CaseResult, Row, RunContext, graphql_request, token_for
from bench.load import HttpConnection, connect, http_request, percentile
from bench.profile import profile_while
from bench.servers import baseline_server, paystream_server, running

CREATE_ORDER = (
    'mutation { createOrder(price: "20.00", currency: "usd") { id } }'
)
PAY = (
    "mutation($orderId: Int!) { pay(orderId: $orderId, currency: \"usd\", amount: 2000, "
    'paymentMethodId: "pm_card_visa") { id status } }'
)
PAYER = "payer"
WARMUP_SAMPLES = 3
TARGET_RATIO = 1.5


async def graphql(connection: HttpConnection, request: bytes) -> dict[str, Any]:
    status, body = await connection.send(request)
    answer: dict[str, Any] = json.loads(body) if status == 200 else {}
    if status != 200 or answer.get("errors"):
        raise RuntimeError(f"paystream returned {status}: {body[:300]!r}")
    data: dict[str, Any] = answer["data"]
    return data


async def time_paystream_pay(connection: HttpConnection, port: int, token: str) -> float:
    order = await graphql(connection, graphql_request(port, CREATE_ORDER, token=token))
    request = graphql_request(port, PAY, {"orderId": int(order["createOrder"]["id"])}, token)
    started = time.perf_counter()
    data = await graphql(connection, request)
    elapsed = time.perf_counter() - started
    if data["pay"]["status"] != "succeeded":
        raise RuntimeError(f"pay left the payment {data['pay']['status']}, not succeeded")
    return elapsed


async def time_baseline_pay(connection: HttpConnection, request: bytes) -> float:
    started = time.perf_counter()
    status, body = await connection.send(request)
    elapsed = time.perf_counter() - started
    if status != 200 or json.loads(body)["status"] != "succeeded":
        raise RuntimeError(f"the pay baseline returned {status}: {body[:300]!r}")
    return elapsed


async def alternate(context: RunContext, paystream_port: int, paystream_pid: int,
                    baseline_port: int) -> tuple[list[float], list[float], dict[str, Any] | None]:
    token = token_for(PAYER)
    body = json.dumps({"amount": seed.AMOUNT, "currency": seed.CURRENCY,
                       "paymentMethodId": "pm_card_visa"}).encode()
    baseline_request = http_request("POST", "/pay", baseline_port, body,
                                    {"Content-Type": "application/json"})
    ours_connection = await connect(paystream_port)
    theirs_connection = await connect(baseline_port)
    ours: list[float] = []
    theirs: list[float] = []

    async def samples() -> None:
        for sample in range(WARMUP_SAMPLES + context.scale.pay_samples):
            paystream_time = await time_paystream_pay(ours_connection, paystream_port, token)
            baseline_time = await time_baseline_pay(theirs_connection, baseline_request)
            if sample >= WARMUP_SAMPLES:
                ours.append(paystream_time)
                theirs.append(baseline_time)

    try:
        _, profile = await profile_while(
            "pay" in context.profile_cases, paystream_pid, context.workdir / "pay.pyspy", 60,
            samples(),
        )
    finally:
        ours_connection.close()
        theirs_connection.close()
    return ours, theirs, profile


async def run(context: RunContext) -> CaseResult:
    database = context.workdir / "pay.db"
    url = await asyncio.to_thread(seed.create_database, database)
    settings = context.paystream_settings(url)
    paystream = paystream_server("paystream-pay", context.workdir, **settings)
    baseline = baseline_server("baseline-pay", "create_pay_app", context.workdir,
                               STRIPE_SECRET_KEY=context.stripe_secret_key,
                               STRIPE_API_BASE=context.stripe_url)
    async with running(paystream), running(baseline):
        ours, theirs, profile = await alternate(context, paystream.port, paystream.pid,
                                                baseline.port)

    ours_median, theirs_median = statistics.median(ours) * 1000, statistics.median(theirs) * 1000
    rows = [
        Row("median latency", "ms", ours_median, theirs_median, f"<= {TARGET_RATIO} x baseline",
            ours_median <= TARGET_RATIO * theirs_median, "lower"),
        Row("p90 latency", "ms", percentile(ours, 0.9) * 1000, percentile(theirs, 0.9) * 1000,
            "reported", None, "lower"),
    ]
    details = {"samples": len(ours), "warmup_samples": WARMUP_SAMPLES,
               "localstripe": context.stripe_url}
    return CaseResult("pay", "pay", rows, details, profile)
