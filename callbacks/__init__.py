"""Stripe webhooks: verification, de-duplication, and the system callbacks."""
