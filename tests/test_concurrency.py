"""Concurrent webhooks and mutations on one database: nothing fails, nothing is lost."""

from __future__ import annotations

import asyncio

from tests.conftest import graphql, load_event, post_event, seed_payment

CREATE_ORDER = 'mutation { createOrder(price: "5.00", currency: "usd") { id } }'


def succeeded(intent_id: str, event_id: str) -> dict:
    event = load_event("payment_intent.succeeded")
    event["id"] = event_id
    event["data"]["object"]["id"] = intent_id
    return event


async def test_webhooks_and_mutations_race(app, client):
    intents = [f"pi_race_{index}" for index in range(30)]
    for intent_id in intents:
        await seed_payment(app, intent_id=intent_id)

    webhooks = [post_event(client, succeeded(intent_id, f"evt_{intent_id}")) for intent_id in intents]
    mutations = [graphql(client, CREATE_ORDER) for _ in range(20)]
    results = await asyncio.gather(*webhooks, *mutations)

    responses, bodies = results[: len(webhooks)], results[len(webhooks) :]
    assert [response.status_code for response in responses] == [200] * len(intents)
    assert {response.json()["outcome"] for response in responses} == {"processed"}
    assert all("errors" not in body for body in bodies)

    listed = await graphql(client, '{ payments(status: "succeeded") { id } }', role="admin")
    assert len(listed["data"]["payments"]) == len(intents)
    orders = await graphql(client, "{ orders { id } }", role="admin")
    assert len(orders["data"]["orders"]) == len(intents) + len(mutations)
