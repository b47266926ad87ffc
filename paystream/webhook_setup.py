"""Creating or updating the Stripe webhook endpoints paystream needs, for `paystream webhooks setup`.

Endpoints are matched to the ones the account already has by URL, so running setup again
creates nothing new. Stripe returns an endpoint's signing secret only when it creates the
endpoint. An update keeps the existing secret valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import stripe

from callbacks.events import EVENT_HANDLERS
from callbacks.hook_config import HookConfig
from paystream.stripe_api import StripeGateway

# Stripe allows at most 16 webhook endpoints per account. Setup warns from WARN_AT on, so
# that the last free slots are not used up unnoticed.
MAX_ENDPOINTS = 16
WARN_AT = 14
MAIN_PATH = "/webhooks/stripe"


@dataclass(frozen=True)
class WebhookEndpointSpec:
    """One endpoint paystream serves: its name, its path below the public URL, the event
    types it handles, and the setting that contains its signing secret."""

    name: str
    path: str
    event_types: tuple[str, ...]
    secret_setting: str


@dataclass
class EndpointResult:
    spec: WebhookEndpointSpec
    url: str
    action: str  # created, updated or unchanged
    endpoint_id: str
    secret: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SetupResult:
    endpoints: list[EndpointResult]
    total_endpoints: int
    warning: str | None = None


class SetupError(Exception):
    """A setup that cannot go ahead. Nothing was changed at Stripe."""


def main_endpoint() -> WebhookEndpointSpec:
    return WebhookEndpointSpec(
        name="main",
        path=MAIN_PATH,
        event_types=tuple(sorted(EVENT_HANDLERS)),
        secret_setting="STRIPE_WEBHOOK_SECRET",
    )


def endpoint_specs(hooks: HookConfig) -> list[WebhookEndpointSpec]:
    """The main endpoint, then each dedicated endpoint of PAYSTREAM_HOOKS_FILE, which the
    server serves at /webhooks/stripe/<name>."""
    dedicated = [
        WebhookEndpointSpec(
            name=name,
            path=f"{MAIN_PATH}/{name}",
            event_types=tuple(sorted(endpoint.events)),
            secret_setting=f"the secret of endpoint {name} in PAYSTREAM_HOOKS_FILE",
        )
        for name, endpoint in sorted(hooks.endpoints.items())
    ]
    return [main_endpoint(), *dedicated]


def endpoint_url(public_url: str, path: str) -> str:
    """Join the public base URL and an endpoint path, rejecting a URL Stripe cannot call."""
    parts = urlsplit(public_url)
    if parts.scheme != "https" or not parts.hostname:
        raise SetupError(
            f"--url {public_url!r} must be an https:// URL with a host name, because Stripe "
            "sends live-mode events only to HTTPS endpoints."
        )
    if parts.query or parts.fragment:
        raise SetupError(f"--url {public_url!r} must not have a query or a fragment.")
    return public_url.rstrip("/") + path


async def setup_webhook_endpoints(
    gateway: StripeGateway, public_url: str, specs: list[WebhookEndpointSpec]
) -> SetupResult:
    """Create each missing endpoint and bring each existing one to its event types.

    Raises SetupError before any change when the account would exceed Stripe's limit.
    """
    urls = {spec.name: endpoint_url(public_url, spec.path) for spec in specs}
    existing = await gateway.list_webhook_endpoints()
    by_url: dict[str, list[dict[str, Any]]] = {}
    for endpoint in existing:
        by_url.setdefault(str(endpoint.get("url")), []).append(endpoint)

    missing = [spec for spec in specs if urls[spec.name] not in by_url]
    total = len(existing) + len(missing)
    if total > MAX_ENDPOINTS:
        raise SetupError(
            f"the account has {len(existing)} webhook endpoints and setup would create "
            f"{len(missing)} more, {total} in all, over Stripe's maximum of {MAX_ENDPOINTS}: "
            "delete unused endpoints in the Stripe Dashboard first."
        )

    results = []
    for spec in specs:
        url = urls[spec.name]
        if url in by_url:
            results.append(await _update(gateway, spec, url, by_url[url]))
        else:
            results.append(await _create(gateway, spec, url))

    warning = None
    if total >= WARN_AT:
        warning = (
            f"the account has {total} of Stripe's maximum {MAX_ENDPOINTS} webhook endpoints."
        )
    return SetupResult(results, total, warning)


async def _create(gateway: StripeGateway, spec: WebhookEndpointSpec, url: str) -> EndpointResult:
    endpoint = await gateway.create_webhook_endpoint(
        url=url,
        enabled_events=list(spec.event_types),
        api_version=stripe.api_version,
        description=f"paystream {spec.name} endpoint",
    )
    return EndpointResult(spec, url, "created", str(endpoint["id"]), endpoint.get("secret"))


async def _update(
    gateway: StripeGateway, spec: WebhookEndpointSpec, url: str, matches: list[dict[str, Any]]
) -> EndpointResult:
    endpoint = matches[0]
    notes = []
    if len(matches) > 1:
        others = ", ".join(str(other["id"]) for other in matches[1:])
        notes.append(f"other endpoints with the same URL were left as they are: {others}.")
    version = endpoint.get("api_version")
    if version != stripe.api_version:
        notes.append(
            f"it sends events in API version {version}, not the pinned {stripe.api_version}. "
            "Stripe cannot change an existing endpoint's version: delete the endpoint and run "
            "setup again to create it with the pinned version and a new secret."
        )

    disabled = endpoint.get("status") == "disabled"
    expected_events = sorted(spec.event_types)
    if sorted(endpoint.get("enabled_events") or []) == expected_events and not disabled:
        return EndpointResult(spec, url, "unchanged", str(endpoint["id"]), notes=notes)
    updated = await gateway.update_webhook_endpoint(
        str(endpoint["id"]), enabled_events=expected_events, enable=disabled
    )
    if disabled:
        notes.append("it was disabled and is enabled again.")
    return EndpointResult(spec, url, "updated", str(updated["id"]), notes=notes)
