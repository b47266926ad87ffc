"""The GraphQL endpoint: HTTP, GraphiQL, and WebSockets in both subscription protocols."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from gql.context import Context
from gql.live import LiveHub
from gql.schema import build_schema
from paystream.auth import viewer_from_header, viewer_from_token
from paystream.errors import Unauthenticated
from paystream.services import Services
from paystream.viewer import ANONYMOUS_VIEWER, Viewer


# Distinct subscription results whose JSON is kept; each is shared by many sockets.
ENCODED_CACHE_SIZE = 256


def viewer_from_connection_params(params: dict[str, Any], services: Services) -> Viewer:
    """The viewer named by a `connection_init` payload: `Authorization` or `token`."""
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str):
        return viewer_from_header(header, services.settings)
    token = params.get("token")
    if isinstance(token, str) and token:
        return viewer_from_token(token, services.settings)
    return ANONYMOUS_VIEWER


class PaystreamGraphQL(GraphQL[Context, None]):
    def __init__(self, services: Services, hub: LiveHub) -> None:
        settings = services.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self.services = services
        self.hub = hub
        self._encoded: OrderedDict[int, tuple[object, str]] = OrderedDict()

    def encode_json(self, data: object) -> str | bytes:
        """Encode a subscription result's data once for every socket that receives it.

        Subscribers of one shape share one result object (see gql.shared_streams), so its
        JSON is cached by identity and only the operation id differs per socket.
        """
        if isinstance(data, dict) and data.get("type") in ("next", "data"):
            payload = data.get("payload")
            if isinstance(payload, dict) and payload.keys() == {"data"}:
                encoded = self._encoded_data(payload["data"])
                return (
                    f'{{"id":{json.dumps(data.get("id"))},"type":"{data["type"]}",'
                    f'"payload":{{"data":{encoded}}}}}'
                )
        return super().encode_json(data)

    def _encoded_data(self, value: object) -> str:
        cached = self._encoded.get(id(value))
        if cached is not None and cached[0] is value:
            return cached[1]
        encoded = json.dumps(value, separators=(",", ":"))
        # The cached object is kept alive, so its id cannot be reused while cached.
        self._encoded[id(value)] = (value, encoded)
        if len(self._encoded) > ENCODED_CACHE_SIZE:
            self._encoded.popitem(last=False)
        return encoded

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        viewer = ANONYMOUS_VIEWER
        if isinstance(request, Request):
            try:
                viewer = viewer_from_header(
                    request.headers.get("authorization"), self.services.settings
                )
            except Unauthenticated as error:
                # Every resolver that needs a caller then fails with this reason.
                viewer = Viewer(user_id=None, rejection=error.message)
        return Context(
            services=self.services, hub=self.hub, viewer=viewer, request=request, response=response
        )

    async def on_ws_connect(self, context: Context) -> dict[str, object] | None:  # type: ignore[override]
        try:
            context.viewer = viewer_from_connection_params(
                context.connection_params or {}, self.services
            )
        except Unauthenticated as error:
            raise ConnectionRejectionError({"message": error.message}) from None
        return None
