"""Reading and replaying stored Stripe events, for the `paystream events` commands.

A replay goes through `receive_event`, the path of a live delivery, so it is exactly-once in
the same way: a processed or ignored event is a duplicate and changes nothing, and a failed
one is applied again.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from callbacks.events import Outcome, parse_event, receive_event
from db.engine import Database
from db.models import StripeEvent


class EventNotFound(LookupError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id} is not stored: paystream never received it.")


@dataclass(frozen=True)
class ReplayResult:
    event_id: str
    event_type: str
    outcome: Outcome


async def list_events(
    db: Database,
    *,
    event_type: str | None = None,
    outcome: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 50,
) -> list[StripeEvent]:
    """Stored events, newest first by Stripe's `created` time; `since` bounds that time."""
    query = select(StripeEvent)
    if event_type is not None:
        query = query.where(StripeEvent.type == event_type)
    if outcome is not None:
        query = query.where(StripeEvent.outcome == outcome)
    if since is not None:
        query = query.where(StripeEvent.created >= int(since.timestamp()))
    query = query.order_by(StripeEvent.created.desc(), StripeEvent.received_at.desc()).limit(limit)
    async with db.read() as session:
        return list((await session.scalars(query)).all())


async def get_event(db: Database, event_id: str) -> StripeEvent:
    async with db.read() as session:
        row = await session.get(StripeEvent, event_id)
    if row is None:
        raise EventNotFound(event_id)
    return row


def event_as_json(row: StripeEvent) -> dict[str, Any]:
    """The stored row as a JSON object, with the payload parsed when it is valid JSON."""
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
    # SQLite returns naive datetimes; every stored time is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


async def replay_event(db: Database, event_id: str) -> ReplayResult:
    """Apply a stored event again through the live-delivery path."""
    row = await get_event(db, event_id)
    # The payload was verified and parsed when it arrived, so parsing cannot fail here
    # unless the row was edited by hand; then InvalidEvent names the problem.
    event = parse_event(row.payload.encode())
    outcome = await receive_event(db, event, row.payload, endpoint=row.endpoint)
    return ReplayResult(row.id, row.type, outcome)


async def replay_failed(db: Database) -> list[ReplayResult]:
    """Replay every event whose last attempt failed, oldest first."""
    async with db.read() as session:
        failed = (
            await session.scalars(
                select(StripeEvent.id)
                .where(StripeEvent.outcome == Outcome.FAILED)
                .order_by(StripeEvent.created, StripeEvent.received_at)
            )
        ).all()
    return [await replay_event(db, event_id) for event_id in failed]
