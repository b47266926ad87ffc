"""The one typed settings object, read once from the environment and `.env`."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./paystream.db"


class Settings(BaseSettings):
    """paystream's configuration; every field maps to the upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    broadcast_url: str = "memory://"
    # Prefix of the broadcast channels, so several deployments can share one Redis.
    broadcast_channel_prefix: str = "paystream."

    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    # Several secrets, comma-separated, so an endpoint's secret can be rolled without downtime.
    stripe_webhook_secret: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    stripe_api_base: str | None = None
    # Seconds a webhook signature's timestamp may differ from now, as Stripe's SDKs allow.
    stripe_webhook_tolerance: int = 300

    brand_name: str = "paystream"
    brand_logo_url: str | None = None
    brand_slogan: str | None = None

    host: str = "127.0.0.1"
    port: int = 8000

    # Bearer tokens: HS256 with JWT_SECRET, or RS256/ES256 with JWT_PUBLIC_KEY (PEM).
    jwt_secret: SecretStr | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_role_claim: str = "role"
    # Where a development secret is kept when neither JWT_SECRET nor JWT_PUBLIC_KEY is set,
    # so that `paystream token` and `paystream serve` in one folder agree.
    jwt_dev_secret_file: str = ".paystream-dev-secret"

    graphiql: bool = True
    graphql_introspection: bool = True
    graphql_max_depth: int = 10
    graphql_max_tokens: int = 2000

    # The app's own callback logic: a Python module (import path) whose @hook functions
    # run after state changes, and a TOML or JSON file of HTTP hooks and dedicated
    # webhook endpoints.
    paystream_hooks: str | None = None
    paystream_hooks_file: str | None = None
    # A failed hook run is retried after hook_retry_delay seconds, doubling each time (at
    # most an hour), until hook_max_attempts attempts were made.
    hook_max_attempts: int = Field(default=10, ge=1)
    hook_retry_delay: float = Field(default=10.0, gt=0)
    # Seconds one attempt may take before it counts as failed.
    hook_timeout: float = Field(default=30.0, gt=0)
    # Seconds between polls for due runs. Polling finds runs left behind by a stopped process,
    # while runs queued by this process start right after their transaction commits.
    hook_poll_interval: float = Field(default=10.0, gt=0)

    @field_validator("stripe_webhook_secret", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("stripe_secret_key", mode="before")
    @classmethod
    def _empty_key_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def stripe_configured(self) -> bool:
        return self.stripe_secret_key is not None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the settings once per process."""
    return Settings()
