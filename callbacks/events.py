"""Receiving one verified Stripe event: record it, apply it exactly once, report the outcome.

The event row and the state change it causes commit in one transaction. A duplicate
delivery, even a concurrent one, finds the row (or collides on its primary key) and changes
nothing. A handler that fails rolls back, and the failure is recorded in a transaction of
its own so that the event is processed again when Stripe redelivers it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from callbacks.payment import handle_payment_intent_event
from callbacks.recurring import (
    handle_invoice_paid_event,
    handle_invoice_payment_failed_event,
    handle_subscription_event,
)
from callbacks.refund import handle_charge_refunded_event, handle_refund_event
from db.engine import Database
from db.models import StripeEvent, utcnow
from paystream import hooks

logger = logging.getLogger("paystream.callbacks")

Handler = Callable[[AsyncSession, dict[str, Any]], Awaitable[bool]]

MAIN_ENDPOINT = "main"

# Each Stripe event type paystream applies, and the system callback that applies it.
EVENT_HANDLERS: dict[str, Handler] = {
    "payment_intent.succeeded": handle_payment_intent_event,
    "payment_intent.processing": handle_payment_intent_event,
    "payment_intent.payment_failed": handle_payment_intent_event,
    "payment_intent.canceled": handle_payment_intent_event,
    "refund.created": handle_refund_event,
    "refund.updated": handle_refund_event,
    "refund.failed": handle_refund_event,
    "charge.refunded": handle_charge_refunded_event,
    "customer.subscription.created": handle_subscription_event,
    "customer.subscription.updated": handle_subscription_event,
    "customer.subscription.deleted": handle_subscription_event,
    "invoice.paid": handle_invoice_paid_event,
    "invoice.payment_succeeded": handle_invoice_paid_event,
    "invoice.payment_failed": handle_invoice_payment_failed_event,
}


async def run_event_hooks(session: AsyncSession, event: dict[str, Any]) -> bool:
    """Queue a run of each hook registered for `stripe:<the event's type>`."""
    await hooks.emit(session, hooks.STRIPE_EVENT_PREFIX + event["type"], rows={})
    return True


def endpoint_handlers(event_types: Iterable[str]) -> dict[str, Handler]:
    """The handlers of a dedicated endpoint: its event types run hooks, no system callback."""
    return dict.fromkeys(event_types, run_event_hooks)


class Outcome(enum.StrEnum):
    PROCESSED = "processed"
    IGNORED = "ignored"
    FAILED = "failed"
    DUPLICATE = "duplicate"


class InvalidEvent(ValueError):
    """A verified body that is not a Stripe event."""


def parse_event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers too long to convert.
        raise InvalidEvent("the body is not JSON.") from None
    if not isinstance(event, dict) or event.get("object") != "event":
        raise InvalidEvent("the body is not a Stripe event object.")
    if not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise InvalidEvent("the event has no id or type.")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise InvalidEvent("the event has no data.object.")
    return event


async def receive_event(
    db: Database,
    event: dict[str, Any],
    payload: str,
    *,
    endpoint: str = MAIN_ENDPOINT,
    handlers: Mapping[str, Handler] | None = None,
) -> Outcome:
    """Apply one verified event exactly once per endpoint and return what happened to it.

    `handlers` maps the event types the endpoint applies to their handler: the system
    callbacks (EVENT_HANDLERS) for the main endpoint, which a dedicated endpoint must
    replace with its own.
    """
    if handlers is None:
        if endpoint != MAIN_ENDPOINT:
            raise ValueError(f"endpoint {endpoint!r} needs its own handlers.")
        handlers = EVENT_HANDLERS
    try:
        try:
            return await _apply_once(db, event, payload, endpoint, handlers)
        except _RowInserted:
            # Another delivery of this event inserted its row first and committed. Reading
            # that row again shows whether it was applied, or failed and is applied now.
            return await _apply_once(db, event, payload, endpoint, handlers)
    except _Duplicate:
        return Outcome.DUPLICATE
    except Exception as error:
        logger.exception("event %s (%s) failed", event["id"], event["type"])
        await _record_failure(db, event, payload, endpoint, error)
        return Outcome.FAILED


class _Duplicate(Exception):
    pass


class _RowInserted(Exception):
    """A concurrent delivery committed the event's row between our read and our insert."""


async def _apply_once(
    db: Database,
    event: dict[str, Any],
    payload: str,
    endpoint: str,
    handlers: Mapping[str, Handler],
) -> Outcome:
    async with db.write() as session:
        row = await session.scalar(
            select(StripeEvent)
            .where(StripeEvent.id == event["id"], StripeEvent.endpoint == endpoint)
            .with_for_update()
        )
        if row is not None and row.outcome in (Outcome.PROCESSED, Outcome.IGNORED):
            raise _Duplicate()
        if row is None:
            row = _new_event_row(event, payload, endpoint)
            session.add(row)
            # Flushing now makes a concurrent delivery of the same event wait on, then
            # collide with, this primary key instead of applying the event a second time.
            # Only this flush may raise _RowInserted: an IntegrityError from a handler is
            # a failure of that handler, not a duplicate delivery.
            try:
                await session.flush()
            except IntegrityError:
                raise _RowInserted() from None

        handler = handlers.get(event["type"])
        # Hooks queued by the handler's state changes receive the event that caused them.
        session.info[hooks.EVENT_KEY] = event
        applied = await handler(session, event) if handler is not None else False
        if handler is None:
            logger.debug(
                "event %s: type %s is not handled at endpoint %s",
                event["id"], event["type"], endpoint,
            )

        row.outcome = Outcome.PROCESSED if applied else Outcome.IGNORED
        row.processed_at = utcnow()
        row.error = None
        return Outcome(row.outcome)


def _storable_time(value: object) -> bool:
    # A 64-bit column stores any real Unix time; anything larger is not one.
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**62


def _new_event_row(event: dict[str, Any], payload: str, endpoint: str) -> StripeEvent:
    created = event.get("created")
    return StripeEvent(
        id=event["id"],
        type=event["type"],
        endpoint=endpoint,
        api_version=event.get("api_version"),
        created=created if _storable_time(created) else int(dt.datetime.now(dt.UTC).timestamp()),
        payload=payload,
        received_at=utcnow(),
    )


async def _record_failure(
    db: Database, event: dict[str, Any], payload: str, endpoint: str, error: Exception
) -> None:
    message = f"{type(error).__name__}: {error}"[:2000]
    try:
        async with db.write() as session:
            row = await session.get(StripeEvent, (event["id"], endpoint), with_for_update=True)
            if row is None:
                row = _new_event_row(event, payload, endpoint)
                session.add(row)
            elif row.outcome in (Outcome.PROCESSED, Outcome.IGNORED):
                return
            row.outcome = Outcome.FAILED
            row.processed_at = utcnow()
            row.error = message
    except Exception:
        logger.exception("recording the failure of event %s failed", event["id"])
