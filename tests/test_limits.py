"""Query depth and size limits, and the settings that turn introspection and GraphiQL off."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from paystream.settings import Settings
from tests.conftest import make_settings, running_app, token_for
from tests.ws_client import LEGACY_WS, TRANSPORT_WS, GraphQLWebSocket, bearer

# Depth 2 as Strawberry's QueryDepthLimiter counts it: root fields are at depth 0.
NESTED = "query { payments { order { id } } }"
INTROSPECTION = "query { __schema { queryType { name } } }"
TYPE_INTROSPECTION = 'query { __type(name: "Payment") { name } }'
# graphql-core's message for a document over the default GRAPHQL_MAX_TOKENS.
TOKEN_LIMIT_ERROR = "Syntax Error: Document contains more than 2000 tokens. Parsing aborted."


@contextlib.asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            yield http


async def post_query(http: httpx.AsyncClient, query: str) -> httpx.Response:
    return await http.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token_for('alice')}"},
    )


def messages(body: dict[str, Any]) -> list[str]:
    return [error["message"] for error in body.get("errors") or []]


def aliased_config_query(count: int) -> str:
    """A valid query that selects `paymentConfig` under `count` aliases."""
    fields = " ".join(f"c{index}: paymentConfig {{ brandName }}" for index in range(count))
    return f"query {{ {fields} }}"


# Depth


async def test_depth_over_limit_rejected(database_url):
    async with client_for(make_settings(database_url, graphql_max_depth=1)) as http:
        response = await post_query(http, NESTED)

    body = response.json()
    assert body["data"] is None
    assert messages(body) == ["'anonymous' exceeds maximum operation depth of 1"]


async def test_depth_at_limit_accepted(database_url):
    async with client_for(make_settings(database_url, graphql_max_depth=2)) as http:
        response = await post_query(http, NESTED)

    body = response.json()
    assert response.status_code == 200
    assert "errors" not in body
    assert body["data"] == {"payments": []}


async def test_depth_counts_fragments(database_url):
    query = """
    query Deep { payments { ...WithOrder } }
    fragment WithOrder on Payment { order { id } }
    """
    async with client_for(make_settings(database_url, graphql_max_depth=1)) as http:
        response = await post_query(http, query)

    body = response.json()
    assert body["data"] is None
    assert messages(body) == ["'Deep' exceeds maximum operation depth of 1"]


async def test_depth_default_limit_rejects(database_url):
    # No valid query in this schema nests deeper than `payments { order { id } }`, so this
    # document is invalid for other reasons too, and the depth error is reported with them.
    nested = "id { " * 10 + "id" + " }" * 10
    query = f"query {{ payments {{ order {{ {nested} }} }} }}"
    async with client_for(make_settings(database_url)) as http:
        response = await post_query(http, query)

    body = response.json()
    assert body["data"] is None
    assert "'anonymous' exceeds maximum operation depth of 10" in messages(body)


# Size


async def test_tokens_over_limit_rejected(database_url):
    async with client_for(make_settings(database_url, graphql_max_tokens=200)) as http:
        response = await post_query(http, aliased_config_query(100))

    body = response.json()
    assert body["data"] is None
    assert messages(body) == [
        "Syntax Error: Document contains more than 200 tokens. Parsing aborted."
    ]


async def test_tokens_default_limit_rejects(database_url):
    async with client_for(make_settings(database_url)) as http:
        response = await post_query(http, aliased_config_query(1000))

    body = response.json()
    assert body["data"] is None
    assert messages(body) == [TOKEN_LIMIT_ERROR]


async def test_tokens_under_limit_accepted(database_url):
    async with client_for(make_settings(database_url, graphql_max_tokens=200)) as http:
        response = await post_query(http, aliased_config_query(10))

    body = response.json()
    assert response.status_code == 200
    assert "errors" not in body
    assert body["data"]["c9"] == {"brandName": "Test Shop"}


def huge_subscription() -> str:
    """About 2.4 MB of subscription: an unlimited parse of it blocks the event loop for seconds."""
    fields = " ".join(f"a{index}: payments {{ id }}" for index in range(100_000))
    return f"subscription {{ {fields} }}"


async def test_tokens_limit_closes_transport_ws(server_url):
    socket = GraphQLWebSocket(server_url, TRANSPORT_WS)
    await socket.connect(bearer(token_for("alice")))

    started = time.monotonic()
    await socket.subscribe(huge_subscription())
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await socket.receive()
    elapsed = time.monotonic() - started

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert closed.value.rcvd.reason == TOKEN_LIMIT_ERROR
    # The time bound fails if any parse before the extensions ignores the token limit.
    assert elapsed < 2


async def test_tokens_limit_errors_legacy_ws(server_url):
    socket = GraphQLWebSocket(server_url, LEGACY_WS)
    await socket.connect(bearer(token_for("alice")))

    started = time.monotonic()
    await socket.subscribe(huge_subscription())
    reply = await socket.receive()
    elapsed = time.monotonic() - started

    assert reply["type"] == "error"
    assert reply["payload"]["message"] == TOKEN_LIMIT_ERROR
    assert elapsed < 2
    await socket.close()


async def test_syntax_error_closes_transport_ws(server_url):
    socket = GraphQLWebSocket(server_url, TRANSPORT_WS)
    await socket.connect(bearer(token_for("alice")))

    await socket.subscribe("subscription { payments { id ")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await socket.receive()

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4400
    assert closed.value.rcvd.reason == "Syntax Error: Expected Name, found <EOF>."


# Introspection


async def test_introspection_on_by_default(database_url):
    async with client_for(make_settings(database_url)) as http:
        response = await post_query(http, INTROSPECTION)

    body = response.json()
    assert "errors" not in body
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_introspection_off_rejects_schema(database_url):
    settings = make_settings(database_url, graphql_introspection=False)
    async with client_for(settings) as http:
        response = await post_query(http, INTROSPECTION)

    body = response.json()
    assert body["data"] is None
    assert messages(body)[0] == (
        "GraphQL introspection has been disabled, but the requested query contained the "
        "field '__schema'."
    )


async def test_introspection_off_rejects_type(database_url):
    settings = make_settings(database_url, graphql_introspection=False)
    async with client_for(settings) as http:
        response = await post_query(http, TYPE_INTROSPECTION)

    body = response.json()
    assert body["data"] is None
    assert messages(body)[0] == (
        "GraphQL introspection has been disabled, but the requested query contained the "
        "field '__type'."
    )


async def test_introspection_off_keeps_queries(database_url):
    settings = make_settings(database_url, graphql_introspection=False)
    async with client_for(settings) as http:
        response = await post_query(http, "query { __typename paymentConfig { brandName } }")

    body = response.json()
    assert "errors" not in body
    assert body["data"] == {"__typename": "Query", "paymentConfig": {"brandName": "Test Shop"}}


# GraphiQL


async def test_graphiql_served_by_default(database_url):
    async with client_for(make_settings(database_url)) as http:
        response = await http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_graphiql_off_not_served(database_url):
    async with client_for(make_settings(database_url, graphiql=False)) as http:
        response = await http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 404
    assert "graphiql" not in response.text.lower()


async def test_graphiql_off_keeps_api(database_url):
    async with client_for(make_settings(database_url, graphiql=False)) as http:
        response = await post_query(http, "query { paymentConfig { brandName } }")

    assert response.status_code == 200
    assert response.json() == {"data": {"paymentConfig": {"brandName": "Test Shop"}}}
