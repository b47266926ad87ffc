"""Publication of row changes: one message per changed row, after its transaction commits."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Base

logger = logging.getLogger("paystream.publish")

DEFAULT_CHANNEL_PREFIX = "paystream."
# The tables live subscriptions follow; changes to the others are not broadcast.
LIVE_TABLES = frozenset({"orders", "payments", "refunds", "recurring_payments"})
# Columns kept out of published messages: they never reach a subscriber.
PRIVATE_COLUMNS = frozenset({"stripe_snapshot_at"})


def channel_for(table: str, prefix: str = DEFAULT_CHANNEL_PREFIX) -> str:
    return prefix + table


def row_to_dict(row: Base) -> dict[str, Any]:
    """Return the row's columns by attribute name, in JSON-safe form."""
    mapper = inspect(row).mapper
    data: dict[str, Any] = {}
    for attribute in mapper.column_attrs:
        name = attribute.key.rstrip("_")
        if name in PRIVATE_COLUMNS:
            continue
        value = getattr(row, attribute.key)
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        data[name] = value
    return data


def encode_change(operation: str, row: Base) -> tuple[str, str]:
    """Return the table and message text for one changed row."""
    table = row.__tablename__
    body = {
        "op": operation,
        "table": table,
        "user_id": getattr(row, "user_id", None),
        "row": row_to_dict(row),
    }
    return table, json.dumps(body, separators=(",", ":"))


class Broadcast(Protocol):
    async def publish(self, channel: str, message: Any) -> None: ...


class Publisher:
    """Sends committed changes to the broadcaster, one message per row."""

    def __init__(
        self,
        broadcast: Broadcast,
        prefix: str = DEFAULT_CHANNEL_PREFIX,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.broadcast = broadcast
        self.prefix = prefix
        # Called before publishing, so this process's cached reads never outlive a commit.
        self.on_change = on_change

    async def publish(self, changes: Iterable[tuple[str, Base]]) -> None:
        if self.on_change is not None:
            self.on_change()
        for operation, row in changes:
            if row.__tablename__ not in LIVE_TABLES:
                continue
            table, message = encode_change(operation, row)
            channel = channel_for(table, self.prefix)
            try:
                await self.broadcast.publish(channel, message)
            except Exception:
                # The change is committed; subscribers catch up on their next change or
                # reconnect, because every subscription starts from the current rows.
                logger.exception("publishing a change to %s failed", channel)


def collect_changes(session: AsyncSession) -> None:
    """Record every row this session inserts or really changes, keyed by table and id."""
    changes: dict[tuple[str, Any], tuple[str, Base]] = {}
    session.info["changes"] = changes

    @event.listens_for(session.sync_session, "after_flush")
    def _after_flush(sync_session: Session, _context: Any) -> None:
        for row in sync_session.new:
            if isinstance(row, Base):
                key = (row.__tablename__, inspect(row).identity)
                changes[key] = ("insert", row)
        for row in sync_session.dirty:
            if isinstance(row, Base) and sync_session.is_modified(row):
                key = (row.__tablename__, inspect(row).identity)
                operation = changes[key][0] if key in changes else "update"
                changes[key] = (operation, row)
