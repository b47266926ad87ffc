"""A stand-in for Stripe's webhook endpoints API, served on 127.0.0.1 for the setup tests.

It is a stand-in because localstripe 1.15.10 has no /v1/webhook_endpoints routes, and the
tests send no traffic beyond 127.0.0.1. It implements what the SDK's list, create and update
calls need: Bearer authentication, form-encoded bodies, list objects newest first with
`limit` and `starting_after`, a `secret` in the create response only, 404 for an unknown id,
400 for an unknown parameter, and Stripe's maximum of 16 endpoints per account.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MAX_ENDPOINTS = 16
CREATE_PARAMETERS = frozenset({"url", "enabled_events", "api_version", "description", "metadata"})
UPDATE_PARAMETERS = frozenset({"url", "enabled_events", "description", "disabled", "metadata"})
LIST_PARAMETERS = frozenset({"limit", "starting_after"})
INDEXED = re.compile(r"^(\w+)\[(\w*)\]$")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str


class StripeApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def decode_form(text: str) -> dict[str, Any]:
    """Decode Stripe's form encoding one level deep: `a[0]=x` is a list, `a[k]=x` a dict."""
    decoded: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        match = INDEXED.match(key)
        if match is None:
            decoded[key] = value
        elif match.group(2).isdigit() or match.group(2) == "":
            decoded.setdefault(match.group(1), []).append(value)
        else:
            decoded.setdefault(match.group(1), {})[match.group(2)] = value
    return decoded


class WebhookEndpointsApi:
    """The stand-in's state and its Starlette app; `url` is set once it is served."""

    def __init__(self, secret_key: str) -> None:
        self.secret_key = secret_key
        self.url = ""
        self.endpoints: dict[str, dict[str, Any]] = {}
        # The signing secret of each endpoint created through the API, by endpoint id.
        self.secrets: dict[str, str] = {}
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self.app = Starlette(
            routes=[
                Route("/v1/webhook_endpoints", self._collection, methods=["GET", "POST"]),
                Route("/v1/webhook_endpoints/{id}", self._update, methods=["POST"]),
            ]
        )

    def add(
        self,
        url: str,
        enabled_events: list[str],
        *,
        api_version: str | None = None,
        status: str = "enabled",
    ) -> dict[str, Any]:
        """Store an endpoint as if it had been created earlier, for example in the Dashboard."""
        endpoint_id = f"we_standin{next(self._ids):04d}"
        endpoint: dict[str, Any] = {
            "id": endpoint_id,
            "object": "webhook_endpoint",
            "api_version": api_version,
            "application": None,
            "created": int(time.time()),
            "description": None,
            "enabled_events": list(enabled_events),
            "livemode": False,
            "metadata": {},
            "status": status,
            "url": url,
        }
        self.endpoints[endpoint_id] = endpoint
        return endpoint

    def writes(self) -> list[RecordedRequest]:
        return [request for request in self.requests if request.method == "POST"]

    async def _collection(self, request: Request) -> JSONResponse:
        try:
            self._authenticate(request)
            if request.method == "GET":
                return JSONResponse(self._list(dict(request.query_params)))
            return JSONResponse(self._create(decode_form((await request.body()).decode())))
        except StripeApiError as error:
            return _error_response(error)

    async def _update(self, request: Request) -> JSONResponse:
        try:
            self._authenticate(request)
            endpoint = self.endpoints.get(request.path_params["id"])
            if endpoint is None:
                raise StripeApiError(
                    404, f"No such webhook endpoint: '{request.path_params['id']}'"
                )
            params = decode_form((await request.body()).decode())
            _check_parameters(params, UPDATE_PARAMETERS)
            if "disabled" in params:
                endpoint["status"] = "disabled" if params.pop("disabled") == "true" else "enabled"
            endpoint.update(params)
            return JSONResponse(endpoint)
        except StripeApiError as error:
            return _error_response(error)

    def _authenticate(self, request: Request) -> None:
        self.requests.append(RecordedRequest(request.method, request.url.path))
        if request.headers.get("authorization") != f"Bearer {self.secret_key}":
            raise StripeApiError(401, "Invalid API Key provided.")

    def _list(self, params: dict[str, str]) -> dict[str, Any]:
        _check_parameters(params, LIST_PARAMETERS)
        newest_first = list(reversed(self.endpoints.values()))
        if "starting_after" in params:
            ids = [endpoint["id"] for endpoint in newest_first]
            newest_first = newest_first[ids.index(params["starting_after"]) + 1 :]
        limit = int(params.get("limit", 10))
        return {
            "object": "list",
            "url": "/v1/webhook_endpoints",
            "has_more": len(newest_first) > limit,
            "data": newest_first[:limit],
        }

    def _create(self, params: dict[str, Any]) -> dict[str, Any]:
        _check_parameters(params, CREATE_PARAMETERS)
        if "url" not in params or "enabled_events" not in params:
            raise StripeApiError(400, "Missing required param: url or enabled_events.")
        if len(self.endpoints) >= MAX_ENDPOINTS:
            raise StripeApiError(
                400, f"You have reached the maximum of {MAX_ENDPOINTS} test webhook endpoints."
            )
        endpoint = self.add(
            params["url"], params["enabled_events"], api_version=params.get("api_version")
        )
        endpoint["description"] = params.get("description")
        # Only the create response contains the secret. List and update responses never do.
        self.secrets[endpoint["id"]] = f"whsec_{secrets.token_hex(16)}"
        return {**endpoint, "secret": self.secrets[endpoint["id"]]}


def _check_parameters(params: dict[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise StripeApiError(400, f"Received unknown parameter: {unknown[0]}")


def _error_response(error: StripeApiError) -> JSONResponse:
    kind = "invalid_request_error" if error.status != 401 else "authentication_error"
    return JSONResponse(
        {"error": {"type": kind, "message": error.message}}, status_code=error.status
    )
