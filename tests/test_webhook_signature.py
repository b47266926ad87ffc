"""The webhook accepts only bodies signed by a configured secret, byte for byte and recently.

Every rejected request is checked to have recorded nothing: no `stripe_events` row and a
payment that stays pending although the event would have paid it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from callbacks.signature import sign
from tests.conftest import (
    WEBHOOK_SECRET,
    graphql,
    load_event,
    make_settings,
    post_event,
    running_app,
    seed_payment,
    signed_headers,
    stored_events,
)

OLD_SECRET = "whsec_rotation_old"
NEW_SECRET = "whsec_rotation_new"
PAYMENT_QUERY = "query($id:Int!){ payment(id:$id){ status order { status } } }"


@pytest.fixture
async def payment_id(app: Starlette) -> int:
    """A pending payment that the succeeded payload would pay, so a bypass would show."""
    intent = load_event("payment_intent.succeeded")["data"]["object"]
    _, seeded = await seed_payment(app, amount=intent["amount"], intent_id=intent["id"])
    return seeded


async def assert_nothing_recorded(
    app: Starlette, client: httpx.AsyncClient, payment_id: int
) -> None:
    assert await stored_events(app) == {}
    body = await graphql(client, PAYMENT_QUERY, {"id": payment_id})
    assert body["data"]["payment"] == {"status": "pending", "order": {"status": "pending"}}


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


async def post_raw(
    client: httpx.AsyncClient, payload: bytes, signature: str | bytes | None
) -> httpx.Response:
    headers: dict[str, str | bytes] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/webhooks/stripe", content=payload, headers=headers)


async def test_signature_valid_is_processed(app, client, payment_id):
    response = await post_event(client, load_event("payment_intent.succeeded"))

    assert response.status_code == 200
    assert response.json() == {"id": "evt_000000000000000000000001", "outcome": "processed"}
    body = await graphql(client, PAYMENT_QUERY, {"id": payment_id})
    assert body["data"]["payment"] == {"status": "succeeded", "order": {"status": "paid"}}


async def test_signature_missing_header_rejected(app, client, payment_id):
    response = await post_raw(client, encode(load_event("payment_intent.succeeded")), None)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature: Stripe-Signature header is missing."}
    await assert_nothing_recorded(app, client, payment_id)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("garbage", "Stripe-Signature has no timestamp."),
        ("v1={sig}", "Stripe-Signature has no timestamp."),
        ("t=soon,v1={sig}", "Stripe-Signature has a malformed timestamp."),
        ("t=-{t},v1={sig}", "Stripe-Signature has a malformed timestamp."),
        ("t={t}", "Stripe-Signature has no v1 signature."),
        ("t={t},v1=", "Stripe-Signature has no v1 signature."),
        ("t={t},v0={sig}", "Stripe-Signature has no v1 signature."),
    ],
)
async def test_signature_malformed_header_rejected(app, client, payment_id, template, message):
    payload = encode(load_event("payment_intent.succeeded"))
    now = int(time.time())
    header = template.format(t=now, sig=sign(payload, WEBHOOK_SECRET, now))

    response = await post_raw(client, payload, header)

    assert response.status_code == 400
    assert response.json() == {"error": f"invalid signature: {message}"}
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_non_ascii_timestamp_rejected(app, client, payment_id):
    # HTTP header bytes are decoded as Latin-1, where 0xB2 is "²": a character that
    # str.isdigit() accepts but int() cannot parse.
    payload = encode(load_event("payment_intent.succeeded"))
    header = b"t=\xb2,v1=" + sign(payload, WEBHOOK_SECRET, int(time.time())).encode()

    response = await post_raw(client, payload, header)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: Stripe-Signature has a malformed timestamp."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_wrong_secret_rejected(app, client, payment_id):
    response = await post_event(
        client, load_event("payment_intent.succeeded"), secret="whsec_someone_else"
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_stale_timestamp_rejected(app, client, payment_id):
    stale = int(time.time()) - 301

    response = await post_event(client, load_event("payment_intent.succeeded"), timestamp=stale)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: Stripe-Signature timestamp is outside the tolerance."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_future_timestamp_rejected(app, client, payment_id):
    ahead = int(time.time()) + 301

    response = await post_event(client, load_event("payment_intent.succeeded"), timestamp=ahead)

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: Stripe-Signature timestamp is outside the tolerance."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_within_tolerance_accepted(app, client, payment_id):
    # A retry that waited in a queue is still signed within the 300 s window.
    recent = int(time.time()) - 290

    response = await post_event(client, load_event("payment_intent.succeeded"), timestamp=recent)

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"


async def test_signature_reencoded_body_rejected(app, client, payment_id):
    event = load_event("payment_intent.succeeded")
    signed = json.dumps(event).encode()
    sent = json.dumps(event, separators=(",", ":")).encode()

    response = await client.post("/webhooks/stripe", content=sent, headers=signed_headers(signed))

    assert sent != signed
    assert json.loads(sent) == json.loads(signed)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_second_v1_matches(app, client, payment_id):
    payload = encode(load_event("payment_intent.succeeded"))
    now = int(time.time())
    wrong = sign(payload, "whsec_someone_else", now)
    right = sign(payload, WEBHOOK_SECRET, now)

    response = await post_raw(client, payload, f"t={now},v1={wrong},v1={right},v0={wrong}")

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"


async def test_signature_all_v1_wrong_rejected(app, client, payment_id):
    payload = encode(load_event("payment_intent.succeeded"))
    now = int(time.time())
    first = sign(payload, "whsec_someone_else", now)
    second = sign(payload, "whsec_another_one", now)

    response = await post_raw(client, payload, f"t={now},v1={first},v1={second}")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_other_timestamp_rejected(app, client, payment_id):
    # A signature is bound to its timestamp: re-stamping an old signature must not pass.
    payload = encode(load_event("payment_intent.succeeded"))
    now = int(time.time())
    signature = sign(payload, WEBHOOK_SECRET, now - 1000)

    response = await post_raw(client, payload, f"t={now},v1={signature}")

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    await assert_nothing_recorded(app, client, payment_id)


@pytest.fixture
async def rotating_app(database_url: str) -> AsyncIterator[Starlette]:
    """The app while its endpoint secret is being rolled: the old and the new one are set."""
    settings = make_settings(database_url, stripe_webhook_secret=f"{OLD_SECRET}, {NEW_SECRET}")
    async with running_app(settings) as started:
        yield started


@pytest.fixture
async def rotating_client(rotating_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=rotating_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
        yield http


@pytest.mark.parametrize("secret", [OLD_SECRET, NEW_SECRET])
async def test_signature_rotation_accepts_either(rotating_app, rotating_client, secret):
    intent = load_event("payment_intent.succeeded")["data"]["object"]
    _, payment_id = await seed_payment(
        rotating_app, amount=intent["amount"], intent_id=intent["id"]
    )

    response = await post_event(
        rotating_client, load_event("payment_intent.succeeded"), secret=secret
    )

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"
    body = await graphql(rotating_client, PAYMENT_QUERY, {"id": payment_id})
    assert body["data"]["payment"]["status"] == "succeeded"


async def test_signature_rotation_rejects_third_secret(rotating_app, rotating_client):
    response = await post_event(
        rotating_client, load_event("payment_intent.succeeded"), secret=WEBHOOK_SECRET
    )

    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid signature: no Stripe-Signature matches the payload."
    }
    assert await stored_events(rotating_app) == {}


async def test_signature_rotation_header_with_both(rotating_app, rotating_client):
    # While a secret is rolled, Stripe signs each delivery with both secrets.
    intent = load_event("payment_intent.succeeded")["data"]["object"]
    await seed_payment(rotating_app, amount=intent["amount"], intent_id=intent["id"])
    payload = encode(load_event("payment_intent.succeeded"))
    now = int(time.time())
    header = f"t={now},v1={sign(payload, NEW_SECRET, now)},v1={sign(payload, OLD_SECRET, now)}"

    response = await post_raw(rotating_client, payload, header)

    assert response.status_code == 200
    assert response.json()["outcome"] == "processed"


async def test_signature_no_secret_configured_rejected(database_url):
    settings = make_settings(database_url, stripe_webhook_secret="")
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            response = await post_event(http, load_event("payment_intent.succeeded"))
            recorded = await stored_events(app)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature: no webhook secret is configured."}
    assert recorded == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "the body is not JSON."),
        (b"\xff\xfe", "the body is not JSON."),
        (b'{"object": "list", "data": []}', "the body is not a Stripe event object."),
        (b'["event"]', "the body is not a Stripe event object."),
        (b'{"object": "event", "type": "charge.succeeded"}', "the event has no id or type."),
        (
            b'{"object": "event", "id": "evt_1", "type": "charge.succeeded", "data": {}}',
            "the event has no data.object.",
        ),
    ],
)
async def test_webhook_signed_non_event_rejected(app, client, payment_id, payload, message):
    response = await post_raw(client, payload, signed_headers(payload)["Stripe-Signature"])

    assert response.status_code == 400
    assert response.json() == {"error": f"invalid event: {message}"}
    await assert_nothing_recorded(app, client, payment_id)


async def test_webhook_oversized_body_rejected(app, client, payment_id):
    event = load_event("payment_intent.succeeded")
    event["data"]["object"]["description"] = "x" * 1_000_000
    payload = encode(event)

    response = await post_raw(client, payload, signed_headers(payload)["Stripe-Signature"])

    assert response.status_code == 413
    assert response.json() == {"error": "the body is too large for a Stripe event."}
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_non_ascii_v1_rejected(app, client, payment_id):
    # hmac.compare_digest raises TypeError on non-ASCII text, which must not become a 500.
    payload = encode(load_event("payment_intent.succeeded"))
    header = f"t={int(time.time())},v1=".encode() + b"\xe9"

    response = await post_raw(client, payload, header)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature: Stripe-Signature has no v1 signature."}
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_huge_timestamp_rejected(app, client, payment_id):
    payload = encode(load_event("payment_intent.succeeded"))
    header = "t=" + "9" * 5000 + ",v1=aa"

    response = await post_raw(client, payload, header)

    assert response.status_code == 400
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_streamed_oversize_rejected(app, client, payment_id):
    # No Content-Length: the body is refused while it streams in, before it is all read.
    async def chunks():
        for _ in range(64):
            yield b"x" * 65_536

    headers = {"Stripe-Signature": "t=1,v1=aa", "Content-Type": "application/json"}
    response = await client.post("/webhooks/stripe", content=chunks(), headers=headers)

    assert response.status_code == 413
    await assert_nothing_recorded(app, client, payment_id)


async def test_signature_deep_json_rejected(app, client, payment_id):
    payload = b"[" * 50_000 + b"]" * 50_000
    stamp = int(time.time())
    header = f"t={stamp},v1={sign(payload, WEBHOOK_SECRET, stamp)}"

    response = await post_raw(client, payload, header)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid event: the body is not JSON."}
    await assert_nothing_recorded(app, client, payment_id)
