"""The hook runner: executes the runs `paystream.hooks.emit` queued in `hook_runs`.

The runner claims due runs and runs each in a task of its own with a timeout, so a slow
hook delays no other. It records every attempt in `hook_attempts` and retries failures with
exponential backoff until the run's `max_attempts` are used up. It never touches the payment
state: a hook that keeps failing leaves its run `failed` and nothing else.

Several processes may share one database. A claim takes the run's row lock (PostgreSQL,
with SKIP LOCKED) or the database's single write lock (SQLite) and marks the run `running`
until `locked_until`, so no two processes make the same attempt. A run whose process
stopped mid-attempt is claimed again once that lease has expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
from typing import Any

import httpx
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from callbacks.hook_config import HookConfig, HttpHook, is_async
from callbacks.http_hooks import DeliveryFailed, deliver
from db.engine import Database
from db.models import HookAttempt, HookPayload, HookRun, utcnow
from paystream.hooks import OUTBOX_KEY, HookCall
from paystream.settings import Settings

logger = logging.getLogger("paystream.hooks")

# Runs in flight per process. A run keeps no database connection open while its hook runs.
MAX_CONCURRENT_RUNS = 32
MAX_RETRY_DELAY_SECONDS = 3600.0
# A claim outlives the attempt's timeout by this much before another process may take over.
LEASE_MARGIN_SECONDS = 30.0
ERROR_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class ClaimedRun:
    run_id: int
    hook: str
    attempt: int
    body: dict[str, Any]


class HookNotConfigured(Exception):
    """The run's hook was removed from the configuration; retrying cannot help."""


def retry_delay(base: float, attempt: int) -> float:
    """Seconds before the retry that follows failed attempt number `attempt` (1-based)."""
    return float(min(base * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS))


