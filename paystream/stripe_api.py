"""Every call paystream makes to Stripe, through the async `StripeClient`.

Calls that create something carry an idempotency key derived from our own row, so a retried
mutation never charges or refunds twice (https://docs.stripe.com/api/idempotent_requests).
Stripe's exceptions end here: callers get plain dicts or a `PaystreamError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import stripe

from paystream.errors import StripeNotConfigured, StripeRejected, StripeUnavailable
from paystream.settings import Settings

logger = logging.getLogger("paystream.stripe")

# Safe to retry because each creating call carries a deterministic idempotency key.
MAX_NETWORK_RETRIES = 1
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class CardDeclined:
    """A confirmation the card issuer declined; the intent stays open for another try."""

    code: str
    message: str
    payment_intent: dict[str, Any] | None


def _translate(error: stripe.StripeError, action: str) -> Exception:
    if isinstance(error, stripe.InvalidRequestError):
        detail = error.user_message or error._message or "invalid request"
        return StripeRejected(f"Stripe rejected the request to {action}: {detail}")
    if isinstance(error, stripe.AuthenticationError | stripe.PermissionError):
        # Stripe's message repeats part of the key, so it is not passed on.
        return StripeUnavailable(f"Stripe refused the configured API key while trying to {action}.")
    logger.warning("Stripe call to %s failed: %s: %s", action, type(error).__name__, error)
    return StripeUnavailable(
        f"Stripe could not be reached to {action}; retrying the request is safe."
    )


class StripeGateway:
    """The one owner of outgoing Stripe calls."""

    def __init__(self, settings: Settings) -> None:
        self._client: stripe.StripeClient | None = None
        self._http: stripe.HTTPXClient | None = None
        if settings.stripe_secret_key is None:
            return
        base_addresses: dict[str, str] = {}
        if settings.stripe_api_base:
            base_addresses["api"] = settings.stripe_api_base
        self._http = stripe.HTTPXClient(timeout=TIMEOUT_SECONDS)
        self._client = stripe.StripeClient(
            settings.stripe_secret_key.get_secret_value(),
            base_addresses=base_addresses,  # type: ignore[arg-type]  # a TypedDict of URLs
            http_client=self._http,
            max_network_retries=MAX_NETWORK_RETRIES,
        )

    @property
    def configured(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> stripe.StripeClient:
        if self._client is None:
            raise StripeNotConfigured()
        return self._client

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close_async()

    async def create_payment_intent(
        self,
        *,
        payment_id: int,
        amount: int,
        currency: str,
        metadata: dict[str, str],
        payment_method: str | None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "metadata": metadata,
            "payment_method_types": ["card"],
        }
        if payment_method:
            params["payment_method"] = payment_method
        try:
            intent = await self.client.v1.payment_intents.create_async(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"payment-{payment_id}"},
            )
        except stripe.StripeError as error:
            raise _translate(error, "create a payment intent") from None
        return intent.to_dict()

    async def confirm_payment_intent(
        self, payment_intent_id: str, new_payment_method: str | None = None
    ) -> dict[str, Any] | CardDeclined:
        """Confirm an intent, first switching it to `new_payment_method` when one is given.

        A decline is returned, not raised.
        """
        try:
            if new_payment_method:
                # Set the method first rather than passing it to confirm: both work on Stripe,
                # and this also works on local emulators that do not accept it on confirm.
                await self.client.v1.payment_intents.update_async(
                    payment_intent_id, params={"payment_method": new_payment_method}
                )
            intent = await self.client.v1.payment_intents.confirm_async(payment_intent_id)
        except stripe.CardError as error:
            declined = error.error.payment_intent if error.error else None
            return CardDeclined(
                code=error.code or "card_declined",
                message=error.user_message or error._message or "The card was declined.",
                payment_intent=declined.to_dict() if declined is not None else None,
            )
        except stripe.StripeError as error:
            raise _translate(error, "confirm the payment intent") from None
        return intent.to_dict()

    async def retrieve_payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        try:
            intent = await self.client.v1.payment_intents.retrieve_async(payment_intent_id)
        except stripe.StripeError as error:
            raise _translate(error, "read the payment intent") from None
        return intent.to_dict()

    async def create_refund(
        self, *, refund_id: int, payment_intent_id: str, amount: int, metadata: dict[str, str]
    ) -> dict[str, Any]:
        try:
            refund = await self.client.v1.refunds.create_async(
                params={"payment_intent": payment_intent_id, "amount": amount, "metadata": metadata},
                options={"idempotency_key": f"refund-{refund_id}"},
            )
        except stripe.StripeError as error:
            raise _translate(error, "create a refund") from None
        return refund.to_dict()

    async def retrieve_price(self, price_id: str) -> dict[str, Any]:
        try:
            price = await self.client.v1.prices.retrieve_async(price_id)
        except stripe.StripeError as error:
            raise _translate(error, f"read price {price_id}") from None
        return price.to_dict()

    async def create_customer(self, user_id: str) -> dict[str, Any]:
        try:
            customer = await self.client.v1.customers.create_async(
                params={"metadata": {"userId": user_id}},
                options={"idempotency_key": f"customer-{user_id}"},
            )
        except stripe.StripeError as error:
            raise _translate(error, "create a customer") from None
        return customer.to_dict()

    async def set_default_payment_method(self, customer_id: str, payment_method: str) -> str:
        """Attach a payment method to the customer and make it the invoices' default.

        Returns the attached method's id, which differs from test ids like `pm_card_visa`.
        """
        try:
            attached = await self.client.v1.payment_methods.attach_async(
                payment_method, params={"customer": customer_id}
            )
            await self.client.v1.customers.update_async(
                customer_id,
                params={"invoice_settings": {"default_payment_method": attached.id}},
            )
        except stripe.CardError as error:
            raise StripeRejected(
                f"the card was declined: {error.user_message or error.code}"
            ) from None
        except stripe.StripeError as error:
            raise _translate(error, "attach the payment method") from None
        return attached.id

    async def create_subscription(
        self, *, recurring_payment_id: int, customer_id: str, price_id: str, metadata: dict[str, str]
    ) -> dict[str, Any]:
        try:
            subscription = await self.client.v1.subscriptions.create_async(
                params={
                    "customer": customer_id,
                    "items": [{"price": price_id}],
                    "metadata": metadata,
                    # An invoice needing action leaves the subscription incomplete instead of
                    # failing the call, so the client can finish it with the client secret.
                    "payment_behavior": "allow_incomplete",
                    "expand": ["latest_invoice.payment_intent"],
                },
                options={"idempotency_key": f"recurring-payment-{recurring_payment_id}"},
            )
        except stripe.StripeError as error:
            raise _translate(error, "create a subscription") from None
        return subscription.to_dict()

    async def cancel_subscription(
        self, subscription_id: str, *, at_period_end: bool
    ) -> dict[str, Any]:
        try:
            if at_period_end:
                subscription = await self.client.v1.subscriptions.update_async(
                    subscription_id, params={"cancel_at_period_end": True}
                )
            else:
                subscription = await self.client.v1.subscriptions.cancel_async(subscription_id)
        except stripe.StripeError as error:
            raise _translate(error, f"cancel subscription {subscription_id}") from None
        return subscription.to_dict()

    # Reads for `paystream reconcile`

    async def retrieve_refund(self, refund_id: str) -> dict[str, Any]:
        try:
            found = await self.client.v1.refunds.retrieve_async(refund_id)
        except stripe.StripeError as error:
            raise _translate(error, f"read refund {refund_id}") from None
        return found.to_dict()

    async def list_refunds(self, payment_intent_id: str) -> list[dict[str, Any]]:
        """List every refund of the payment intent, newest first."""
        try:
            page = await self.client.v1.refunds.list_async(
                params={"payment_intent": payment_intent_id, "limit": 100}
            )
            return [item.to_dict() async for item in page.auto_paging_iter()]
        except stripe.StripeError as error:
            raise _translate(error, f"list the refunds of {payment_intent_id}") from None

    async def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Read the subscription with its latest invoice expanded."""
        try:
            found = await self.client.v1.subscriptions.retrieve_async(
                subscription_id, params={"expand": ["latest_invoice"]}
            )
        except stripe.StripeError as error:
            raise _translate(error, f"read subscription {subscription_id}") from None
        return found.to_dict()

    async def list_events(self, event_type: str, created_since: int) -> list[dict[str, Any]]:
        """List every event of `event_type` created at or after the Unix time `created_since`.

        Stripe returns only the events of the last 30 days.
        """
        try:
            page = await self.client.v1.events.list_async(
                params={"type": event_type, "created": {"gte": created_since}, "limit": 100}
            )
            return [item.to_dict() async for item in page.auto_paging_iter()]
        except stripe.StripeError as error:
            raise _translate(error, f"list {event_type} events") from None

    # Webhook endpoints, for `paystream webhooks setup`

    async def list_webhook_endpoints(self) -> list[dict[str, Any]]:
        try:
            page = await self.client.v1.webhook_endpoints.list_async(params={"limit": 100})
            return [item.to_dict() async for item in page.auto_paging_iter()]
        except stripe.StripeError as error:
            raise _translate(error, "list the webhook endpoints") from None

    async def create_webhook_endpoint(
        self, *, url: str, enabled_events: list[str], api_version: str, description: str
    ) -> dict[str, Any]:
        """Create an endpoint. Only this response contains its signing secret.

        No idempotency key of our own: Stripe replays a key's first response for 24 hours, so
        running setup again after deleting the endpoint would get back the deleted one.
        """
        try:
            endpoint = await self.client.v1.webhook_endpoints.create_async(
                params={
                    "url": url,
                    "enabled_events": enabled_events,  # type: ignore[typeddict-item]  # a Literal list
                    "api_version": api_version,  # type: ignore[typeddict-item]  # a Literal
                    "description": description,
                }
            )
        except stripe.StripeError as error:
            raise _translate(error, f"create the webhook endpoint for {url}") from None
        return endpoint.to_dict()

    async def update_webhook_endpoint(
        self, endpoint_id: str, *, enabled_events: list[str], enable: bool
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"enabled_events": enabled_events}
        if enable:
            params["disabled"] = False
        try:
            endpoint = await self.client.v1.webhook_endpoints.update_async(
                endpoint_id, params=params  # type: ignore[arg-type]  # a Literal list
            )
        except stripe.StripeError as error:
            raise _translate(error, f"update webhook endpoint {endpoint_id}") from None
        return endpoint.to_dict()
