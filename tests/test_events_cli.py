"""`paystream events list|show|replay` on events stored by real signed webhook deliveries.

The command runs in a thread of the test process (its own event loop, its own engine on the
same database), and once as the installed console script.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from db.models import Order, Payment
from paystream.cli import main
from paystream.settings import get_settings
from tests.conftest import (
    load_event,
    make_settings,
    post_event,
    running_app,
    seed_payment,
    signed_headers,
    stored_events,
    stripe_event,
)

PAYSTREAM = str(Path(sys.executable).with_name("paystream"))
INTENT_ID = "pi_000000000000000000000000"
SUCCEEDED_ID = "evt_000000000000000000000001"
CHARGE_ID = "evt_000000000000000000000004"
OTHER_INTENT_ID = "pi_other_intent_0001"
OTHER_EVENT_ID = "evt_other_succeeded_0001"
# The price 20.005 has more decimals than USD allows, so the payment callback fails on it.
BAD_PRICE = "20.005"
CHARGES_SECRET = "whsec_charges_endpoint"
HOOKS_FILE = f"""
[[endpoints]]
name = "charges"
secrets = ["{CHARGES_SECRET}"]
events = ["charge.succeeded"]
"""


@pytest.fixture
def cli_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, database_url: str
) -> Iterator[None]:
    """Point the command at the test's database, from a folder with no `.env`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BROADCAST_URL", "memory://")
    for name in ("STRIPE_SECRET_KEY", "STRIPE_API_BASE", "PAYSTREAM_HOOKS", "PAYSTREAM_HOOKS_FILE"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


async def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `paystream ARGV` in a worker thread; return the exit code, stdout and stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def set_order_price(app: Starlette, order_id: int, price: str) -> None:
    async with app.state.services.db.write() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        order.price = Decimal(price)


async def payment_and_order(app: Starlette, payment_id: int) -> tuple[Payment, Order]:
    async with app.state.services.db.read() as session:
        payment = await session.get(Payment, payment_id)
        assert payment is not None
        order = await session.get(Order, payment.order_id)
        assert order is not None
        return payment, order


@pytest.fixture
async def delivered(app: Starlette, client: Any) -> dict[str, int]:
    """A processed `payment_intent.succeeded` and an ignored `charge.succeeded`, as delivered."""
    order_id, payment_id = await seed_payment(app, intent_id=INTENT_ID)
    assert (await post_event(client, load_event("payment_intent.succeeded"))).status_code == 200
    assert (await post_event(client, load_event("charge.succeeded"))).status_code == 200
    return {"order": order_id, "payment": payment_id}


@pytest.fixture
async def failed_payment(app: Starlette, client: Any) -> dict[str, int]:
    """A payment whose `payment_intent.succeeded` delivery failed and was stored as failed."""
    order_id, payment_id = await seed_payment(app, price=BAD_PRICE, intent_id=INTENT_ID)
    response = await post_event(client, load_event("payment_intent.succeeded"))
    assert response.status_code == 500
    return {"order": order_id, "payment": payment_id}


# events list


async def test_events_list_newest_first(cli_environment, capsys, delivered):
    code, out, err = await run_cli(capsys, "events", "list")

    lines = out.splitlines()
    assert code == 0, err
    assert lines[0].split() == ["CREATED", "ID", "TYPE", "OUTCOME", "ENDPOINT"]
    # The succeeded event was created one second after the charge event.
    assert lines[1].split() == [
        "2022-03-26T18:40:33+00:00",
        SUCCEEDED_ID,
        "payment_intent.succeeded",
        "processed",
        "main",
    ]
    assert lines[2].split() == [
        "2022-03-26T18:40:32+00:00",
        CHARGE_ID,
        "charge.succeeded",
        "ignored",
        "main",
    ]
    assert len(lines) == 3


async def test_events_list_filters_type(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "list", "--type", "charge.succeeded")

    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:]] == [CHARGE_ID]


async def test_events_list_filters_outcome(cli_environment, capsys, app, client):
    await seed_payment(app, price=BAD_PRICE, intent_id=INTENT_ID)
    await post_event(client, load_event("payment_intent.succeeded"))
    await post_event(client, load_event("charge.succeeded"))

    code, out, _ = await run_cli(capsys, "events", "list", "--outcome", "failed")

    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [(row[1], row[3]) for row in rows] == [(SUCCEEDED_ID, "failed")]


async def test_events_list_since_bounds_created(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "list", "--since", "2022-03-26T18:40:33Z")

    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:]] == [SUCCEEDED_ID]


async def test_events_list_since_date_is_utc_midnight(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "list", "--since", "2022-03-27")

    assert code == 0
    assert out == "no stored event matches\n"


