"""Report types: payment analytics, receivables aging and deliverable access."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum

import strawberry

from settle.core.money import Money as MoneyValue
from settle.schema.common import Money
from settle.schema.deliverable import DeliverableKind, DeliverableLock
from settle.schema.payment import PaymentProvider
from settle.services import report as report_service

ReportGroupBy = strawberry.enum(
    report_service.GroupBy,
    name="ReportGroupBy",
    description="Periods of the agency's calendar (its time zone): days, ISO weeks starting "
    "on Monday, or months.",
)


@strawberry.enum(description="How money was received: through a gateway, or offline by one method.")
class ReportPaymentMethod(Enum):
    GATEWAY = "gateway"
    BANK_TRANSFER = "bank_transfer"
    CASH = "cash"
    CRYPTO = "crypto"
    OTHER = "other"


@strawberry.enum(
    description="What a payment paid: an advance or balance milestone, another "
    "milestone, or an invoice as a whole."
)
class PaymentKind(Enum):
    ADVANCE = "advance"
    BALANCE = "balance"
    STANDARD = "standard"
    INVOICE = "invoice"


def _money(minor: int, currency: str) -> Money:
    return Money.from_value(MoneyValue(minor, currency))


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


@strawberry.type(description="What payments in one currency did over a stretch of time.")
class PaymentFigures:
    collected: Money = strawberry.field(
        description="Money received: payments that succeeded, by when they succeeded."
    )
    refunded: Money = strawberry.field(description="Refunds settled, by when they settled.")
    net: Money = strawberry.field(description="collected - refunded.")
    payments: int = strawberry.field(description="Payments that succeeded.")
    failed: int = strawberry.field(
        description="Payments that failed or were cancelled, by when they did."
    )
    attempted: int = strawberry.field(description="payments + failed.")
    success_rate: str | None = strawberry.field(
        description='payments / attempted, a decimal rounded half up to 4 places ("0.9375"); '
        "null when nothing was attempted."
    )
    average_days_to_pay: str | None = strawberry.field(
        description="Average days from an invoice's issue date to the local day a payment of "
        'it succeeded, per invoice paid, rounded half up to 2 places ("12.50"); null when none.'
    )

    @classmethod
    def from_value(cls, value: report_service.Figures, currency: str) -> PaymentFigures:
        return cls(
            collected=_money(value.collected_minor, currency),
            refunded=_money(value.refunded_minor, currency),
            net=_money(value.net_minor, currency),
            payments=value.payments,
            failed=value.failed,
            attempted=value.attempted,
            success_rate=_decimal(value.success_rate),
            average_days_to_pay=_decimal(value.average_days_to_pay),
        )


@strawberry.type(description="One period of the report, clipped to its from and to.")
class PaymentPeriod:
    start: date
    end: date = strawberry.field(description="The period's last day (inclusive).")
    figures: PaymentFigures


@strawberry.type
class ProviderFigures:
    provider: PaymentProvider  # type: ignore[valid-type]
    figures: PaymentFigures


@strawberry.type
class MethodFigures:
    method: ReportPaymentMethod
    figures: PaymentFigures


@strawberry.type(description="What succeeded payments paid of one kind (advance vs balance).")
class KindFigures:
    kind: PaymentKind
    collected: Money
    payments: int = strawberry.field(description="Payments that paid something of this kind.")


@strawberry.type(description="Payments in one currency over the agency's calendar.")
class PaymentAnalytics:
    currency: str
    timezone: str = strawberry.field(description="The agency's zone the periods follow.")
    group_by: ReportGroupBy  # type: ignore[valid-type]
    from_: date = strawberry.field(name="from")
    to: date
    periods: list[PaymentPeriod] = strawberry.field(
        description="Every period from `from` to `to`, in order, empty ones included."
    )
    totals: PaymentFigures
    by_provider: list[ProviderFigures]
    by_method: list[MethodFigures]
    by_kind: list[KindFigures]

    @classmethod
    def from_value(cls, value: report_service.PaymentAnalytics) -> PaymentAnalytics:
        currency = value.currency

        def figures(found: report_service.Figures) -> PaymentFigures:
            return PaymentFigures.from_value(found, currency)

        return cls(
            currency=currency,
            timezone=value.timezone,
            group_by=value.group_by,
            from_=value.start,
            to=value.end,
            periods=[
                PaymentPeriod(start=p.start, end=p.end, figures=figures(p.figures))
                for p in value.periods
            ],
            totals=figures(value.totals),
            by_provider=[
                ProviderFigures(provider=PaymentProvider(key), figures=figures(found))
                for key, found in value.by_provider.items()
            ],
            by_method=[
                MethodFigures(method=ReportPaymentMethod(key), figures=figures(found))
                for key, found in value.by_method.items()
            ],
            by_kind=[
                KindFigures(
                    kind=PaymentKind(kind.kind),
                    collected=_money(kind.collected_minor, currency),
                    payments=kind.payments,
                )
                for kind in value.by_kind
            ],
        )


@strawberry.type(description="What is owed, by days past due on the report's day.")
class AgingRow:
    client_id: strawberry.ID | None = strawberry.field(description="Null on the totals row.")
    client_name: str | None
    invoices: int = strawberry.field(description="Unpaid invoices counted.")
    current: Money = strawberry.field(description="Not yet due, or due on the day.")
    days_1_to_30: Money = strawberry.field(name="days1To30")
    days_31_to_60: Money = strawberry.field(name="days31To60")
    days_61_to_90: Money = strawberry.field(name="days61To90")
    over_90: Money = strawberry.field(name="over90", description="More than 90 days past due.")
    total: Money

    @classmethod
    def from_value(cls, row: report_service.AgingRow, currency: str) -> AgingRow:
        return cls(
            client_id=strawberry.ID(str(row.client_id)) if row.client_id else None,
            client_name=row.client_name,
            invoices=row.invoices,
            current=_money(row.current, currency),
            days_1_to_30=_money(row.days_1_30, currency),
            days_31_to_60=_money(row.days_31_60, currency),
            days_61_to_90=_money(row.days_61_90, currency),
            over_90=_money(row.over_90, currency),
            total=_money(row.total, currency),
        )


@strawberry.type(description="Accounts receivable aging in one currency.")
class ReceivablesAging:
    currency: str
    as_of: date
    clients: list[AgingRow] = strawberry.field(description="Clients owing something, by name.")
    totals: AgingRow

    @classmethod
    def from_value(cls, value: report_service.ReceivablesAging) -> ReceivablesAging:
        return cls(
            currency=value.currency,
            as_of=value.as_of,
            clients=[AgingRow.from_value(row, value.currency) for row in value.clients],
            totals=AgingRow.from_value(value.totals, value.currency),
        )


@strawberry.type(description="Whether the project's client can open one of its files now.")
class DeliverableAccess:
    deliverable_id: strawberry.ID
    title: str
    kind: DeliverableKind  # type: ignore[valid-type]
    client_can_open: bool
    reason: DeliverableLock | None = strawberry.field(  # type: ignore[valid-type]
        description="Why the client cannot open it; null when it can."
    )
    until: datetime | None = strawberry.field(
        description="When the client's access ends (or ended, with ACCESS_EXPIRED): "
        "SETTLE_DELIVERABLE_ACCESS_DAYS after every milestone was paid; null until then."
    )

    @classmethod
    def from_value(cls, value: report_service.DeliverableAccess) -> DeliverableAccess:
        row = value.deliverable
        return cls(
            deliverable_id=strawberry.ID(str(row.id)),
            title=row.title,
            kind=row.kind,
            client_can_open=value.access.allowed,
            reason=value.access.reason,
            until=value.access.expires_at,
        )
