"""Reports for owners and admins: payment analytics, receivables aging, webhook events and
deliverable access.

Every figure is an SQL aggregate: the analytics are one statement, the aging one
statement, whatever the number of payments or invoices. Only the aggregated rows
(a period, a provider, a client) are read into Python, where ratios are divided
as Decimals.

Periods follow the agency's time zone. PostgreSQL has the zone database and
groups with ``date_trunc(unit, at AT TIME ZONE zone)``; SQLite has none, so
Python lists the zone's UTC offsets over the asked range (``offset_intervals``,
from zoneinfo) and the statement shifts each timestamp by the offset of the
interval it falls in before grouping. Both give the local date of an instant,
so both give the same report.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from tortoise import Tortoise
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.db import SqlParams, as_uuid
from settle.core.errors import ValidationError
from settle.core.money import normalize_currency
from settle.core.pagination import Ordering, Page, paginate
from settle.core.tenancy import MANAGERS, Actor, scoped
from settle.models.agency import Agency
from settle.models.deliverable import Deliverable, DeliverableStatus
from settle.models.payment import PaymentProvider, WebhookEvent
from settle.services import deliverable as deliverable_service
from settle.services import project as project_service
from settle.services.settlement import OPEN_STATUSES

# --- the agency's calendar ------------------------------------------------------------


class GroupBy(StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


# The longest range each grouping answers, in days (both ends counted): two years of
# days, ten years of weeks, fifty years of months. Longer is OUT_OF_RANGE on ``to``.
MAX_RANGE_DAYS = {GroupBy.DAY: 731, GroupBy.WEEK: 3653, GroupBy.MONTH: 18263}

# Rates and averages are Decimals rounded half up: a rate to 4 places ("0.9375"),
# an average number of days to 2 ("12.50").
RATE_PLACES = Decimal("0.0001")
DAYS_PLACES = Decimal("0.01")


def period_start(day: date, group_by: GroupBy) -> date:
    """The first day of the period holding ``day``: itself, its ISO week's Monday, the 1st."""
    if group_by is GroupBy.WEEK:
        return day - timedelta(days=day.weekday())
    if group_by is GroupBy.MONTH:
        return day.replace(day=1)
    return day