class HookRunner:
    """Runs queued hook runs in the background; `start` and `stop` belong to the app lifespan."""

    def __init__(self, db: Database, config: HookConfig, settings: Settings) -> None:
        self.db = db
        self.config = config
        self.max_attempts = settings.hook_max_attempts
        self.retry_delay = settings.hook_retry_delay
        self.timeout = settings.hook_timeout
        self.poll_interval = settings.hook_poll_interval
        self._wakeup = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._runs: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        # Write sessions reach the runner as the outbox of `paystream.hooks.emit`.
        db.session_info[OUTBOX_KEY] = self

    def hook_names(self, callback: str) -> list[str]:
        return self.config.hook_names(callback)

    def wake(self) -> None:
        self._wakeup.set()

    async def start(self) -> None:
        self._http = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        self._loop = asyncio.create_task(self._run_forever(), name="hook-runner")
        logger.info("hook runner started with %d hook(s)", len(self.config.hooks))

    async def stop(self) -> None:
        """Cancel the loop and every attempt in flight.

        A canceled attempt keeps its run `running` until the lease expires. After that, the
        next runner to look, in this process or another, records it as interrupted and retries.
        """
        tasks = [task for task in (self._loop, *self._runs) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._loop = None
        self._runs.clear()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _run_forever(self) -> None:
        while True:
            self._wakeup.clear()
            delay = self.poll_interval
            try:
                delay = await self._dispatch()
            except Exception:
                logger.exception("claiming hook runs failed; trying again in %g s", delay)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    async def _dispatch(self) -> float:
        """Start every due run there is room for; return the seconds until the next look."""
        free = MAX_CONCURRENT_RUNS - len(self._runs)
        if free <= 0:
            # A finishing run wakes the loop.
            return self.poll_interval
        for claimed in await self._claim(free):
            task = asyncio.create_task(self._execute(claimed), name=f"hook-run-{claimed.run_id}")
            self._runs.add(task)
            task.add_done_callback(self._run_done)
        return await self._seconds_until_next_retry()

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Recording the outcome failed; the lease expires and the run is retried.
            logger.error("hook run task %s failed", task.get_name(), exc_info=task.exception())
        self.wake()

    async def _claim(self, limit: int) -> list[ClaimedRun]:
        lease = dt.timedelta(seconds=self.timeout + LEASE_MARGIN_SECONDS)
        claimed: list[HookRun] = []
        async with self.db.write() as session:
            now = utcnow()
            due = or_(
                and_(HookRun.status == "pending", HookRun.next_attempt_at <= now),
                and_(HookRun.status == "running", HookRun.locked_until < now),
            )
            runs = (
                await session.scalars(
                    select(HookRun)
                    .where(due)
                    .order_by(HookRun.next_attempt_at, HookRun.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            for run in runs:
                if run.status == "running" and not await self._record_interrupted(session, run):
                    continue
                run.status = "running"
                run.attempts += 1
                run.locked_until = now + lease
                session.add(HookAttempt(run_id=run.id, attempt=run.attempts, started_at=now))
                claimed.append(run)
            payload_ids = {run.payload_id for run in claimed}
            bodies = dict(
                (
                    await session.execute(
                        select(HookPayload.id, HookPayload.body).where(
                            HookPayload.id.in_(payload_ids)
                        )
                    )
                ).all()
            )
        return [
            ClaimedRun(run.id, run.hook, run.attempts, json.loads(bodies[run.payload_id]))
            for run in claimed
        ]

    async def _record_interrupted(self, session: AsyncSession, run: HookRun) -> bool:
        """Fail the attempt a stopped process left open; return whether the run may go on."""
        error = "interrupted: the process running this attempt stopped before it finished"
        attempt = await session.scalar(
            select(HookAttempt).where(
                HookAttempt.run_id == run.id, HookAttempt.attempt == run.attempts
            )
        )
        if attempt is not None and attempt.outcome is None:
            attempt.outcome = "failed"
            attempt.error = error
            attempt.finished_at = utcnow()
        run.last_error = error
        logger.warning("hook %s run %s attempt %s was interrupted", run.hook, run.id, run.attempts)
        if run.attempts < run.max_attempts:
            return True
        run.status = "failed"
        run.locked_until = None
        run.finished_at = utcnow()
        return False

    async def _seconds_until_next_retry(self) -> float:
        now = utcnow()
        async with self.db.read() as session:
            next_at = await session.scalar(
                select(HookRun.next_attempt_at)
                .where(HookRun.status == "pending", HookRun.next_attempt_at > now)
                .order_by(HookRun.next_attempt_at)
                .limit(1)
            )
        if next_at is None:
            return self.poll_interval
        if next_at.tzinfo is None:
            # SQLite returns the stored UTC time without its zone.
            next_at = next_at.replace(tzinfo=dt.UTC)
        return min(max((next_at - now).total_seconds(), 0.0), self.poll_interval)

    async def _execute(self, claimed: ClaimedRun) -> None:
        error: str | None = None
        final = False
        try:
            async with asyncio.timeout(self.timeout):
                await self._call(claimed)
        except TimeoutError:
            error = f"timed out after {self.timeout:g} s"
        except HookNotConfigured as exception:
            error, final = str(exception), True
        except DeliveryFailed as exception:
            error = str(exception)[:ERROR_CHARS]
        except Exception as exception:  # noqa: BLE001  # a hook may raise anything; the attempt records it
            error = f"{type(exception).__name__}: {exception}"[:ERROR_CHARS]
        await self._finish(claimed, error, final=final)

    async def _call(self, claimed: ClaimedRun) -> None:
        hook = self.config.hooks.get(claimed.hook)
        if hook is None:
            raise HookNotConfigured(f"hook {claimed.hook} is no longer configured")
        if isinstance(hook, HttpHook):
            if self._http is None:
                raise RuntimeError("the hook runner has not been started")
            body = {"hook": hook.name, "run_id": claimed.run_id, "attempt": claimed.attempt}
            await deliver(self._http, hook, {**body, **claimed.body})
            return
        call = HookCall.from_body(claimed.body, claimed.run_id, claimed.attempt)
        if is_async(hook):
            await hook.function(call)
        else:
            # NOTE: a sync hook that times out keeps running in its worker thread; only
            # its result is no longer awaited.
            await asyncio.to_thread(hook.function, call)

    async def _finish(self, claimed: ClaimedRun, error: str | None, *, final: bool) -> None:
        now = utcnow()
        async with self.db.write() as session:
            run = await session.get(HookRun, claimed.run_id, with_for_update=True)
            if run is None or run.status != "running" or run.attempts != claimed.attempt:
                # The lease expired and another runner took the run over.
                logger.warning(
                    "hook %s run %s attempt %s finished after its claim expired",
                    claimed.hook, claimed.run_id, claimed.attempt,
                )
                return
            attempt = await session.scalar(
                select(HookAttempt).where(
                    HookAttempt.run_id == run.id, HookAttempt.attempt == claimed.attempt
                )
            )
            if attempt is not None:
                attempt.finished_at = now
                attempt.outcome = "failed" if error else "succeeded"
                attempt.error = error
            run.locked_until = None
            run.last_error = error
            self._next_status(run, error, final, now)

    def _next_status(self, run: HookRun, error: str | None, final: bool, now: dt.datetime) -> None:
        if error is None:
            run.status = "succeeded"
            run.finished_at = now
            logger.info("hook %s run %s succeeded (attempt %d)", run.hook, run.id, run.attempts)
        elif final or run.attempts >= run.max_attempts:
            run.status = "failed"
            run.finished_at = now
            logger.error(
                "hook %s run %s failed for good after %d attempt(s): %s",
                run.hook, run.id, run.attempts, error,
            )
        else:
            delay = retry_delay(self.retry_delay, run.attempts)
            run.status = "pending"
            run.next_attempt_at = now + dt.timedelta(seconds=delay)
            logger.warning(
                "hook %s run %s attempt %d failed, retrying in %g s: %s",
                run.hook, run.id, run.attempts, delay, error,
            )
