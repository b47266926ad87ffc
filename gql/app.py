"""The GraphQL endpoint: HTTP, GraphiQL, and WebSockets in both subscription protocols."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.websockets import WebSocket
from graphql import OperationType
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL

from gql.context import Context
from gql.live import LiveHub
from gql.read_cache import ReadCache
from gql.schema import build_schema, operation_type, visibility
from paystream.auth import viewer_from_header, viewer_from_token
from paystream.errors import Unauthenticated
from paystream.services import Services
from paystream.viewer import ANONYMOUS_VIEWER, Viewer


# Distinct subscription results whose JSON is kept; each is shared by many sockets.
ENCODED_CACHE_SIZE = 256


def viewer_from_connection_params(params: dict[str, Any], services: Services) -> Viewer:
    """Return the viewer named by a `connection_init` payload (`Authorization` or `token`)."""
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str):
        return viewer_from_header(header, services.settings)
    token = params.get("token")
    if isinstance(token, str) and token:
        return viewer_from_token(token, services.settings)
    return ANONYMOUS_VIEWER


class PaystreamGraphQL(GraphQL[Context, None]):
    def __init__(self, services: Services, hub: LiveHub, read_cache: ReadCache) -> None:
        settings = services.settings
        super().__init__(
            build_schema(settings),
            graphql_ide="graphiql" if settings.graphiql else None,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL),
        )
        self.services = services
        self.hub = hub
        self.read_cache = read_cache
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

    async def execute_single(self, *args: Any, **kwargs: Any) -> Any:
        """Serve a read from the read cache when an equal one ran since the last change."""
        key = self._read_key(kwargs.get("request_data"), kwargs.get("context"))
        if key is not None:
            cached = self.read_cache.get(key)
            if cached is not None:
                return cached
        result = await super().execute_single(*args, **kwargs)
        if key is not None and not result.errors:
            self.read_cache.put(key, result)
        return result

    def _read_key(self, request_data: Any, context: Any) -> tuple[Any, ...] | None:
        viewer = getattr(context, "viewer", None)
        query = getattr(request_data, "query", None)
        if viewer is None or viewer.rejection is not None or not isinstance(query, str):
            return None
        operation_name = request_data.operation_name
        max_tokens = self.services.settings.graphql_max_tokens
        if operation_type(query, operation_name, max_tokens) != OperationType.QUERY:
            return None
        variables = json.dumps(request_data.variables or {}, sort_keys=True, default=str)
        return (query, operation_name, variables, visibility(viewer))

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