def next_period(start: date, group_by: GroupBy) -> date:
    if group_by is GroupBy.WEEK:
        return start + timedelta(days=7)
    if group_by is GroupBy.MONTH:
        return date(start.year + start.month // 12, start.month % 12 + 1, 1)
    return start + timedelta(days=1)


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose local date in ``zone`` is ``day``."""
    return datetime.combine(day, time(), zone).astimezone(UTC)


# The zone's offset is sampled this often; no zone changes its offset twice within it.
_SAMPLE = timedelta(hours=6)


def offset_intervals(zone: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, int]]:
    """The zone's UTC offset over [lo, hi): (from when, offset in seconds), in order.

    Each offset holds from its instant to the next one's (the last to ``hi``).
    Transitions fall on whole seconds; each is found by bisection between samples.
    """

    def offset(at: datetime) -> int:
        value = at.astimezone(zone).utcoffset()
        assert value is not None
        return int(value.total_seconds())

    found = [(lo, offset(lo))]
    at = lo
    while at < hi:
        step = min(at + _SAMPLE, hi)
        if step < hi and offset(step) == found[-1][1]:
            at = step
            continue
        if step == hi and offset(hi - timedelta(seconds=1)) == found[-1][1]:
            break
        # Somewhere in (at, step] the offset changed: the first second with the new one.
        low, high = at, step if step < hi else hi - timedelta(seconds=1)
        target = offset(high)
        while high - low > timedelta(seconds=1):
            middle = low + timedelta(seconds=int((high - low).total_seconds()) // 2)
            if offset(middle) == target:
                high = middle
            else:
                low = middle
        found.append((high, target))
        at = high
    return found


async def _agency_zone(actor: Actor) -> tuple[str, ZoneInfo]:
    names = await Agency.filter(id=actor.agency_id).limit(1).values_list("timezone", flat=True)
    zone_name = str(names[0]) if names else "UTC"
    return zone_name, ZoneInfo(zone_name)


def today_in(zone: ZoneInfo) -> date:
    return clock.now().astimezone(zone).date()


class _Sql:
    """Hand-written SQL for both backends: placeholders, and the agency's local time."""

    def __init__(self, zone_name: str, zone: ZoneInfo) -> None:
        self.conn = Tortoise.get_connection("default")
        self.params = SqlParams(self.conn)
        self.postgres = self.params.postgres
        self.zone_name = zone_name
        self.zone = zone

    def __call__(self, value: Any) -> str:
        return self.params(value)

    def at(self, value: datetime) -> str:
        """An instant: a timestamp on PostgreSQL, the text Tortoise stores on SQLite."""
        if self.postgres:
            return self(value)
        return self(value.astimezone(UTC).isoformat(sep=" "))

    def day(self, value: date) -> str:
        return self(value) if self.postgres else self(value.isoformat())

    def null(self, pg_type: str) -> str:
        return f"CAST(NULL AS {pg_type})" if self.postgres else "NULL"

    async def rows(self, sql: str) -> list[dict[str, Any]]:
        _, rows = await self.conn.execute_query(sql, self.params.values)
        return [dict(row) for row in rows]


def _local_day(value: Any) -> date:
    """A date column or expression as read back: a date (PostgreSQL) or its text (SQLite)."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _int(value: Any) -> int:
    return int(value or 0)


def ratio(numerator: int, denominator: int, places: Decimal) -> Decimal | None:
    """numerator / denominator rounded half up to ``places``; None when nothing to divide."""
    if denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(places, rounding=ROUND_HALF_UP)


def _check_range(start: date, end: date, group_by: GroupBy) -> None:
    if start > end:
        raise ValidationError("to", "to must be on or after from", code="OUT_OF_RANGE")
    longest = MAX_RANGE_DAYS[group_by]
    if (end - start).days + 1 > longest:
        raise ValidationError(
            "to",
            f"A report by {group_by.value} covers at most {longest} days",
            code="OUT_OF_RANGE",
        )


# --- payment analytics ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Figures:
    """Money in minor units of the report's currency, and counts."""

    collected_minor: int = 0
    refunded_minor: int = 0
    payments: int = 0
    failed: int = 0
    days_total: int = 0
    days_count: int = 0

    @property
    def net_minor(self) -> int:
        return self.collected_minor - self.refunded_minor

    @property
    def attempted(self) -> int:
        return self.payments + self.failed

    @property
    def success_rate(self) -> Decimal | None:
        return ratio(self.payments, self.attempted, RATE_PLACES)

    @property
    def average_days_to_pay(self) -> Decimal | None:
        return ratio(self.days_total, self.days_count, DAYS_PLACES)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Figures:
        return cls(
            collected_minor=_int(row["collected"]),
            refunded_minor=_int(row["refunded"]),
            payments=_int(row["ok"]),
            failed=_int(row["bad"]),
            days_total=_int(row["days_total"]),
            days_count=_int(row["days_count"]),
        )


@dataclass(frozen=True, slots=True)
class Period:
    start: date
    end: date
    figures: Figures


@dataclass(frozen=True, slots=True)
class KindTotal:
    """What payments collected for one kind of thing: advance, balance, standard, invoice."""

    kind: str
    collected_minor: int
    payments: int


@dataclass(frozen=True, slots=True)
class PaymentAnalytics:
    currency: str
    timezone: str
    group_by: GroupBy
    start: date
    end: date
    periods: list[Period]
    totals: Figures
    by_provider: dict[str, Figures]
    by_method: dict[str, Figures]
    by_kind: list[KindTotal]


# A payment collected through a gateway has no offline method: it counts as this one.
GATEWAY_METHOD = "gateway"
# What an allocation without a milestone pays: a whole invoice.
INVOICE_KIND = "invoice"
KIND_ORDER = ("advance", "balance", "standard", INVOICE_KIND)


def analytics_sql(
    sql: _Sql, agency_id: uuid.UUID, currency: str, lo: datetime, hi: datetime, group_by: GroupBy
) -> str:
    """The one statement of the payment analytics (parameters bound into ``sql``).

    Facts, one row each: a payment that succeeded (collected, counted), a payment
    that failed or was cancelled (attempted), a refund that settled (refunded), and
    each invoice a succeeded payment paid (days from issue, advance or balance). Each
    is dated by its own moment in the agency's zone and grouped by period, provider,
    method, kind and in all, in one UNION ALL.
    """
    # SQLite binds by position: the zone's offsets come first in the text, so first here.
    zones = ""
    if not sql.postgres:
        intervals = offset_intervals(sql.zone, lo, hi)
        bounds = [start for start, _ in intervals[1:]] + [hi]
        values = ", ".join(
            f"({sql.at(start)}, {sql.at(stop)}, {sql(seconds)})"
            for (start, seconds), stop in zip(intervals, bounds, strict=True)
        )
        zones = f"tz(lo, hi, off) AS (VALUES {values}),"
    method = f"COALESCE(p.method, '{GATEWAY_METHOD}')"
    no_date, no_kind, no_id = sql.null("DATE"), sql.null("VARCHAR(20)"), sql.null("UUID")

    def mine(prefix: str, column: str) -> str:
        return (
            f"{prefix}.agency_id = {sql(agency_id)} AND {prefix}.currency = {sql(currency)} "
            f"AND {column} >= {sql.at(lo)} AND {column} < {sql.at(hi)}"
        )

    raw = f"""
    SELECT p.succeeded_at AS at, p.provider AS provider, {method} AS method,
           p.amount_minor AS collected, 0 AS refunded, 1 AS ok, 0 AS bad,
           {no_date} AS issue_date, {no_kind} AS kind, 0 AS kind_amount, {no_id} AS payment_id
    FROM payment p WHERE {mine("p", "p.succeeded_at")}
    UNION ALL
    SELECT p.failed_at, p.provider, {method}, 0, 0, 0, 1, {no_date}, {no_kind}, 0, {no_id}
    FROM payment p
    WHERE {mine("p", "p.failed_at")} AND p.status IN ('failed', 'cancelled')
    UNION ALL
    SELECT r.settled_at, p.provider, {method}, 0, r.amount_minor, 0, 0,
           {no_date}, {no_kind}, 0, {no_id}
    FROM refund r JOIN payment p ON p.id = r.payment_id
    WHERE {mine("r", "r.settled_at")} AND r.status = 'succeeded'
    UNION ALL
    SELECT p.succeeded_at, p.provider, {method}, 0, 0, 0, 0, i.issue_date,
           COALESCE(m.kind, '{INVOICE_KIND}'), a.amount_minor, p.id
    FROM payment_allocation a
    JOIN payment p ON p.id = a.payment_id
    JOIN invoice i ON i.id = a.invoice_id
    LEFT JOIN milestone m ON m.id = a.milestone_id
    WHERE {mine("p", "p.succeeded_at")}
    """
    unit = group_by.value
    if sql.postgres:
        local = f"(raw.at AT TIME ZONE {sql(sql.zone_name)})"
        local_day = f"CAST((raw.at AT TIME ZONE {sql(sql.zone_name)}) AS DATE)"
        facts = f"""
        SELECT raw.*, CAST(date_trunc('{unit}', {local}) AS DATE) AS period,
               {local_day} - raw.issue_date AS days
        FROM raw"""
    else:
        period = {
            GroupBy.DAY: "date(x.local)",
            GroupBy.WEEK: "date(x.local, '-' || "
            "((CAST(strftime('%w', x.local) AS INTEGER) + 6) % 7) || ' days')",
            GroupBy.MONTH: "date(x.local, 'start of month')",
        }[group_by]
        facts = f"""
        SELECT x.*, {period} AS period,
               CAST(julianday(date(x.local)) - julianday(x.issue_date) AS INTEGER) AS days
        FROM (
            SELECT raw.*, datetime(raw.at, (
                SELECT tz.off FROM tz WHERE raw.at >= tz.lo AND raw.at < tz.hi
            ) || ' seconds') AS local
            FROM raw
        ) x"""
    sums = (
        "SUM(collected) AS collected, SUM(refunded) AS refunded, SUM(ok) AS ok, "
        "SUM(bad) AS bad, SUM(days) AS days_total, COUNT(days) AS days_count"
    )
    return f"""
    WITH {zones} raw AS ({raw}), facts AS ({facts})
    SELECT 'period' AS dim, CAST(period AS VARCHAR(20)) AS key, {sums} FROM facts GROUP BY period
    UNION ALL
    SELECT 'provider', provider, {sums} FROM facts GROUP BY provider
    UNION ALL
    SELECT 'method', method, {sums} FROM facts GROUP BY method
    UNION ALL
    SELECT 'kind', kind, SUM(kind_amount), 0, COUNT(DISTINCT payment_id), 0, 0, 0
    FROM facts WHERE kind IS NOT NULL GROUP BY kind
    UNION ALL
    SELECT 'total', NULL, {sums} FROM facts
    """


async def payment_analytics(
    actor: Actor, *, start: date, end: date, currency: str, group_by: GroupBy
) -> PaymentAnalytics:
    """Collected, refunded, net, payments, success rate and days to pay per period of the
    agency's calendar, in one currency, with totals by provider, method and kind."""
    actor.require(*MANAGERS)
    code = normalize_currency(currency)
    _check_range(start, end, group_by)
    zone_name, zone = await _agency_zone(actor)
    lo, hi = local_midnight(start, zone), local_midnight(end + timedelta(days=1), zone)
    sql = _Sql(zone_name, zone)
    rows = await sql.rows(analytics_sql(sql, actor.agency_id, code, lo, hi, group_by))
    by: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["dim"], {})[str(row["key"])] = row
    periods = []
    first = period_start(start, group_by)
    while first <= end:
        following = next_period(first, group_by)
        found = by.get("period", {}).get(first.isoformat())
        periods.append(
            Period(
                start=max(first, start),
                end=min(following - timedelta(days=1), end),
                figures=Figures.from_row(found) if found else Figures(),
            )
        )
        first = following
    kinds = by.get("kind", {})
    return PaymentAnalytics(
        currency=code,
        timezone=zone_name,
        group_by=group_by,
        start=start,
        end=end,
        periods=periods,
        totals=Figures.from_row(by["total"]["None"]),
        by_provider={
            key: Figures.from_row(row) for key, row in sorted(by.get("provider", {}).items())
        },
        by_method={key: Figures.from_row(row) for key, row in sorted(by.get("method", {}).items())},
        by_kind=[
            KindTotal(kind, _int(kinds[kind]["collected"]), _int(kinds[kind]["ok"]))
            for kind in KIND_ORDER
            if kind in kinds
        ],
    )


