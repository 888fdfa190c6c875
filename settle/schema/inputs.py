"""Input an operation may not carry, refused before it runs; a code on every refusal.

``InputChecks`` refuses, with one top-level error of code INVALID_CHARACTERS
naming the ``field``, an operation any of whose strings (in a variable or in an
inline literal) holds NUL or a lone surrogate: no database stores them
(PostgreSQL refuses NUL in text, and neither backend can encode a lone
surrogate), so they could only ever fail deeper down, as an internal error.

It also gives GraphQL's own refusals a stable ``extensions.code``, as the
errors of Settle's resolvers have: GRAPHQL_PARSE_FAILED for a syntax error,
GRAPHQL_VALIDATION_FAILED for a document the schema does not allow,
BAD_USER_INPUT for variables that do not fit their types, and the code of the
domain error when a scalar refused a value (``OUT_OF_RANGE`` for a date
outside the business range, ``INVALID_DATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSyntaxError,
    ListValueNode,
    Node,
    ObjectFieldNode,
    StringValueNode,
    VariableDefinitionNode,
)
from strawberry.extensions import SchemaExtension

from settle.core import json_input
from settle.core.errors import AppError, ValidationError
from settle.schema.documents import UNCHECKED, cached_entry


class InvalidCharactersError(GraphQLError):
    def __init__(self, field: str) -> None:
        super().__init__(
            f"{field} must not contain NUL or unpaired surrogate characters",
            extensions={"code": "INVALID_CHARACTERS", "field": field},
        )


def literal_with_invalid_text(document: DocumentNode) -> str | None:
    """The argument path (``input.name``) of the first inline string holding NUL or a lone
    surrogate; None if there is none. Iterative: the document's nesting is bounded, but
    its size is what a caller chooses."""
    pending: list[tuple[Node, str]] = [(document, "")]
    while pending:
        node, path = pending.pop()
        if isinstance(node, StringValueNode):
            if json_input.has_invalid_text(node.value):
                return path or "query"
            continue
        if isinstance(node, ArgumentNode | ObjectFieldNode):
            path = f"{path}.{node.name.value}" if path else node.name.value
        elif isinstance(node, VariableDefinitionNode):
            path = node.variable.name.value
        for key in node.keys:
            child = getattr(node, key, None)
            if isinstance(child, Node):
                pending.append((child, path))
            elif isinstance(child, tuple):
                if isinstance(node, ListValueNode):
                    pending.extend((item, f"{path}.{index}") for index, item in enumerate(child))
                else:
                    pending.extend((item, path) for item in child if isinstance(item, Node))
    return None


def _invalid_literal(context: Any) -> str | None:
    """literal_with_invalid_text of the operation's document: walked once per cached
    document (the walk was a sixth of the work of starting a subscription)."""
    entry = cached_entry(context)
    if entry is None:
        return literal_with_invalid_text(context.graphql_document)
    if entry.invalid_literal is UNCHECKED:
        entry.invalid_literal = literal_with_invalid_text(context.graphql_document)
    found = entry.invalid_literal
    return found if isinstance(found, str) else None


def _root_cause(error: BaseException | None) -> BaseException | None:
    """The first error under ``error`` that is not a GraphQLError (graphql-core wraps the
    error of a variable's value twice)."""
    seen = 0
    while isinstance(error, GraphQLError) and seen < 10:
        error = error.original_error
        seen += 1
    return error


def _extensions(error: GraphQLError) -> dict[str, Any]:
    if error.extensions is None:
        error.extensions = {}
    return error.extensions


def _label(errors: Iterable[GraphQLError] | None, default: str | None) -> None:
    """Give each error without a code the code of its domain error, else (GraphQL's own
    errors) ``default``."""
    for error in errors or ():
        if not isinstance(error, GraphQLError) or "code" in _extensions(error):
            continue
        cause = _root_cause(error)
        if isinstance(cause, AppError):
            _extensions(error)["code"] = cause.code
            if isinstance(cause, ValidationError) and cause.field is not None:
                _extensions(error)["field"] = cause.field
        elif cause is None and default is not None:
            # GraphQL's own refusal. An error caused by an unexpected exception keeps no
            # code: it is masked as "Unexpected error." and logged.
            _extensions(error)["code"] = default


class InputChecks(SchemaExtension):
    """List it right after OperationLimits: it reads the document that extension parsed."""

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            if isinstance(error, GraphQLSyntaxError) and "code" not in _extensions(error):
                _extensions(error)["code"] = "GRAPHQL_PARSE_FAILED"

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        if context.pre_execution_errors is None and context.graphql_document is not None:
            field = json_input.invalid_text(context.variables or {})
            if field is None:
                field = _invalid_literal(context)
            if field is not None:
                # Set before validation runs, this error makes Strawberry skip it.
                context.pre_execution_errors = [InvalidCharactersError(field)]
        yield
        _label(context.pre_execution_errors, "GRAPHQL_VALIDATION_FAILED")

    def on_execute(self) -> Iterator[None]:
        yield
        result: Any = self.execution_context.result
        errors = getattr(result, "errors", None)
        # Errors without a path were raised before any field ran: the variables did not
        # fit (or no operation matched the name given). Errors of fields keep their own.
        _label([e for e in errors or () if e.path is None], "BAD_USER_INPUT")
        _label([e for e in errors or () if e.path is not None], None)
