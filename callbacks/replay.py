"""Reading and replaying stored Stripe events, for the `paystream events` commands.

A replay goes through `receive_event`, the path of a live delivery, so it is exactly-once in
the same way: a processed or ignored event is a duplicate and changes nothing, and a failed
one is applied again.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from callbacks.events import (
    MAIN_ENDPOINT,
    Handler,
    InvalidEvent,
    Outcome,
    endpoint_handlers,
    parse_event,
    receive_event,
)
from callbacks.hook_config import HookConfig
from db.engine import Database
from db.models import StripeEvent


class EventNotFound(LookupError):
    def __init__(self, event_id: str, endpoint: str | None = None) -> None:
        where = f" for endpoint {endpoint}" if endpoint is not None else ""
        super().__init__(f"event {event_id} is not stored{where}: paystream never received it.")


@dataclass(frozen=True)
class ReplayResult:
    event_id: str
    event_type: str
    endpoint: str
    outcome: Outcome
    # Why the event was not replayed at all, in which case its stored row is unchanged.
    error: str | None = None


async def list_events(
    db: Database,
    *,
    event_type: str | None = None,
    outcome: str | None = None,
    endpoint: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
) -> list[StripeEvent]:
    """List stored events, newest first by Stripe's `created` time, from `since` on."""
    query = select(StripeEvent)
    if event_type is not None:
        query = query.where(StripeEvent.type == event_type)
    if outcome is not None:
        query = query.where(StripeEvent.outcome == outcome)
    if endpoint is not None:
        query = query.where(StripeEvent.endpoint == endpoint)
    if since is not None:
        query = query.where(StripeEvent.created >= int(since.timestamp()))
    query = query.order_by(
        StripeEvent.created.desc(), StripeEvent.received_at.desc(), StripeEvent.endpoint
    ).limit(limit)
    async with db.read() as session:
        return list((await session.scalars(query)).all())


async def get_events(db: Database, event_id: str, endpoint: str | None = None) -> list[StripeEvent]:
    """Read the stored rows of one event, one per endpoint that received it."""
    query = select(StripeEvent).where(StripeEvent.id == event_id)
    if endpoint is not None:
        query = query.where(StripeEvent.endpoint == endpoint)
    async with db.read() as session:
        rows = list((await session.scalars(query.order_by(StripeEvent.endpoint))).all())
    if not rows:
        raise EventNotFound(event_id, endpoint)
    return rows


def event_as_json(row: StripeEvent) -> dict[str, Any]:
    """Convert a stored row to a JSON object, parsing the payload when it is valid JSON."""
    try:
        payload: Any = json.loads(row.payload)
    except json.JSONDecodeError:
        payload = row.payload
    return {
        "id": row.id,
        "type": row.type,
        "endpoint": row.endpoint,
        "api_version": row.api_version,
        "created": dt.datetime.fromtimestamp(row.created, dt.UTC).isoformat(),
        "received_at": _isoformat(row.received_at),
        "processed_at": _isoformat(row.processed_at),
        "outcome": row.outcome,
        "error": row.error,
        "payload": payload,
    }


def _isoformat(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    # SQLite returns naive datetimes, and every stored time is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


async def replay_event(
    db: Database, hooks: HookConfig, event_id: str, endpoint: str | None = None
) -> list[ReplayResult]:
    """Apply a stored event again through the live-delivery path, at each endpoint that
    received it, or only at `endpoint`."""
    rows = await get_events(db, event_id, endpoint)
    return [await _replay(db, hooks, row) for row in rows]


async def replay_failed(db: Database, hooks: HookConfig) -> list[ReplayResult]:
    """Replay every event whose last attempt failed, oldest first."""
    async with db.read() as session:
        failed = (
            await session.scalars(
                select(StripeEvent)
                .where(StripeEvent.outcome == Outcome.FAILED)
                .order_by(StripeEvent.created, StripeEvent.received_at, StripeEvent.endpoint)
            )
        ).all()
    return [await _replay(db, hooks, row) for row in failed]


async def _replay(db: Database, hooks: HookConfig, row: StripeEvent) -> ReplayResult:
    handlers: Mapping[str, Handler] | None = None
    if row.endpoint != MAIN_ENDPOINT:
        configured = hooks.endpoints.get(row.endpoint)
        if configured is None:
            return ReplayResult(
                row.id,
                row.type,
                row.endpoint,
                Outcome.FAILED,
                f"endpoint {row.endpoint} is no longer in PAYSTREAM_HOOKS_FILE.",
            )
        handlers = endpoint_handlers(configured.events)
    try:
        event = parse_event(row.payload.encode())
    except InvalidEvent as error:
        # Only a row edited by hand fails here: the payload was parsed when it arrived.
        return ReplayResult(row.id, row.type, row.endpoint, Outcome.FAILED, str(error))
    outcome = await receive_event(db, event, row.payload, endpoint=row.endpoint, handlers=handlers)
    return ReplayResult(row.id, row.type, row.endpoint, outcome)