async def test_events_list_limit(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "list", "--limit", "1")

    assert code == 0
    assert [line.split()[1] for line in out.splitlines()[1:]] == [SUCCEEDED_ID]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--since", "yesterday", "date 'yesterday' must be an ISO 8601 date or date-time"),
        ("--limit", "0", "'0' must be a positive whole number."),
        ("--outcome", "duplicate", "invalid choice: 'duplicate'"),
    ],
)
async def test_events_list_bad_option_rejected(cli_environment, capsys, option, value, message):
    with pytest.raises(SystemExit) as exited:
        await asyncio.to_thread(main, ["events", "list", option, value])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err


async def test_events_list_console_script(cli_environment, database_url, delivered, tmp_path):
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("STRIPE_", "DATABASE_", "BROADCAST_"))
    }
    environ.update(DATABASE_URL=database_url, BROADCAST_URL="memory://")

    result = await asyncio.to_thread(
        subprocess.run,
        [PAYSTREAM, "events", "list", "--outcome", "processed"],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[1] for row in rows] == [SUCCEEDED_ID]


# events show


async def test_events_show_row_and_payload(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "show", SUCCEEDED_ID)

    shown = json.loads(out)
    assert code == 0
    assert shown["id"] == SUCCEEDED_ID
    assert shown["type"] == "payment_intent.succeeded"
    assert shown["endpoint"] == "main"
    assert shown["created"] == "2022-03-26T18:40:33+00:00"
    assert shown["outcome"] == "processed"
    assert shown["error"] is None
    assert shown["processed_at"] is not None
    assert shown["payload"] == load_event("payment_intent.succeeded")
    assert out.startswith('{\n  "id": ')


async def test_events_show_failed_has_error(cli_environment, capsys, failed_payment):
    code, out, _ = await run_cli(capsys, "events", "show", SUCCEEDED_ID)

    shown = json.loads(out)
    assert code == 0
    assert shown["outcome"] == "failed"
    assert shown["error"] == (
        "MoneyError: price 20.005 USD has more decimal places than the 2 that USD allows."
    )


async def test_events_show_unknown_fails(cli_environment, capsys, delivered):
    code, out, err = await run_cli(capsys, "events", "show", "evt_never_received")

    assert code == 1
    assert out == ""
    assert err == (
        "paystream events show: event evt_never_received is not stored: paystream never "
        "received it.\n"
    )


# events replay


async def test_replay_failed_event_processes(cli_environment, capsys, app, failed_payment):
    await set_order_price(app, failed_payment["order"], "20.00")

    code, out, err = await run_cli(capsys, "events", "replay", SUCCEEDED_ID)

    assert code == 0, err
    assert out == f"{SUCCEEDED_ID} payment_intent.succeeded processed main\n"
    payment, order = await payment_and_order(app, failed_payment["payment"])
    assert payment.status == "succeeded"
    assert order.status == "paid"
    row = (await stored_events(app))[SUCCEEDED_ID]
    assert row.outcome == "processed"
    assert row.error is None


async def test_replay_still_failing_exits_nonzero(cli_environment, capsys, app, failed_payment):
    code, out, _ = await run_cli(capsys, "events", "replay", SUCCEEDED_ID)

    assert code == 1
    assert out == f"{SUCCEEDED_ID} payment_intent.succeeded failed main\n"
    payment, order = await payment_and_order(app, failed_payment["payment"])
    assert payment.status == "pending"
    assert order.status == "pending"
    assert (await stored_events(app))[SUCCEEDED_ID].outcome == "failed"


async def test_replay_processed_is_duplicate(cli_environment, capsys, app, delivered):
    before = await stored_events(app)
    payment_before, _ = await payment_and_order(app, delivered["payment"])

    code, out, _ = await run_cli(capsys, "events", "replay", SUCCEEDED_ID)

    after = await stored_events(app)
    payment_after, order = await payment_and_order(app, delivered["payment"])
    assert code == 0
    assert out == f"{SUCCEEDED_ID} payment_intent.succeeded duplicate main\n"
    assert after[SUCCEEDED_ID].outcome == "processed"
    assert after[SUCCEEDED_ID].processed_at == before[SUCCEEDED_ID].processed_at
    assert payment_after.updated_at == payment_before.updated_at
    assert order.status == "paid"


async def test_replay_ignored_is_duplicate(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "replay", CHARGE_ID)

    assert code == 0
    assert out == f"{CHARGE_ID} charge.succeeded duplicate main\n"


async def test_replay_all_failed(cli_environment, capsys, app, client, failed_payment):
    other_order, other_payment = await seed_payment(app, price=BAD_PRICE, intent_id=OTHER_INTENT_ID)
    other = stripe_event("payment_intent.succeeded", OTHER_EVENT_ID, id=OTHER_INTENT_ID)
    other["created"] += 10
    assert (await post_event(client, other)).status_code == 500
    assert (await post_event(client, load_event("charge.succeeded"))).status_code == 200
    await set_order_price(app, other_order, "20.00")

    code, out, _ = await run_cli(capsys, "events", "replay", "--failed")

    # Oldest first; the first still fails, so the command exits 1.
    assert out.splitlines() == [
        f"{SUCCEEDED_ID} payment_intent.succeeded failed main",
        f"{OTHER_EVENT_ID} payment_intent.succeeded processed main",
    ]
    assert code == 1
    outcomes = {event_id: row.outcome for event_id, row in (await stored_events(app)).items()}
    assert outcomes == {SUCCEEDED_ID: "failed", OTHER_EVENT_ID: "processed", CHARGE_ID: "ignored"}
    payment, order = await payment_and_order(app, other_payment)
    assert payment.status == "succeeded"
    assert order.status == "paid"


