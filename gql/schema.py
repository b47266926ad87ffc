"""The schema and its extensions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import GraphQLError

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.extensions.base_extension import SchemaExtension
from graphql.validation import NoSchemaIntrospectionCustomRule

from gql.mutations import Mutation
from gql.queries import Query
from gql.subscriptions import Subscription
from paystream.errors import PaystreamError
from paystream.settings import Settings


def _is_internal(error: GraphQLError) -> bool:
    """Mask everything but our own errors and the schema's validation errors."""
    original = error.original_error
    if original is None:
        return False
    return not isinstance(original, PaystreamError)


class PaystreamSchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # A rejected request is the client's to read, not a server fault to log with a
        # traceback; only unexpected exceptions are logged.
        unexpected = [error for error in errors if _is_internal(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    # Factories rather than instances, so each request gets fresh extensions; the parser
    # and validation caches are shared per size at module level in Strawberry.
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        lambda: MaskErrors(should_mask_error=_is_internal, error_message="Internal server error."),
    ]
    if settings is not None:
        max_depth, max_tokens = settings.graphql_max_depth, settings.graphql_max_tokens
        extensions.append(lambda: QueryDepthLimiter(max_depth=max_depth))
        extensions.append(lambda: MaxTokensLimiter(max_token_count=max_tokens))
        if not settings.graphql_introspection:
            extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return PaystreamSchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
