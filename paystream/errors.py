"""Errors that reach clients: each carries a stable code and a one-sentence message."""

from __future__ import annotations


class PaystreamError(Exception):
    """A rejected request: the message names the value and the rule it broke.

    `extensions` is read by graphql-core when it wraps the exception, so every GraphQL
    error built from one carries `extensions.code`.
    """

    code = "BAD_REQUEST"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = {"code": self.code}


class InvalidInput(PaystreamError):
    code = "BAD_USER_INPUT"


class MoneyError(InvalidInput):
    """An amount or currency that breaks one of Stripe's money rules."""


class NotFound(PaystreamError):
    code = "NOT_FOUND"


class Conflict(PaystreamError):
    """The request is valid but the row's current state does not allow it."""

    code = "CONFLICT"


class Forbidden(PaystreamError):
    code = "FORBIDDEN"


class Unauthenticated(PaystreamError):
    code = "UNAUTHENTICATED"


class StripeNotConfigured(PaystreamError):
    code = "STRIPE_NOT_CONFIGURED"

    def __init__(self) -> None:
        super().__init__("Stripe is not configured: set STRIPE_SECRET_KEY to take payments.")


class StripeUnavailable(PaystreamError):
    code = "STRIPE_UNAVAILABLE"


class StripeRejected(PaystreamError):
    """Stripe refused a request as invalid; the message is Stripe's own."""

    code = "STRIPE_REJECTED"
