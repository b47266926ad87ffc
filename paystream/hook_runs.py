"""Hook runs for admins: listing them with their attempts, and running one again."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import HookAttempt, HookRun, utcnow
from paystream.errors import Conflict, InvalidInput, NotFound
from paystream.hooks import wake_after_commit
from paystream.services import Services
from paystream.viewer import Viewer

STATUSES = ("pending", "running", "succeeded", "failed")
MAX_LIMIT = 500


async def list_hook_runs(
    services: Services, viewer: Viewer, *, status: str | None, limit: int
) -> list[tuple[HookRun, list[HookAttempt]]]:
    """Return the newest runs first, each with its attempts in order."""
    viewer.require_admin("read hook runs")
    if status is not None and status not in STATUSES:
        raise InvalidInput(f"status {status!r} is not one of {', '.join(STATUSES)}.")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidInput(f"limit {limit} must be between 1 and {MAX_LIMIT}.")

    statement = select(HookRun).order_by(HookRun.id.desc()).limit(limit)
    if status is not None:
        statement = statement.where(HookRun.status == status)
    async with services.db.read() as session:
        runs = (await session.scalars(statement)).all()
        attempts = await _attempts(session, [run.id for run in runs])
    return [(run, attempts[run.id]) for run in runs]


async def rerun_hook(
    services: Services, viewer: Viewer, run_id: int
) -> tuple[HookRun, list[HookAttempt]]:
    """Queue a finished run again, with a fresh allowance of attempts."""
    viewer.require_admin("rerun a hook")
    async with services.db.write() as session:
        run = await session.get(HookRun, run_id, with_for_update=True)
        if run is None:
            raise NotFound(f"hook run {run_id} does not exist.")
        if run.status not in ("succeeded", "failed"):
            raise Conflict(
                f"hook run {run_id} is {run.status}; only a succeeded or failed run can be "
                "run again."
            )
        if run.hook not in services.hooks.hooks:
            raise Conflict(f"hook run {run_id}'s hook {run.hook} is no longer configured.")

        run.status = "pending"
        run.max_attempts = run.attempts + services.settings.hook_max_attempts
        run.next_attempt_at = utcnow()
        run.finished_at = None
        wake_after_commit(session)
        attempts = await _attempts(session, [run.id])
    return run, attempts[run.id]


async def _attempts(
    session: AsyncSession, run_ids: Sequence[int]
) -> defaultdict[int, list[HookAttempt]]:
    grouped: defaultdict[int, list[HookAttempt]] = defaultdict(list)
    if not run_ids:
        return grouped
    rows = await session.scalars(
        select(HookAttempt)
        .where(HookAttempt.run_id.in_(run_ids))
        .order_by(HookAttempt.run_id, HookAttempt.attempt)
    )
    for attempt in rows:
        grouped[attempt.run_id].append(attempt)
    return grouped