async def test_replay_failed_none_stored(cli_environment, capsys, delivered):
    code, out, _ = await run_cli(capsys, "events", "replay", "--failed")

    assert code == 0
    assert out == "no failed events to replay\n"


async def test_replay_unknown_event_fails(cli_environment, capsys, app):
    code, out, err = await run_cli(capsys, "events", "replay", "evt_never_received")

    assert code == 1
    assert out == ""
    assert "event evt_never_received is not stored" in err


@pytest.mark.parametrize("argv", [[], [SUCCEEDED_ID, "--failed"]])
async def test_replay_needs_id_or_failed(cli_environment, capsys, app, argv):
    code, out, err = await run_cli(capsys, "events", "replay", *argv)

    assert code == 2
    assert out == ""
    assert err == "paystream events replay: give either an EVENT_ID or --failed.\n"


# Events stored for a dedicated endpoint too


@pytest.fixture
def hooks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli_environment: None) -> Path:
    """A hooks file with the dedicated endpoint `charges`, known to the app and the command."""
    path = tmp_path / "hooks.toml"
    path.write_text(HOOKS_FILE)
    monkeypatch.setenv("PAYSTREAM_HOOKS_FILE", str(path))
    get_settings.cache_clear()
    return path


@pytest.fixture
async def charge_at_two_endpoints(database_url: str, hooks_file: Path) -> AsyncIterator[None]:
    """`charge.succeeded` delivered to the main endpoint (ignored) and to `charges` (processed)."""
    settings = make_settings(database_url, paystream_hooks_file=str(hooks_file))
    async with running_app(settings) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://paystream.test") as http:
            event = load_event("charge.succeeded")
            assert (await post_event(http, event)).json()["outcome"] == "ignored"
            payload = json.dumps(event).encode()
            response = await http.post(
                "/webhooks/stripe/charges",
                content=payload,
                headers=signed_headers(payload, CHARGES_SECRET),
            )
            assert response.json() == {"id": CHARGE_ID, "outcome": "processed"}
            yield


async def test_events_list_filters_endpoint(capsys, charge_at_two_endpoints):
    code, out, _ = await run_cli(capsys, "events", "list", "--endpoint", "charges")

    rows = [line.split() for line in out.splitlines()[1:]]
    assert code == 0
    assert [(row[1], row[3], row[4]) for row in rows] == [(CHARGE_ID, "processed", "charges")]


async def test_events_show_several_endpoints_needs_one(capsys, charge_at_two_endpoints):
    code, out, err = await run_cli(capsys, "events", "show", CHARGE_ID)

    assert code == 2
    assert out == ""
    assert err == (
        f"paystream events show: event {CHARGE_ID} is stored for endpoints charges, main: "
        "choose one with --endpoint.\n"
    )


async def test_events_show_chosen_endpoint(capsys, charge_at_two_endpoints):
    code, out, _ = await run_cli(capsys, "events", "show", CHARGE_ID, "--endpoint", "charges")

    shown = json.loads(out)
    assert code == 0
    assert shown["endpoint"] == "charges"
    assert shown["outcome"] == "processed"


async def test_replay_each_endpoint_row(capsys, charge_at_two_endpoints):
    code, out, _ = await run_cli(capsys, "events", "replay", CHARGE_ID)

    assert code == 0
    assert out.splitlines() == [
        f"{CHARGE_ID} charge.succeeded duplicate charges",
        f"{CHARGE_ID} charge.succeeded duplicate main",
    ]


async def test_replay_removed_endpoint_not_replayed(capsys, monkeypatch, charge_at_two_endpoints):
    monkeypatch.delenv("PAYSTREAM_HOOKS_FILE")
    get_settings.cache_clear()

    code, out, _ = await run_cli(capsys, "events", "replay", CHARGE_ID, "--endpoint", "charges")

    assert code == 1
    assert out == (
        f"{CHARGE_ID} charge.succeeded failed charges: not replayed: endpoint charges is no "
        "longer in PAYSTREAM_HOOKS_FILE.\n"
    )


async def test_replay_endpoint_with_failed_rejected(cli_environment, capsys, app):
    code, _, err = await run_cli(capsys, "events", "replay", "--failed", "--endpoint", "main")

    assert code == 2
    assert err == "paystream events replay: --endpoint applies to an EVENT_ID only.\n"
