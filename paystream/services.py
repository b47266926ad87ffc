"""The long-lived parts a request works with, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field

from callbacks.hook_config import HookConfig
from db.engine import Database
from paystream.settings import Settings
from paystream.stripe_api import StripeGateway


@dataclass
class Services:
    settings: Settings
    db: Database
    stripe: StripeGateway
    # The app's hooks and dedicated webhook endpoints.
    hooks: HookConfig = field(default_factory=HookConfig)
