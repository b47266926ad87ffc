"""`paystream webhooks setup` against a stand-in for Stripe's webhook endpoints API.

localstripe has no webhook endpoints API, so `webhook_endpoints_api.WebhookEndpointsApi`
serves one on 127.0.0.1 and STRIPE_API_BASE points the command's StripeGateway at it. The
command runs in a thread of the test process, so the stand-in keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import stripe

from callbacks.events import EVENT_HANDLERS
from paystream.cli import main
from paystream.settings import get_settings
from tests.conftest import uvicorn_server
from tests.webhook_endpoints_api import WebhookEndpointsApi

SECRET_KEY = "sk_test_webhook_setup"
PUBLIC_URL = "https://pay.example.com"
MAIN_URL = "https://pay.example.com/webhooks/stripe"
MAIN_EVENTS = sorted(EVENT_HANDLERS)
HOOK_VARIABLES = ("PAYSTREAM_HOOKS", "PAYSTREAM_HOOKS_FILE")
HOOKS_FILE = """
[[endpoints]]
name = "disputes"
secret_env = "DISPUTES_ENDPOINT_SECRET"
events = ["charge.dispute.created", "charge.dispute.closed"]
"""


@pytest.fixture
async def endpoints_api() -> AsyncIterator[WebhookEndpointsApi]:
    api = WebhookEndpointsApi(SECRET_KEY)
    async with uvicorn_server(api.app) as url:
        api.url = url
        yield api


@pytest.fixture
def environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, endpoints_api: WebhookEndpointsApi
) -> Iterator[pytest.MonkeyPatch]:
    """Stripe calls go to the stand-in; no `.env`, hooks file or database of the machine's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STRIPE_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("STRIPE_API_BASE", endpoints_api.url)
    monkeypatch.setenv("DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path}/unused.db")
    monkeypatch.setenv("BROADCAST_URL", "memory://")
    for name in HOOK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


async def setup(capsys: pytest.CaptureFixture[str], url: str = PUBLIC_URL) -> tuple[int, str, str]:
    """Run `paystream webhooks setup --url URL`; return the exit code, stdout and stderr."""
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["webhooks", "setup", "--url", url])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def add_unrelated(api: WebhookEndpointsApi, count: int) -> None:
    for number in range(count):
        api.add(
            f"https://other{number}.example.com/hooks", ["charge.failed"], api_version="2020-08-27"
        )


def endpoints_by_url(api: WebhookEndpointsApi) -> dict[str, dict[str, object]]:
    return {str(endpoint["url"]): endpoint for endpoint in api.endpoints.values()}


# Creating


async def test_setup_creates_main_endpoint(environment, capsys, endpoints_api):
    code, out, err = await setup(capsys)

    assert code == 0, err
    assert err == ""
    [endpoint] = endpoints_api.endpoints.values()
    assert endpoint["url"] == MAIN_URL
    assert endpoint["enabled_events"] == MAIN_EVENTS
    assert endpoint["api_version"] == stripe.api_version
    assert endpoint["status"] == "enabled"
    assert endpoint["description"] == "paystream main endpoint"
    secret = endpoints_api.secrets[endpoint["id"]]
    assert out.splitlines() == [
        (
            f"created main endpoint {endpoint['id']} ({MAIN_URL}) for {len(MAIN_EVENTS)} event "
            f"types, API version {stripe.api_version}"
        ),
        f"  signing secret: {secret}",
        "  set STRIPE_WEBHOOK_SECRET to it; Stripe shows it only once.",
    ]


async def test_setup_twice_creates_nothing(environment, capsys, endpoints_api):
    await setup(capsys)
    [created] = endpoints_api.endpoints.values()
    writes_before = len(endpoints_api.writes())

    code, out, _ = await setup(capsys)

    assert code == 0
    assert list(endpoints_api.endpoints) == [created["id"]]
    assert len(endpoints_api.writes()) == writes_before
    assert out == (
        f"unchanged main endpoint {created['id']} ({MAIN_URL}): the existing signing secret "
        "stays valid.\n"
    )
    assert "whsec_" not in out


