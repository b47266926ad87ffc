"""Run localstripe on 127.0.0.1 with an in-memory store and a Prices shim.

Usage: python tests/emulator/run_localstripe.py [--port 8420]

localstripe (GPL-3.0-or-later) is a test and demo peer only: it runs in this separate process
and paystream's packages never import it. Once the server accepts connections, the script
prints `localstripe listening on http://127.0.0.1:PORT` on stdout, with the real port when
`--port 0` requests a free one. SIGTERM or SIGINT stops it with exit code 0. The access log and
webhook delivery results go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import warnings
from typing import Any

from aiohttp import web

# localstripe 1.15.10 registers plain-function route handlers at import, and aiohttp 3.14
# emits a DeprecationWarning for each of them.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from localstripe import resources
    from localstripe.errors import UserError
    from localstripe.server import app, get_post_data, json_response

HOST = "127.0.0.1"
SHUTDOWN_TIMEOUT_SECONDS = 5.0

PRICE_PARAMETERS = frozenset(
    {"active", "currency", "metadata", "nickname", "product", "product_data", "recurring",
     "unit_amount"}
)
RECURRING_PARAMETERS = frozenset({"interval", "interval_count", "usage_type"})


def keep_store_in_memory() -> None:
    """Stop localstripe from pickling its store to /tmp/localstripe.pickle and reloading it.

    localstripe writes the whole store after every write request and reads it back at start.
    """

    def skip_disk(store: resources.Store) -> None:
        return None

    resources.Store.dump_to_disk = skip_disk
    resources.Store.try_load_from_disk = skip_disk


def price_from_plan(plan: resources.Plan) -> dict[str, Any]:
    """Build the Price object for a Plan, as the Prices API shows a legacy plan."""
    return {
        "id": plan.id,
        "object": "price",
        "active": plan.active,
        "billing_scheme": plan.billing_scheme,
        "created": plan.created,
        "currency": plan.currency,
        "livemode": False,
        "lookup_key": None,
        "metadata": dict(plan.metadata),
        "nickname": plan.nickname,
        "product": plan.product,
        "recurring": {
            "interval": plan.interval,
            "interval_count": plan.interval_count,
            "trial_period_days": plan.trial_period_days,
            "usage_type": plan.usage_type,
        },
        "tax_behavior": "unspecified",
        "tiers_mode": plan.tiers_mode,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": plan.amount,
        "unit_amount_decimal": None if plan.amount is None else str(plan.amount),
    }


def check_price_parameters(data: dict[str, Any]) -> dict[str, Any]:
    """Return the `recurring` hash after rejecting what the Plan store cannot represent."""
    unexpected = sorted(set(data) - PRICE_PARAMETERS)
    if unexpected:
        raise UserError(400, "Unexpected " + ", ".join(unexpected))

    recurring = data.get("recurring")
    if not isinstance(recurring, dict) or "interval" not in recurring:
        raise UserError(
            400, "Only recurring prices are supported by this emulator: pass recurring[interval]."
        )
    unexpected = sorted(set(recurring) - RECURRING_PARAMETERS)
    if unexpected:
        raise UserError(400, "Unexpected recurring[" + "], recurring[".join(unexpected) + "]")

    if ("product" in data) == ("product_data" in data):
        raise UserError(400, "Pass exactly one of product or product_data.")
    if "unit_amount" not in data:
        raise UserError(400, "Missing required param: unit_amount.")
    return recurring


async def create_price(request: web.Request) -> web.Response:
    """Handle POST /v1/prices by storing the recurring price as a Plan with a `price_` id."""
    data = dict(await get_post_data(request) or {})
    data.pop("expand", None)
    recurring = check_price_parameters(data)

    plan = resources.Plan(
        id="price_" + resources.random_id(14),
        product=data.get("product") or data["product_data"],
        amount=data["unit_amount"],
        currency=data.get("currency"),
        interval=recurring["interval"],
        interval_count=recurring.get("interval_count", 1),
        usage_type=recurring.get("usage_type", "licensed"),
        nickname=data.get("nickname"),
        metadata=data.get("metadata"),
        active=data.get("active", True),
    )
    return json_response(price_from_plan(plan))


async def retrieve_price(request: web.Request) -> web.Response:
    """Handle GET /v1/prices/{id} for shim prices and plain plans alike."""
    price_id = request.match_info["id"]
    try:
        plan = resources.Plan._api_retrieve(price_id)
    except UserError:
        raise UserError(404, f"No such price: '{price_id}'") from None
    return json_response(price_from_plan(plan))


def rename_price_to_plan(items: Any) -> Any:
    """Rename `price` to `plan` in subscription items, because localstripe only reads `plan`."""
    if isinstance(items, list):
        for item in items:
            if isinstance(item, dict) and "price" in item:
                item["plan"] = item.pop("price")
    return items


def install_prices_shim() -> None:
    """Add the Prices routes and let subscriptions take `items[].price`.

    Without the shim, localstripe returns 404 for /v1/prices, rejects `items[].price` on
    subscription create with 400, and silently ignores it on subscription update.
    """
    app.router.add_post("/v1/prices", create_price)
    app.router.add_get("/v1/prices/{id}", retrieve_price)

    original_init = resources.Subscription.__init__
    original_update = resources.Subscription._update

    def init_with_prices(self: Any, *args: Any, items: Any = None, **kwargs: Any) -> None:
        original_init(self, *args, items=rename_price_to_plan(items), **kwargs)

    def update_with_prices(self: Any, *args: Any, items: Any = None, **kwargs: Any) -> None:
        original_update(self, *args, items=rename_price_to_plan(items), **kwargs)

    def item_price(self: Any) -> dict[str, Any]:
        return price_from_plan(self.plan)

    resources.Subscription.__init__ = init_with_prices
    resources.Subscription._update = update_with_prices
    resources.SubscriptionItem.price = property(item_price)


def install_retry_after_decline_shim() -> None:
    """Let a declined payment intent take a new payment method and be confirmed again.

    On Stripe, setting a new payment method on a `requires_payment_method` intent makes it
    `requires_confirmation` (https://docs.stripe.com/payments/paymentintents/lifecycle).
    localstripe 1.15.10 keeps the declined charge as the latest charge, so without the shim
    the intent stays `requires_payment_method` and the next confirm fails with 400.
    """
    original_update = resources.PaymentIntent._update

    def update_dropping_declined_charge(self: Any, **data: Any) -> None:
        original_update(self, **data)
        charge = self.latest_charge
        if "payment_method" in data and charge is not None and charge.status == "failed":
            self.latest_charge = None

    resources.PaymentIntent._update = update_dropping_declined_charge


async def serve(port: int) -> None:
    """Serve localstripe on HOST until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS)
    await runner.setup()
    try:
        try:
            await web.TCPSite(runner, HOST, port).start()
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else str(error)
            raise SystemExit(
                f"failed to listen on {HOST}:{port}: {reason}; pass --port 0 for a free port"
            ) from None

        bound_port = runner.addresses[0][1]
        print(f"localstripe listening on http://{HOST}:{bound_port}", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--port", type=int, default=8420, help="TCP port on 127.0.0.1; 0 picks a free one"
    )
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_store_in_memory()
    install_prices_shim()
    install_retry_after_decline_shim()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
