"""The schema and its extensions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
import json
from functools import lru_cache
from typing import Any

from graphql import GraphQLError, OperationType, get_operation_ast, parse

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
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from graphql.validation import NoSchemaIntrospectionCustomRule

from gql.mutations import Mutation
from gql.queries import Query
from gql.shared_streams import SharedStreams
from gql.subscriptions import Subscription
from paystream.errors import PaystreamError
from paystream.settings import Settings
from paystream.viewer import Viewer


class ValidationErrorCodes(SchemaExtension):
    """Give errors raised before any resolver ran a stable `extensions.code`, as ours have:
    BAD_USER_INPUT for a variable's value, GRAPHQL_VALIDATION_FAILED for the document."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        for error in (result.errors if result else None) or []:
            original = error.original_error
            if (error.extensions or {}).get("code") or not (
                original is None or isinstance(original, GraphQLError)
            ):
                continue
            code = (
                "BAD_USER_INPUT"
                if error.message.startswith("Variable '$")
                else "GRAPHQL_VALIDATION_FAILED"
            )
            error.extensions = {**(error.extensions or {}), "code": code}


def _is_internal(error: GraphQLError) -> bool:
    """Mask everything but our own errors and the schema's validation errors."""
    original = error.original_error
    if original is None:
        return False
    # Variable coercion wraps its own GraphQLError, which describes the client's input.
    return not isinstance(original, PaystreamError | GraphQLError)


class PerEventMemoExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """An executor whose per-event copies each get their own sub-field memo.

    graphql-core 3.3.2 shallow-copies the subscription's executor for every event, so the
    copies share one memo keyed by the id() of lists built anew per event. That memo gains
    an entry per event for as long as the subscription lives, about 1.6 KB each.
    """

    def build_per_event_executor(self, payload: Any) -> Any:
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor


class _ParserCache(ParserCache):
    """Strawberry's ParserCache, minus the syntax errors it would let escape.

    In Strawberry 0.341 a syntax error raised in an `on_parse` hook escapes `Schema.stream`,
    so a WebSocket client got a bare `complete` for a bad or over-long document. Leaving the
    document unset makes Strawberry parse it again inside its own error handling, which
    reports the error. The token limit keeps that second parse short.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            pass
        yield


@lru_cache(maxsize=1024)
def operation_type(
    query: str, operation_name: str | None, max_tokens: int | None
) -> OperationType | None:
    """Return the type of the operation a request runs, or None for an invalid document."""
    # The same token limit as MaxTokensLimiter: this parse runs before the extensions, and
    # an unlimited parse of a multi-megabyte document blocks the event loop for seconds.
    try:
        operation = get_operation_ast(parse(query, max_tokens=max_tokens), operation_name)
    except GraphQLError:
        return None
    return operation.operation if operation is not None else None


def _is_subscription(query: str, operation_name: str | None, max_tokens: int | None) -> bool:
    return operation_type(query, operation_name, max_tokens) == OperationType.SUBSCRIPTION


def visibility(viewer: Viewer) -> tuple[str, ...]:
    """Viewers with equal keys may read exactly the same rows."""
    if viewer.rejection is not None or viewer.user_id is None:
        return ("anonymous",)
    if viewer.is_admin:
        return ("admin",)
    return ("user", viewer.user_id)


class PaystreamSchema(strawberry.Schema):
    def __init__(self, *args: Any, max_tokens: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared_streams = SharedStreams()
        self.max_tokens = max_tokens

    async def stream(  # type: ignore[override]
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Any = None,
    ) -> Any:
        """Run queries and mutations as usual, and join subscriptions to a shared group."""
        parent = super()

        async def start() -> Any:
            return await parent.stream(
                query,
                variable_values=variable_values,
                context_value=context_value,
                root_value=root_value,
                operation_name=operation_name,
                operation_extensions=operation_extensions,
                allowed_operation_types=allowed_operation_types,
            )

        viewer = getattr(context_value, "viewer", None)
        if (
            query is None
            or viewer is None
            or not _is_subscription(query, operation_name, self.max_tokens)
        ):
            return await start()
        key = (
            query,
            json.dumps(variable_values or {}, sort_keys=True, default=str),
            operation_name,
            visibility(viewer),
        )
        return await self.shared_streams.join(key, viewer, start)

    def process_errors(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        # A rejected request is the client's to read, not a server fault to log with a
        # traceback; only unexpected exceptions are logged.
        unexpected = [error for error in errors if _is_internal(error)]
        if unexpected:
            super().process_errors(unexpected, execution_context)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    # Factories rather than instances, so each request gets fresh extensions; the parser
    # and validation caches are shared per size at module level in Strawberry.
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: _ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        ValidationErrorCodes,
        lambda: MaskErrors(should_mask_error=_is_internal, error_message="Internal server error."),
    ]
    if settings is not None:
        max_tokens = settings.graphql_max_tokens
        # Built once: the validation cache keys on the rule classes, and each new
        # QueryDepthLimiter builds a new class, which would make every request miss.
        depth_rules = QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules
        extensions.append(lambda: AddValidationRules(depth_rules))
        extensions.append(lambda: MaxTokensLimiter(max_token_count=max_tokens))
        if not settings.graphql_introspection:
            extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return PaystreamSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=PerEventMemoExecutionContext,
        max_tokens=settings.graphql_max_tokens if settings is not None else None,
    )
