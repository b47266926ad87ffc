"""The GraphQL layer: types, queries, mutations, live subscriptions and the viewer seam."""
