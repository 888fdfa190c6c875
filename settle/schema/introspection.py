"""Introspection (``__schema``, ``__type``) only where the settings allow it.

A production API need not publish its whole schema to whoever asks: its
frontends are built against ``schema.graphql``. So introspection is off in
production unless ``SETTLE_GRAPHQL_INTROSPECTION=true``, and on elsewhere
(GraphiQL needs it). A refused operation gets one top-level error per
introspection field, with code INTROSPECTION_DISABLED, and nothing runs.
``__typename`` is always allowed: clients need it to read unions.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import FieldNode, GraphQLError, ValidationRule
from strawberry.extensions import SchemaExtension

from settle.core.settings import Settings, get_settings

_ENTRY_FIELDS = frozenset({"__schema", "__type"})


class NoIntrospection(ValidationRule):
    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value in _ENTRY_FIELDS:
            self.report_error(
                GraphQLError(
                    f"Introspection is disabled on this server: '{node.name.value}' "
                    "cannot be queried.",
                    node,
                    extensions={"code": "INTROSPECTION_DISABLED"},
                )
            )


class IntrospectionGate(SchemaExtension):
    """Adds NoIntrospection to the validation of each operation when the settings say so."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        settings = getattr(context.context, "settings", None)
        if not isinstance(settings, Settings):
            settings = get_settings()
        if not settings.graphql_introspection_enabled:
            context.validation_rules = (*context.validation_rules, NoIntrospection)
        yield
