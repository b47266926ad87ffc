"""paystream: a self-hosted Stripe payments backend with a live GraphQL API."""