# --- receivables aging ----------------------------------------------------------------------

AGING_BUCKETS = ("current", "days_1_30", "days_31_60", "days_61_90", "over_90")


@dataclass(frozen=True, slots=True)
class AgingRow:
    """What one client owes (minor units) by how many days past due; None: the totals."""

    client_id: uuid.UUID | None
    client_name: str | None
    invoices: int
    current: int
    days_1_30: int
    days_31_60: int
    days_61_90: int
    over_90: int

    @property
    def total(self) -> int:
        return self.current + self.days_1_30 + self.days_31_60 + self.days_61_90 + self.over_90


@dataclass(frozen=True, slots=True)
class ReceivablesAging:
    currency: str
    as_of: date
    clients: list[AgingRow]
    totals: AgingRow


def aging_sql(sql: _Sql, agency_id: uuid.UUID, currency: str, as_of: date) -> str:
    """One statement: each client's due amounts by bucket, then the totals (``grp`` 1)."""
    if sql.postgres:
        past_due = f"(CAST({sql.day(as_of)} AS DATE) - i.due_date)"
    else:
        past_due = f"CAST(julianday({sql.day(as_of)}) - julianday(i.due_date) AS INTEGER)"
    statuses = ", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))
    # What is due: services.settlement.invoice_due, in SQL.
    inner = f"""
    SELECT i.client_id AS client_id,
           i.total_minor - (i.amount_paid_minor - i.amount_refunded_minor)
               - i.amount_credited_minor AS due,
           CASE WHEN i.due_date IS NULL THEN 0 ELSE {past_due} END AS late
    FROM invoice i
    WHERE i.agency_id = {sql(agency_id)} AND i.currency = {sql(currency)}
      AND i.status IN ({statuses}) AND i.issue_date <= {sql.day(as_of)}
    """
    buckets = """
        COUNT(*) AS invoices,
        SUM(CASE WHEN x.late <= 0 THEN x.due ELSE 0 END) AS current,
        SUM(CASE WHEN x.late BETWEEN 1 AND 30 THEN x.due ELSE 0 END) AS days_1_30,
        SUM(CASE WHEN x.late BETWEEN 31 AND 60 THEN x.due ELSE 0 END) AS days_31_60,
        SUM(CASE WHEN x.late BETWEEN 61 AND 90 THEN x.due ELSE 0 END) AS days_61_90,
        SUM(CASE WHEN x.late > 90 THEN x.due ELSE 0 END) AS over_90"""
    return f"""
    WITH x AS (SELECT * FROM ({inner}) owed WHERE owed.due > 0)
    SELECT 0 AS grp, c.id AS client_id, c.name AS client_name, {buckets}
    FROM x JOIN client c ON c.id = x.client_id
    GROUP BY c.id, c.name
    UNION ALL
    SELECT 1, NULL, NULL, {buckets} FROM x
    ORDER BY 1, 3, 2
    """


