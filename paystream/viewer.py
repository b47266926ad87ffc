"""The caller of a request: who they are and what they may touch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from paystream.errors import Forbidden, Unauthenticated

ANONYMOUS = "anonymous"
USER = "user"
ADMIN = "admin"


@dataclass(frozen=True)
class Viewer:
    """An authenticated user, an admin, or an anonymous caller (user_id None)."""

    user_id: str | None
    role: str = ANONYMOUS
    # Unix time the token stops being valid; None for tokens without `exp`.
    expires_at: float | None = None
    # Why the presented token was rejected; such a viewer is refused everything but the
    # public fields.
    rejection: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN

    @property
    def is_authenticated(self) -> bool:
        return self.user_id is not None

    @property
    def expired(self) -> bool:
        # A WebSocket keeps the viewer of its connection_init, so expiry is checked on use.
        return self.expires_at is not None and self.expires_at <= time.time()

    def can_read(self, owner_id: str | None) -> bool:
        if self.expired:
            return False
        return self.sees(owner_id)

    def sees(self, owner_id: str | None) -> bool:
        """Return whether rows of `owner_id` are visible to this viewer's role and user.

        The token's expiry is left out, because a shared live list filters by this and each
        of its subscribers checks its own expiry."""
        return self.is_admin or (self.user_id is not None and self.user_id == owner_id)

    def require_authenticated(self) -> str:
        if self.rejection is not None:
            raise Unauthenticated(self.rejection)
        if self.user_id is None:
            raise Unauthenticated("This operation needs a bearer token.")
        if self.expired:
            raise Unauthenticated("The bearer token has expired; reconnect with a fresh one.")
        return self.user_id

    def require_owner(self, owner_id: str, what: str) -> None:
        """Raise unless the viewer may act on a row owned by `owner_id`."""
        self.require_authenticated()
        if not self.can_read(owner_id):
            raise Forbidden(f"{what} belongs to another user.")

    def require_admin(self, action: str) -> None:
        self.require_authenticated()
        if not self.is_admin:
            raise Forbidden(f"Only an admin may {action}.")


ANONYMOUS_VIEWER = Viewer(user_id=None)
