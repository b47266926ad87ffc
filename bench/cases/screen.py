"""Change to screen: from a webhook's POST to its change arriving on every open subscription.

N admins (distinct subjects, one token and one socket each) watch `payments(orderId)` of one
order over graphql-transport-ws. An admin may read every row, so each of them must receive
every change. The sample events alternate payment_intent.processing and
payment_intent.payment_failed on the order's payment: each moves the payment to another
status, so each produces exactly one new one-row list per subscriber. Samples run one at a
time. The baseline forwards paystream's own `next` message, POSTed to a bare route, through
the same broadcaster (memory://) to N bare WebSockets.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import seed
from bench.cases.ingest import load_template, succeeded_event, webhook_request
from bench.common import PAYMENT_FIELDS, CaseResult, Row, RunContext, token_for
from bench.load import connect, http_request, percentile
from bench.profile import profile_while
from bench.servers import baseline_server, paystream_server, running, total_cpu_seconds
from bench.wsclient import WebSocketClient, open_websocket, subscribe

SUBSCRIPTION = (
    "subscription($orderId: Int) { payments(orderId: $orderId) { " + PAYMENT_FIELDS + " } }"
)
FAILED_TEMPLATE = (
    Path(__file__).resolve().parents[2] / "tests/stripe_events/payment_intent.payment_failed.json"
)
OPEN_CONCURRENCY = 25
# One sample at each subscriber count is sent first and not counted: the server is still
# settling from the sockets just opened.
WARMUP_SAMPLES = 1
ARRIVAL_TIMEOUT_SECONDS = 30.0
PAUSE_BETWEEN_SAMPLES_SECONDS = 0.05
TARGET_P99_MS = 50.0
TARGET_RATIO = 3.0


def sample_event(payment: seed.SeededPayment, sample: int) -> tuple[dict[str, Any], str]:
    """Build the webhook event of one sample, and return it with the payment status it leads to."""
    if sample % 2 == 0:
        event = succeeded_event(load_template(), payment, int(time.time()))
        event["type"] = "payment_intent.processing"
        event["data"]["object"]["status"] = "processing"
        status = "processing"
    else:
        failed: dict[str, Any] = json.loads(FAILED_TEMPLATE.read_text())
        event = copy.deepcopy(failed)
        intent = event["data"]["object"]
        intent.update(id=payment.intent_id, metadata={"paymentId": str(payment.payment_id)})
        intent["last_payment_error"] = dict(intent.get("last_payment_error") or {},
                                             message=f"bench decline {sample}")
        status = "failed"
    event["id"] = f"evt_bench_screen_{sample:06d}"
    event["created"] = int(time.time())
    return event, status


def check_next_message(statuses: list[str], sample: int, text: str) -> None:
    """Raise unless `text` is a `next` message whose payment has the sample's status."""
    message = json.loads(text)
    rows = message["payload"]["data"]["payments"]
    if message["type"] != "next" or rows[0]["status"] != statuses[sample]:
        raise RuntimeError(f"unexpected subscription message: {text[:300]}")


class ArrivalCounter:
    """A count of subscribers that received a message since `arm`, set once all of them have."""

    def __init__(self) -> None:
        self.remaining = 0
        self.done = asyncio.Event()

    def arm(self, clients: list[WebSocketClient]) -> None:
        self.remaining = len(clients)
        self.done.clear()
        for client in clients:
            client.inbox.clear()
            client.on_message = self.arrived

    def arrived(self, client: WebSocketClient) -> None:
        if len(client.inbox) == 1:
            self.remaining -= 1
            if self.remaining == 0:
                self.done.set()


async def open_many(
    count: int, opener: Callable[[int], Awaitable[WebSocketClient]]
) -> list[WebSocketClient]:
    """Open `count` sockets, `OPEN_CONCURRENCY` at a time."""
    gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_one(index: int) -> WebSocketClient:
        async with gate:
            return await opener(index)

    return list(await asyncio.gather(*(open_one(index) for index in range(count))))


@dataclass
class FanoutSamples:
    """Per counted sample: the time to the last arrival and the CPU each side spent, in seconds.

    Server CPU shows whether the server was busy for the whole latency or waited. Client CPU
    shows whether this process, which timestamps every arrival, kept up.
    """

    latencies: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "samples": len(self.latencies),
            "p50_ms": percentile(self.latencies, 0.5) * 1000,
            "p99_ms": percentile(self.latencies, 0.99) * 1000,
            "max_ms": max(self.latencies) * 1000,
            "server_cpu_ms_per_sample": statistics.mean(self.server_cpu) * 1000,
            "client_cpu_ms_per_sample": statistics.mean(self.client_cpu) * 1000,
            "latencies_ms": sorted(round(latency * 1000, 1) for latency in self.latencies),
        }


async def measure_fanout(
    clients: list[WebSocketClient],
    server_pids: list[int],
    port: int,
    requests: list[bytes],
    check: Callable[[int, str], None],
) -> FanoutSamples:
    """Send each request to `port` and time the last arrival among `clients`.

    The server CPU of a sample is summed over `server_pids`, the processes that serve
    `clients`.
    """
    counter = ArrivalCounter()
    connection = await connect(port)
    measured = FanoutSamples()
    try:
        for sample, request in enumerate(requests):
            counter.arm(clients)
            server_cpu, client_cpu = total_cpu_seconds(server_pids), time.process_time()
            sent_at = time.perf_counter()
            status, body = await connection.send(request)
            if status != 200:
                raise RuntimeError(f"the change request failed with {status}: {body[:300]!r}")
            await asyncio.wait_for(counter.done.wait(), ARRIVAL_TIMEOUT_SECONDS)
            last = max(client.inbox[0][0] for client in clients)
            if sample >= WARMUP_SAMPLES:
                measured.latencies.append(last - sent_at)
                measured.server_cpu.append(total_cpu_seconds(server_pids) - server_cpu)
                measured.client_cpu.append(time.process_time() - client_cpu)
            for client in clients:
                check(sample, client.inbox[0][1])
            await asyncio.sleep(PAUSE_BETWEEN_SAMPLES_SECONDS)
    finally:
        connection.close()
        for client in clients:
            client.on_message = None
    return measured


