from __future__ import annotations

from tests.conftest import graphql, load_event, post_event, seed_payment


async def test_succeeded_event_marks_order_paid(app, client):
    event = load_event("payment_intent.succeeded")
    intent = event["data"]["object"]
    order_id, payment_id = await seed_payment(
        app, amount=intent["amount"], price="20.00", intent_id=intent["id"]
    )

    response = await post_event(client, event)

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"
    body = await graphql(client, "query($id:Int!){ payment(id:$id){ status order { status } } }", {"id": payment_id})
    assert body["data"]["payment"] == {"status": "succeeded", "order": {"status": "paid"}}
