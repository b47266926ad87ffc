"""Orders: what a user is asked to pay."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

from db.models import Order
from paystream import money
from paystream.errors import InvalidInput
from paystream.services import Services
from paystream.viewer import Viewer

logger = logging.getLogger("paystream.orders")

# Metadata is stored with the order and sent to every subscriber of its changes.
MAX_METADATA_BYTES = 16_384


async def create_order(
    services: Services,
    viewer: Viewer,
    *,
    price: Decimal,
    currency: str,
    metadata: dict[str, Any] | None,
    user_id: str | None = None,
) -> Order:
    """Create a pending order for the caller, or for `user_id` when an admin requests it."""
    caller = viewer.require_authenticated()
    if user_id is not None and user_id != caller:
        viewer.require_admin("create an order for another user")
    currency = money.normalize_currency(currency)
    if metadata is not None and len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise InvalidInput(
            f"metadata is {len(json.dumps(metadata))} bytes of JSON; the limit is "
            f"{MAX_METADATA_BYTES}."
        )
    # Rejects prices that do not convert exactly to the currency's minor unit, and stores the
    # price with exactly the currency's decimal places (19.9900 USD becomes 19.99).
    price = money.from_minor_units(money.to_minor_units(price, currency), currency)

    async with services.db.write() as session:
        order = Order(
            user_id=user_id or caller,
            price=price,
            currency=currency,
            status="pending",
            kind="one_time",
            metadata_=metadata,
        )
        session.add(order)
    logger.info("order %s created for user %s", order.id, order.user_id)
    return order
