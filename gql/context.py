"""The viewer seam: every resolver reads the caller and the services from here."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    # Orders already read in this request, by id; see gql.types.load_order.
    order_memo: dict[int, Any] = field(default_factory=dict)


Info = StrawberryInfo[Context, None]