async def test_setup_trailing_slash_same_url(environment, capsys, endpoints_api):
    await setup(capsys)

    code, out, _ = await setup(capsys, PUBLIC_URL + "/")

    assert code == 0
    assert len(endpoints_api.endpoints) == 1
    assert out.startswith("unchanged main endpoint")


async def test_setup_dedicated_endpoints(environment, capsys, endpoints_api, tmp_path):
    hooks_file = tmp_path / "hooks.toml"
    hooks_file.write_text(HOOKS_FILE)
    environment.setenv("PAYSTREAM_HOOKS_FILE", str(hooks_file))
    # Loading the hooks file checks every endpoint's secret, so a first setup needs a placeholder.
    environment.setenv("DISPUTES_ENDPOINT_SECRET", "whsec_placeholder")

    code, out, err = await setup(capsys)

    assert code == 0, err
    endpoints = endpoints_by_url(endpoints_api)
    assert sorted(endpoints) == [MAIN_URL, MAIN_URL + "/disputes"]
    disputes = endpoints[MAIN_URL + "/disputes"]
    assert disputes["enabled_events"] == ["charge.dispute.closed", "charge.dispute.created"]
    assert disputes["api_version"] == stripe.api_version
    assert endpoints[MAIN_URL]["enabled_events"] == MAIN_EVENTS
    assert f"  signing secret: {endpoints_api.secrets[str(disputes['id'])]}" in out
    assert "  set the secret of endpoint disputes in PAYSTREAM_HOOKS_FILE to it; " in out


# Updating


async def test_setup_updates_differing_events(environment, capsys, endpoints_api):
    existing = endpoints_api.add(
        MAIN_URL, ["payment_intent.succeeded"], api_version=stripe.api_version
    )

    code, out, _ = await setup(capsys)

    assert code == 0
    assert list(endpoints_api.endpoints) == [existing["id"]]
    assert existing["enabled_events"] == MAIN_EVENTS
    assert out == (
        f"updated main endpoint {existing['id']} ({MAIN_URL}): the existing signing secret "
        "stays valid.\n"
    )


async def test_setup_all_events_endpoint_narrowed(environment, capsys, endpoints_api):
    existing = endpoints_api.add(MAIN_URL, ["*"], api_version=stripe.api_version)

    code, out, _ = await setup(capsys)

    assert code == 0
    assert existing["enabled_events"] == MAIN_EVENTS
    assert out.startswith("updated main endpoint")


async def test_setup_reenables_disabled_endpoint(environment, capsys, endpoints_api):
    existing = endpoints_api.add(
        MAIN_URL, MAIN_EVENTS, api_version=stripe.api_version, status="disabled"
    )

    code, out, _ = await setup(capsys)

    assert code == 0
    assert existing["status"] == "enabled"
    assert out.splitlines() == [
        (
            f"updated main endpoint {existing['id']} ({MAIN_URL}): the existing signing secret "
            "stays valid."
        ),
        "  note: it was disabled and is enabled again.",
    ]


async def test_setup_notes_other_api_version(environment, capsys, endpoints_api):
    existing = endpoints_api.add(MAIN_URL, MAIN_EVENTS, api_version="2020-08-27")

    code, out, _ = await setup(capsys)

    assert code == 0
    assert existing["api_version"] == "2020-08-27"
    assert out.splitlines()[1] == (
        f"  note: it sends events in API version 2020-08-27, not the pinned "
        f"{stripe.api_version}. Stripe cannot change an existing endpoint's version: delete "
        "the endpoint and run setup again to create it with the pinned version and a new "
        "secret."
    )


# Stripe's maximum of 16 endpoints


