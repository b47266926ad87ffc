"""The app's own callback logic: functions paystream runs after it changes state.

Name a module in `PAYSTREAM_HOOKS`. paystream imports it at start-up and runs each function
in it that is decorated with `hook`, sync or async:

    from paystream.hooks import HookCall, hook

    @hook("payment.succeeded")
    async def ship(call: HookCall) -> None:
        await warehouse.ship(call.rows["order"]["id"])

A hook runs after the change has committed, never inside a webhook's response. Each
occurrence of a callback queues one run per hook in the same transaction as the change, so a
redelivered Stripe event, which changes nothing, queues nothing. A run that raises or times
out is retried with exponential backoff.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy import event as orm_event
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Base, HookPayload, HookRun, utcnow
from db.publish import row_to_dict

# Each callback, and the names of the rows its hooks receive.
CALLBACKS: dict[str, tuple[str, ...]] = {
    "payment.succeeded": ("payment", "order"),
    "payment.failed": ("payment", "order"),
    "refund.succeeded": ("refund", "payment", "order"),
    "refund.failed": ("refund", "payment", "order"),
    "subscription.started": ("recurring_payment", "order"),
    "subscription.updated": ("recurring_payment", "order"),
    "subscription.canceled": ("recurring_payment", "order"),
    "renewal.charged": ("recurring_payment", "order", "payment"),
}
# `stripe:<event type>` callbacks run for the events a dedicated webhook endpoint receives.
STRIPE_EVENT_PREFIX = "stripe:"
STRIPE_EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)+")

# Attribute on a decorated function that lists its callbacks.
HOOK_ATTRIBUTE = "__paystream_callbacks__"
# Keys in `session.info`: the outbox that queues runs, and the Stripe event being applied.
OUTBOX_KEY = "paystream.hook_outbox"
EVENT_KEY = "paystream.stripe_event"
_WAKE_KEY = "paystream.hook_wake_registered"

Function = TypeVar("Function", bound=Callable[..., Any])


@dataclass(frozen=True)
class HookCall:
    """The argument of a hook: the callback, the rows involved, and the cause of the change."""

    callback: str
    # Rows by name ("payment", "order", ...) as `db.publish.row_to_dict` shows them: the
    # GraphQL fields in snake_case. A renewal of 0 (a trial) has no payment: None.
    rows: dict[str, dict[str, Any] | None]
    # The status the payment, refund or recurring payment had before the change.
    previous_status: str | None
    # The Stripe event that caused the change, or None when a mutation's Stripe response did.
    event: dict[str, Any] | None
    # The run's id stays the same over retries and reruns, so a hook can de-duplicate on it.
    run_id: int
    attempt: int

    @classmethod
    def from_body(cls, body: Mapping[str, Any], run_id: int, attempt: int) -> HookCall:
        return cls(
            callback=body["callback"],
            rows=body["rows"],
            previous_status=body.get("previous_status"),
            event=body.get("event"),
            run_id=run_id,
            attempt=attempt,
        )


def check_callback(callback: str) -> None:
    """Raise ValueError unless `callback` names a callback a hook can register for."""
    if callback in CALLBACKS:
        return
    if callback.startswith(STRIPE_EVENT_PREFIX) and STRIPE_EVENT_TYPE.fullmatch(
        callback[len(STRIPE_EVENT_PREFIX) :]
    ):
        return
    raise ValueError(
        f"callback {callback!r} is not one of {', '.join(CALLBACKS)}, or stripe:<event type> "
        "such as stripe:charge.failed."
    )


def hook(*callbacks: str) -> Callable[[Function], Function]:
    """Register the decorated function to run for each of `callbacks`.

    The function takes one `HookCall`. An async function runs on the server's event loop;
    a plain function runs in a worker thread. Decorators stack, and one decorator may name
    several callbacks: `@hook("refund.succeeded", "refund.failed")`.
    """
    if not callbacks:
        raise ValueError("hook() needs at least one callback name.")
    for callback in callbacks:
        check_callback(callback)

    def register(function: Function) -> Function:
        registered: tuple[str, ...] = getattr(function, HOOK_ATTRIBUTE, ())
        added = tuple(callback for callback in callbacks if callback not in registered)
        setattr(function, HOOK_ATTRIBUTE, registered + added)
        return function

    return register


class Outbox(Protocol):
    """The hook runner as `emit` uses it: the hooks of each callback, and a wake-up call."""

    max_attempts: int

    def hook_names(self, callback: str) -> Sequence[str]: ...

    def wake(self) -> None: ...


async def emit(
    session: AsyncSession,
    callback: str,
    *,
    rows: Mapping[str, Base | None],
    previous_status: str | None = None,
) -> int:
    """Queue one run of every hook configured for `callback`, in the caller's transaction.

    Nothing runs before that transaction commits, and a rollback drops the runs together
    with the change that caused them. Returns the number of runs queued.
    """
    outbox: Outbox | None = session.info.get(OUTBOX_KEY)
    names = outbox.hook_names(callback) if outbox is not None else ()
    if outbox is None or not names:
        return 0
    expected = CALLBACKS.get(callback, ())
    if set(rows) != set(expected):
        raise ValueError(f"callback {callback} takes rows {expected}, not {tuple(rows)}.")

    # Flushing fills in ids and timestamps, so each row reads as a query would return it.
    await session.flush()
    stripe_event: dict[str, Any] | None = session.info.get(EVENT_KEY)
    body = {
        "callback": callback,
        "rows": {name: None if row is None else row_to_dict(row) for name, row in rows.items()},
        "previous_status": previous_status,
        "event": stripe_event,
    }
    payload = HookPayload(body=json.dumps(body, separators=(",", ":")))
    session.add(payload)
    await session.flush()

    now = utcnow()
    session.add_all(
        HookRun(
            payload_id=payload.id,
            hook=name,
            callback=callback,
            stripe_event_id=stripe_event.get("id") if stripe_event else None,
            status="pending",
            attempts=0,
            max_attempts=outbox.max_attempts,
            next_attempt_at=now,
        )
        for name in names
    )
    wake_after_commit(session)
    return len(names)


def wake_after_commit(session: AsyncSession) -> None:
    """Wake the hook runner once this session's transaction commits."""
    outbox: Outbox | None = session.info.get(OUTBOX_KEY)
    if outbox is None or session.info.get(_WAKE_KEY):
        return
    session.info[_WAKE_KEY] = True
    # SQLAlchemy fires `after_commit` on the event loop's thread, where setting an
    # asyncio.Event is safe.
    orm_event.listen(session.sync_session, "after_commit", lambda _session: outbox.wake())
