"""Shared by the hook suites: a real HTTP hook receiver, the hooks file, and waiting for runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from db.models import HookAttempt, HookRun, StripeEvent
from paystream.settings import Settings
from tests.conftest import make_settings, signed_headers, uvicorn_server

HOOK_SECRET = "phsec_test_http_hook_secret"
CHARGES_SECRET = "whsec_charges_endpoint_secret"
# The functions of tests/hook_app.py by hook name.
RECORD = "tests.hook_app.record"
SLOW = "tests.hook_app.slow"
FLAKY = "tests.hook_app.flaky"
CHARGE_FAILED = "tests.hook_app.charge_failed"
SHOP = "shop"


def verify(body: bytes, header: str, secret: str, tolerance: int = 300) -> bool:
    """The README's verification example, used as written by the test receiver."""
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or abs(time.time() - timestamp) > tolerance:
        return False
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


class Receiver:
    """An app's HTTP hook endpoint: it verifies each body's signature and records it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.rejected = 0
        # Respond with 500 to this many requests before accepting.
        self.failures_left = 0
        self.url = ""

    async def endpoint(self, request: Request) -> Response:
        body = await request.body()
        if not verify(body, request.headers.get("paystream-signature", ""), HOOK_SECRET):
            self.rejected += 1
            return JSONResponse({"error": "invalid signature"}, 400)
        if self.failures_left > 0:
            self.failures_left -= 1
            return JSONResponse({"error": "the shop is restarting"}, 500)
        self.bodies.append(json.loads(body))
        self.headers.append(dict(request.headers))
        return Response(status_code=204)


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hooks", receiver.endpoint, methods=["POST"])])
    async with uvicorn_server(app) as url:
        receiver.url = f"{url}/hooks"
        yield receiver


def write_hooks_file(
    path: Path, receiver_url: str, callbacks: Sequence[str], events: Sequence[str]
) -> Path:
    path.write_text(
        "[[http_hooks]]\n"
        f'name = "{SHOP}"\n'
        f'url = "{receiver_url}"\n'
        f'secret = "{HOOK_SECRET}"\n'
        f"callbacks = {json.dumps(list(callbacks))}\n"
        "\n[[endpoints]]\n"
        'name = "charges"\n'
        f'secrets = ["{CHARGES_SECRET}"]\n'
        f"events = {json.dumps(list(events))}\n"
    )
    return path


def hook_settings(database_url: str, broadcast_url: str, hooks_file: Path) -> Settings:
    """Settings with tests/hook_app.py, the hooks file, and retries fast enough for tests."""
    return make_settings(
        database_url,
        broadcast_url=broadcast_url,
        paystream_hooks="tests.hook_app",
        paystream_hooks_file=str(hooks_file),
        hook_max_attempts=3,
        hook_retry_delay=0.05,
        hook_timeout=5.0,
        hook_poll_interval=0.5,
    )


async def post_to_endpoint(
    client: httpx.AsyncClient, name: str, event: dict[str, Any], secret: str = CHARGES_SECRET
) -> httpx.Response:
    payload = json.dumps(event).encode()
    return await client.post(
        f"/webhooks/stripe/{name}", content=payload, headers=signed_headers(payload, secret)
    )


async def hook_runs(app: Starlette) -> list[HookRun]:
    async with app.state.services.db.read() as session:
        return list((await session.scalars(select(HookRun).order_by(HookRun.id))).all())


async def attempts_of(app: Starlette, run_id: int) -> list[HookAttempt]:
    async with app.state.services.db.read() as session:
        rows = await session.scalars(
            select(HookAttempt).where(HookAttempt.run_id == run_id).order_by(HookAttempt.attempt)
        )
        return list(rows.all())


async def event_rows(app: Starlette) -> dict[tuple[str, str], str | None]:
    """The outcome of every stored event, by (event id, endpoint)."""
    async with app.state.services.db.read() as session:
        rows = (await session.scalars(select(StripeEvent))).all()
    return {(row.id, row.endpoint): row.outcome for row in rows}


async def wait_for_runs(
    app: Starlette,
    done: Callable[[list[HookRun]], bool],
    timeout: float = 10.0,
) -> list[HookRun]:
    """The hook runs once `done` holds for them; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        runs = await hook_runs(app)
        if done(runs):
            return runs
        if time.monotonic() > deadline:
            states = [(run.hook, run.callback, run.status, run.attempts) for run in runs]
            raise AssertionError(f"hook runs did not settle within {timeout} s: {states}")
        await asyncio.sleep(0.02)


def all_finished(runs: list[HookRun]) -> bool:
    return bool(runs) and all(run.status in ("succeeded", "failed") for run in runs)


def by_hook(runs: list[HookRun]) -> dict[str, list[HookRun]]:
    grouped: dict[str, list[HookRun]] = {}
    for run in runs:
        grouped.setdefault(run.hook, []).append(run)
    return grouped
