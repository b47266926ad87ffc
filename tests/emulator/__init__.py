"""End-to-end tests against localstripe, the local Stripe emulator."""