async def receivables_aging(actor: Actor, *, currency: str, as_of: date | None) -> ReceivablesAging:
    """What each client owes on issued, unpaid invoices in one currency, by days past due
    on ``as_of`` (today in the agency's zone by default): current, 1-30, 31-60, 61-90, 90+."""
    actor.require(*MANAGERS)
    code = normalize_currency(currency)
    zone_name, zone = await _agency_zone(actor)
    day = as_of if as_of is not None else today_in(zone)
    sql = _Sql(zone_name, zone)
    rows = await sql.rows(aging_sql(sql, actor.agency_id, code, day))

    def aging(row: dict[str, Any]) -> AgingRow:
        return AgingRow(
            client_id=as_uuid(row["client_id"]) if row["client_id"] is not None else None,
            client_name=row["client_name"],
            invoices=_int(row["invoices"]),
            **{bucket: _int(row[bucket]) for bucket in AGING_BUCKETS},
        )

    return ReceivablesAging(
        currency=code,
        as_of=day,
        clients=[aging(row) for row in rows if row["grp"] == 0],
        totals=aging(next(row for row in rows if row["grp"] == 1)),
    )


# --- webhook events -----------------------------------------------------------------------


class WebhookEventStatus(StrEnum):
    UNPROCESSED = "unprocessed"
    APPLIED = "applied"
    IGNORED = "ignored"
    FLAGGED = "flagged"
    FAILED = "failed"