async def test_setup_warns_at_fourteen(environment, capsys, endpoints_api):
    add_unrelated(endpoints_api, 13)

    code, out, err = await setup(capsys)

    assert code == 0
    assert len(endpoints_api.endpoints) == 14
    assert out.startswith("created main endpoint")
    assert err == "warning: the account has 14 of Stripe's maximum 16 webhook endpoints.\n"


async def test_setup_no_warning_at_thirteen(environment, capsys, endpoints_api):
    add_unrelated(endpoints_api, 12)

    code, _, err = await setup(capsys)

    assert code == 0
    assert len(endpoints_api.endpoints) == 13
    assert err == ""


async def test_setup_warns_when_full_but_nothing_new(environment, capsys, endpoints_api):
    add_unrelated(endpoints_api, 15)
    endpoints_api.add(MAIN_URL, MAIN_EVENTS, api_version=stripe.api_version)

    code, out, err = await setup(capsys)

    assert code == 0
    assert out.startswith("unchanged main endpoint")
    assert err == "warning: the account has 16 of Stripe's maximum 16 webhook endpoints.\n"


async def test_setup_refuses_past_sixteen(environment, capsys, endpoints_api):
    add_unrelated(endpoints_api, 16)

    code, out, err = await setup(capsys)

    assert code == 1
    assert out == ""
    assert err == (
        "paystream webhooks setup: the account has 16 webhook endpoints and setup would "
        "create 1 more, 17 in all, over Stripe's maximum of 16: delete unused endpoints in the "
        "Stripe Dashboard first.\n"
    )
    assert endpoints_api.writes() == []


async def test_setup_refusal_counts_dedicated(environment, capsys, endpoints_api, tmp_path):
    hooks_file = tmp_path / "hooks.toml"
    hooks_file.write_text(HOOKS_FILE)
    environment.setenv("PAYSTREAM_HOOKS_FILE", str(hooks_file))
    environment.setenv("DISPUTES_ENDPOINT_SECRET", "whsec_placeholder")
    add_unrelated(endpoints_api, 15)
    stale = endpoints_api.add(MAIN_URL, ["payment_intent.succeeded"])

    code, _, err = await setup(capsys)

    # The main endpoint exists, but the disputes one would be the 17th. The refusal comes
    # before any change, so the main endpoint keeps its old event types too.
    assert code == 1
    assert err == (
        "paystream webhooks setup: the account has 16 webhook endpoints and setup would "
        "create 1 more, 17 in all, over Stripe's maximum of 16: delete unused endpoints in the "
        "Stripe Dashboard first.\n"
    )
    assert stale["enabled_events"] == ["payment_intent.succeeded"]
    assert endpoints_api.writes() == []


# Invalid input and configuration


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://pay.example.com",
            (
                "--url 'http://pay.example.com' must be an https:// URL with a host name, "
                "because Stripe sends live-mode events only to HTTPS endpoints."
            ),
        ),
        (
            "https://pay.example.com/?shop=1",
            "--url 'https://pay.example.com/?shop=1' must not have a query or a fragment.",
        ),
    ],
)
async def test_setup_rejects_bad_url(environment, capsys, endpoints_api, url, message):
    code, out, err = await setup(capsys, url)

    assert code == 1
    assert out == ""
    assert err == f"paystream webhooks setup: {message}\n"
    assert endpoints_api.requests == []


async def test_setup_without_stripe_key(environment, capsys, endpoints_api):
    environment.delenv("STRIPE_SECRET_KEY")

    code, out, err = await setup(capsys)

    assert code == 1
    assert out == ""
    assert err == (
        "paystream webhooks setup: Stripe is not configured: set STRIPE_SECRET_KEY to take "
        "payments.\n"
    )


async def test_setup_rejected_key_reported(environment, capsys, endpoints_api):
    environment.setenv("STRIPE_SECRET_KEY", "sk_test_wrong_key")

    code, out, err = await setup(capsys)

    assert code == 1
    assert out == ""
    assert err == (
        "paystream webhooks setup: Stripe refused the configured API key while trying to "
        "list the webhook endpoints.\n"
    )
