"""What every resolver does: find the actor, parse ids, run a mutation in one transaction."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from graphql import GraphQLError
from strawberry.types.unset import UnsetType

from settle.core.errors import AppError, NotFoundError, ValidationError
from settle.core.outbox import transaction
from settle.core.tenancy import Actor
from settle.schema.context import Info
from settle.schema.errors import Error, to_error

T = TypeVar("T")


class NotAuthenticated(GraphQLError):
    """A top-level error: the operation needs a valid access token."""

    def __init__(self) -> None:
        super().__init__("Authentication required", extensions={"code": "UNAUTHENTICATED"})


def require_actor(info: Info) -> Actor:
    actor = info.context.actor
    if actor is None:
        raise NotAuthenticated()
    return actor


def parse_id(value: Any, field: str = "id") -> uuid.UUID:
    """A UUID from a GraphQL ID; ValidationError naming the field otherwise."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationError(field, f"{field} is not a valid id", code="INVALID_ID") from None


def parse_optional_id(value: Any) -> uuid.UUID | None:
    """A UUID, or None for a malformed id (lookups treat it as not found)."""
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def provided(values: dict[str, Any]) -> dict[str, Any]:
    """Keep only the fields an update input actually set (UNSET means "leave alone")."""
    return {key: value for key, value in values.items() if not isinstance(value, UnsetType)}


M = TypeVar("M")


async def find_one(
    id: Any, fetch: Callable[[uuid.UUID], Awaitable[M]], convert: Callable[[M], T]
) -> T | None:
    """A single-row query field: null for a malformed, unknown or foreign id alike."""
    row_id = parse_optional_id(id)
    if row_id is None:
        return None
    try:
        return convert(await fetch(row_id))
    except NotFoundError:
        return None


async def mutate(action: Callable[[], Awaitable[T]]) -> T | Error:
    """Run a mutation in one transaction; a domain error rolls it back and becomes a type."""
    try:
        async with transaction():
            return await action()
    except AppError as exc:
        return to_error(exc)


async def query(action: Callable[[], Awaitable[T]]) -> T | Error:
    try:
        return await action()
    except AppError as exc:
        return to_error(exc)


@contextmanager
def public_errors() -> Iterator[None]:
    """Report a domain error of a list field (which has no union) with its code and field.

    The message alone would leave a client parsing English to learn that, say,
    ``first`` was out of range; the extensions carry the same stable code and
    field name as the ``ValidationError`` type of a mutation.
    """
    try:
        yield
    except AppError as exc:
        extensions: dict[str, Any] = {"code": exc.code}
        if isinstance(exc, ValidationError):
            extensions["field"] = exc.field
        raise GraphQLError(exc.message, extensions=extensions, original_error=exc) from None