async def measure_paystream(
    context: RunContext,
) -> tuple[dict[int, FanoutSamples], str, dict[str, Any] | None]:
    """Measure every subscriber count on one paystream server, opening more sockets each time.

    Returns the samples by subscriber count, the last `next` message (the baseline's payload)
    and the profile, if one was taken.
    """
    database = context.workdir / "screen.db"
    url = await asyncio.to_thread(seed.create_database, database)
    [payment] = await seed.insert_payments(url, ["owner"], ["pending"])
    server = paystream_server("paystream-screen", context.workdir,
                              **context.paystream_settings(url))
    counts = context.scale.screen_samples
    samples: dict[int, FanoutSamples] = {}
    clients: list[WebSocketClient] = []
    profile = None
    payload = ""
    sample_number = 0
    async with running(server):
        websocket_url = f"ws://127.0.0.1:{server.port}/graphql"

        async def open_admin(index: int) -> WebSocketClient:
            token = token_for(f"admin-{len(clients) + index:05d}", "admin")
            client, _ = await subscribe(websocket_url, token, SUBSCRIPTION,
                                        {"orderId": payment.order_id})
            return client

        try:
            for count, sample_count in sorted(counts.items()):
                clients += await open_many(count - len(clients), open_admin)
                requests, statuses = [], []
                for _ in range(WARMUP_SAMPLES + sample_count):
                    event, status = sample_event(payment, sample_number)
                    requests.append(webhook_request(server.port, event, int(time.time())))
                    statuses.append(status)
                    sample_number += 1

                check = functools.partial(check_next_message, statuses)
                profiling = count == max(counts) and "change_to_screen" in context.profile_cases
                work = measure_fanout(clients, [server.pid], server.port, requests, check)
                samples[count], sampled = await profile_while(
                    profiling, server.pid, context.workdir / "screen.pyspy", 60, work
                )
                profile = sampled or profile
                payload = clients[0].inbox[0][1]
        finally:
            for client in clients:
                client.close()
    return samples, payload, profile


async def measure_baseline(
    context: RunContext, payload: str, counts: dict[int, int]
) -> dict[int, FanoutSamples]:
    """Measure the baseline at each subscriber count, with `counts` mapping it to samples."""
    server = baseline_server("baseline-screen", "create_fanout_app", context.workdir)
    samples: dict[int, FanoutSamples] = {}
    clients: list[WebSocketClient] = []
    async with running(server):
        websocket_url = f"ws://127.0.0.1:{server.port}/ws"

        async def open_bare(index: int) -> WebSocketClient:
            client = await open_websocket(websocket_url)
            _, text = await client.receive()
            if text != "ready":
                raise RuntimeError(f"the baseline socket sent {text!r} before ready")
            return client

        def check(sample: int, text: str) -> None:
            if text != payload:
                raise RuntimeError(f"the baseline forwarded {text[:300]!r}")

        request = http_request("POST", "/publish", server.port, payload.encode(),
                               {"Content-Type": "application/json"})
        try:
            for count, sample_count in sorted(counts.items()):
                clients += await open_many(count - len(clients), open_bare)
                requests = [request] * (WARMUP_SAMPLES + sample_count)
                samples[count] = await measure_fanout(
                    clients, [server.pid], server.port, requests, check
                )
        finally:
            for client in clients:
                client.close()
    return samples


def p99_row(
    count: int, paystream: FanoutSamples, baseline: FanoutSamples, with_target: bool
) -> Row:
    """Build the row of the p99 latencies at `count` subscribers.

    The row is judged by the target when `with_target` is true, and only reported otherwise.
    """
    ours = percentile(paystream.latencies, 0.99) * 1000
    theirs = percentile(baseline.latencies, 0.99) * 1000
    if with_target:
        met: bool | None = ours <= TARGET_P99_MS and ours <= TARGET_RATIO * theirs
        text = f"<= {TARGET_P99_MS:g} ms and <= {TARGET_RATIO:g} x baseline"
    else:
        met, text = None, "reported"
    return Row(f"p99 at N = {count}", "ms", ours, theirs, text, met, "lower")


async def run(context: RunContext) -> CaseResult:
    paystream, payload, profile = await measure_paystream(context)
    baseline = await measure_baseline(context, payload, context.scale.screen_samples)
    context.baselines["change_to_screen"] = baseline

    rows = []
    details: dict[str, Any] = {"payload_bytes": len(payload.encode()), "by_subscribers": {}}
    largest = max(paystream)
    for count in sorted(paystream):
        rows.append(p99_row(count, paystream[count], baseline[count], with_target=count == largest))
        details["by_subscribers"][str(count)] = {
            "paystream": paystream[count].summary(),
            "baseline": baseline[count].summary(),
        }
    return CaseResult("change_to_screen", "change to screen", rows, details, profile)