def webhook_event_status(event: WebhookEvent) -> WebhookEventStatus:
    """What became of an event: waiting, failed (its last attempt raised; retried while
    attempts remain), or its outcome (a duplicate capture refunded counts as applied)."""
    if event.processed_at is None:
        if event.last_error is not None:
            return WebhookEventStatus.FAILED
        return WebhookEventStatus.UNPROCESSED
    if event.outcome == "ignored":
        return WebhookEventStatus.IGNORED
    if event.outcome == "flagged":
        return WebhookEventStatus.FLAGGED
    return WebhookEventStatus.APPLIED


_STATUS_FILTERS: dict[WebhookEventStatus, Q] = {
    WebhookEventStatus.UNPROCESSED: Q(processed_at__isnull=True, last_error__isnull=True),
    WebhookEventStatus.FAILED: Q(processed_at__isnull=True, last_error__isnull=False),
    WebhookEventStatus.IGNORED: Q(processed_at__isnull=False, outcome="ignored"),
    WebhookEventStatus.FLAGGED: Q(processed_at__isnull=False, outcome="flagged"),
    WebhookEventStatus.APPLIED: Q(processed_at__isnull=False)
    & ~Q(outcome__in=["ignored", "flagged"]),
}


@dataclass(frozen=True, slots=True)
class WebhookEventFilter:
    provider: PaymentProvider | None = None
    status: WebhookEventStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_webhook_events(
    actor: Actor, flt: WebhookEventFilter, *, first: int | None, after: str | None
) -> Page[WebhookEvent]:
    """The agency's webhook events (those tied to it through their payment), newest first."""
    actor.require(*MANAGERS)
    qs: QuerySet[WebhookEvent] = scoped(WebhookEvent, actor, client_field=None)
    if flt.provider is not None:
        qs = qs.filter(provider=flt.provider)
    if flt.status is not None:
        qs = qs.filter(_STATUS_FILTERS[flt.status])
    if flt.since is not None:
        qs = qs.filter(received_at__gte=flt.since)
    if flt.until is not None:
        qs = qs.filter(received_at__lte=flt.until)
    return await paginate(qs, first=first, after=after, ordering=Ordering("received_at", True))


