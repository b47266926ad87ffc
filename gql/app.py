"""The GraphQL endpoint: HTTP, GraphiQL, and WebSockets in both subscription protocols."""

from __future__ import annotations

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
