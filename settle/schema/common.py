"""Types every domain shares: Money and the connection shape of every list."""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

import strawberry

from settle.core.money import Money as MoneyValue
from settle.core.money import amount_string
from settle.core.pagination import Page

T = TypeVar("T")
M = TypeVar("M")


@strawberry.type(description="An amount of money: a decimal string, its currency, its minor units.")
class Money:
    amount: str = strawberry.field(description='Decimal amount in major units, e.g. "1250.00".')
    currency: str = strawberry.field(description="ISO 4217 code.")
    minor_units: int = strawberry.field(description="The amount in the currency's minor unit.")

    @classmethod
    def from_value(cls, value: MoneyValue) -> Money:
        return LazyMoney(value.minor_units, value.currency)

    @classmethod
    def of(cls, minor_units: int, currency: str) -> Money:
        """A stored amount (its currency checked when it was written), formatted when asked."""
        return LazyMoney(minor_units, currency)


class LazyMoney(Money):
    """Money whose decimal string is made only if a response asks for it.

    A type shows a dozen amounts (an invoice's totals, each line's prices) and an
    operation asks for two or three; formatting them all was a tenth of a list's
    CPU. GraphQL reads ``amount`` as an attribute, and this property answers it.
    """

    def __init__(self, minor_units: int, currency: str) -> None:
        self.minor_units = minor_units
        self.currency = currency

    @property
    def amount(self) -> str:  # type: ignore[override]
        return amount_string(self.minor_units, self.currency)


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type
class Connection(Generic[T]):
    total_count: int
    edges: list[Edge[T]]
    page_info: PageInfo

    @classmethod
    def from_page(cls, page: Page[M], convert: Callable[[M], T]) -> Connection[T]:  # type: ignore[type-var]
        return cls(
            total_count=page.total_count,
            edges=[
                Edge(cursor=cursor, node=convert(item))
                for cursor, item in zip(page.cursors, page.items, strict=True)
            ],
            page_info=PageInfo(has_next_page=page.has_next_page, end_cursor=page.end_cursor),
        )


@strawberry.enum
class SortDirection(Enum):
    ASC = "asc"
    DESC = "desc"


CURSOR_DESCRIPTION = (
    "Where this event is in the agency's event stream: subscribe again with the last one "
    "you received as `after` to hear, in order, what you missed."
)
