"""The viewer seam: every resolver reads the caller and the services from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.types import Info as StrawberryInfo

from gql.live import LiveHub
from paystream.services import Services
from paystream.viewer import Viewer


@dataclass
class Context:
    services: Services
    hub: LiveHub
    viewer: Viewer
    request: Request | WebSocket
    response: Any = None
    connection_params: dict[str, Any] | None = None


Info = StrawberryInfo[Context, None]
