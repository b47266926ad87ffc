from __future__ import annotations

from pathlib import Path

from gql.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"


def test_schema_file_matches_code():
    # Regenerate with `paystream export-schema` after changing the GraphQL types.
    assert SCHEMA_FILE.read_text() == build_schema().as_str() + "\n"


def test_schema_names_client_operations():
    sdl = build_schema().as_str()
    for signature in (
        "order(id: Int!): Order!",
        "payments(orderId: Int = null, status: String = null): [Payment!]!",
        "refunds(paymentId: Int = null, orderId: Int = null): [Refund!]!",
        "paymentConfig: PaymentConfig!",
        "createOrder(price: Decimal!, currency: String!, metadata: JSON = null",
        "pay(orderId: Int!, currency: String!, amount: Int!, paymentMethodId: String = null)",
        "refund(paymentId: Int!, refundAmount: Int!): Refund!",
    ):
        assert signature in sdl