async def unmatched_webhook_events() -> list[tuple[str, str, int]]:
    """Events no agency can be matched to, by (provider, status): the operations metric."""
    _, rows = await Tortoise.get_connection("default").execute_query(
        """
        SELECT provider, CASE
            WHEN processed_at IS NULL AND last_error IS NOT NULL THEN 'failed'
            WHEN processed_at IS NULL THEN 'unprocessed'
            WHEN outcome = 'ignored' THEN 'ignored'
            WHEN outcome = 'flagged' THEN 'flagged'
            ELSE 'applied' END AS status, COUNT(*) AS n
        FROM webhook_event WHERE agency_id IS NULL
        GROUP BY 1, 2 ORDER BY 1, 2
        """
    )
    return [(str(row["provider"]), str(row["status"]), int(row["n"])) for row in rows]


# --- deliverable access ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeliverableAccess:
    deliverable: Deliverable
    access: deliverable_service.Access


async def deliverable_access(actor: Actor, project_id: uuid.UUID) -> list[DeliverableAccess]:
    """Each uploaded deliverable of a project: may its client open it now, why not, until when.

    NotFoundError for a project the actor may not see.
    """
    actor.require(*MANAGERS)
    project = await project_service.get_project(actor, project_id)
    rows = await Deliverable.filter(
        project_id=project.id, deleted_at__isnull=True, status=DeliverableStatus.READY
    ).order_by("created_at", "id")
    state = await deliverable_service.project_payment_state(project.id)
    return [DeliverableAccess(row, deliverable_service.client_access(row, state)) for row in rows]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def metrics_text() -> str:
    """The operations metrics, in the Prometheus text exposition format."""
    lines = [
        "# HELP settle_webhook_events_unmatched Webhook events no agency can be matched to "
        "(no payment of theirs is known), by provider and status.",
        "# TYPE settle_webhook_events_unmatched gauge",
    ]
    for provider, status, count in await unmatched_webhook_events():
        lines.append(
            f'settle_webhook_events_unmatched{{provider="{_label(provider)}",'
            f'status="{_label(status)}"}} {count}'
        )
    return "\n".join(lines) + "\n"
