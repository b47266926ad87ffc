"""Shared parts of the cases: the run's settings, tokens, GraphQL requests and result rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.load import http_request
from paystream.auth import mint_token
from paystream.settings import Settings

WEBHOOK_SECRET = "whsec_paystream_bench"
JWT_SECRET = "paystream-bench-secret-long-enough-for-hs256"
TOKEN_LIFETIME_SECONDS = 3600

# Every scalar field of a payment: what a payments screen shows, and no nested order read.
PAYMENT_FIELDS = (
    "id orderId userId amount currency status stripePaymentIntentId amountRefunded "
    "failureCode failureMessage callbackProcessed createdAt updatedAt"
)

# pydantic-settings takes `_env_file` at run time, but its stubs do not declare it.
_TOKEN_SETTINGS = Settings(
    _env_file=None, jwt_secret=SecretStr(JWT_SECRET)  # type: ignore[call-arg]
)


def token_for(user_id: str, role: str = "user") -> str:
    return mint_token(_TOKEN_SETTINGS, user_id, role, TOKEN_LIFETIME_SECONDS)


def graphql_request(
    port: int, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> bytes:
    """Build the bytes of a POST /graphql request, with a bearer token when one is given."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return http_request("POST", "/graphql", port, body, headers)


@dataclass(frozen=True)
class Scale:
    """Counts and durations for one run. The --quick option picks the small set."""

    name: str
    ingest_events: int
    ingest_seconds: float
    ingest_concurrency: int
    screen_samples: dict[int, int]
    idle_subscriptions: int
    read_seconds: float
    read_concurrency: int
    pay_samples: int


QUICK = Scale(
    name="quick",
    ingest_events=1500,
    ingest_seconds=2.5,
    ingest_concurrency=16,
    screen_samples={1: 15, 100: 10, 1000: 6},
    idle_subscriptions=1000,
    read_seconds=2.0,
    read_concurrency=16,
    pay_samples=12,
)
FULL = Scale(
    name="full",
    ingest_events=12000,
    ingest_seconds=12.0,
    ingest_concurrency=16,
    screen_samples={1: 100, 100: 50, 1000: 30},
    idle_subscriptions=1000,
    read_seconds=10.0,
    read_concurrency=16,
    pay_samples=60,
)


POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class RunContext:
    """Inputs of every case: the scale, a temporary folder, localstripe and the cases to profile.

    `postgres_admin_url` and `redis_url` serve the cases with two processes. `baselines`
    keeps a baseline measurement under its case's name, so that a later case compares
    against the same figures.
    """

    scale: Scale
    workdir: Path
    stripe_url: str
    stripe_secret_key: str
    profile_cases: frozenset[str] = frozenset()
    postgres_admin_url: str = POSTGRES_ADMIN_URL
    redis_url: str = REDIS_URL
    baselines: dict[str, Any] = field(default_factory=dict)

    def paystream_settings(self, database_url: str) -> dict[str, str]:
        """Environment variables for `paystream serve`, with the given database."""
        return {
            "DATABASE_URL": database_url,
            "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "JWT_SECRET": JWT_SECRET,
            "STRIPE_SECRET_KEY": self.stripe_secret_key,
            "STRIPE_API_BASE": self.stripe_url,
        }


@dataclass
class Row:
    """One line of the results table: a paystream figure against its baseline figure.

    `ratio` is paystream over baseline. `met` is None for a figure with no target.
    """

    figure: str
    unit: str
    paystream: float
    baseline: float
    target: str
    met: bool | None
    better: str  # "higher" or "lower": which direction of the figure is good

    @property
    def ratio(self) -> float | None:
        return self.paystream / self.baseline if self.baseline else None


@dataclass
class CaseResult:
    """A case's rows, plus what was measured on the way (counts, percentiles, parameters)."""

    case: str
    title: str
    rows: list[Row]
    details: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "rows": [asdict(row) | {"ratio": row.ratio} for row in self.rows],
            "details": self.details,
            "profile": self.profile,
        }
