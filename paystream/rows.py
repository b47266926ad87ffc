"""Reading one row for update, as every state change does before it writes."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from paystream.errors import NotFound

Row = TypeVar("Row")


async def lock_row(session: AsyncSession, model: type[Row], row_id: int, what: str) -> Row:
    """Read the row with `row_id` FOR UPDATE; raise NotFound naming `what` when it is missing.

    SQLite ignores FOR UPDATE, where the write transaction's lock already serializes writers.
    """
    table: Any = model
    row = await session.scalar(select(table).where(table.id == row_id).with_for_update())
    if row is None:
        raise NotFound(f"{what} {row_id} does not exist.")
    return row  # type: ignore[no-any-return]  # the select is of `model`
