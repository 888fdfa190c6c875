"""The reports against an independent computation over thousands of generated rows.

The rows are written in bulk (not through the services: only their columns matter to
the reports), across agencies in three time zones (two with daylight saving time),
currencies, providers, offline methods, refunds, failures and late successes, with
many instants placed on local midnights and on daylight-saving transitions, where
a wrong zone rule would move money into the neighbouring period. The expected
figures are computed here in Python with zoneinfo, row by row.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from settle.core.tenancy import Actor
from settle.models.agency import Agency, Role
from settle.models.client import Client
from settle.models.invoice import Invoice, InvoiceStatus
from settle.models.milestone import Milestone, MilestoneKind
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from settle.models.project import Project
from settle.services import report as report_service
from settle.services.report import GroupBy
from tests.conftest import Backend

P = PaymentStatus

ZONES = ("America/New_York", "Europe/London", "Asia/Kolkata")
CURRENCIES = ("USD", "INR", "EUR")
PAYMENTS_PER_AGENCY = 1500
INVOICES_PER_AGENCY = 400
FIRST_DAY = date(2025, 12, 1)
LAST_DAY = date(2027, 1, 31)
# Instants where the local date or the offset changes: each zone's DST transitions of
# 2026 (UTC), besides every local midnight, which the generator favours.
TRANSITIONS = [
    datetime(2026, 3, 8, 7, tzinfo=UTC),
    datetime(2026, 11, 1, 6, tzinfo=UTC),
    datetime(2026, 3, 29, 1, tzinfo=UTC),
    datetime(2026, 10, 25, 1, tzinfo=UTC),
]


@dataclass
class World:
    """The generated agencies and their rows, as Python objects for the expected figures."""

    agencies: list[Agency] = field(default_factory=list)
    payments: list[Payment] = field(default_factory=list)
    allocations: list[PaymentAllocation] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    milestones: dict[uuid.UUID, Milestone] = field(default_factory=dict)


def _instant(rng: random.Random, zone: ZoneInfo) -> datetime:
    """A random instant of the generated span, often on a local midnight or a transition."""
    pick = rng.random()
    if pick < 0.15:
        base = rng.choice(TRANSITIONS)
        return base + timedelta(seconds=rng.choice([-3601, -1, 0, 1, 3599, 3600]))
    day = FIRST_DAY + timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days + 1))
    if pick < 0.4:
        midnight = datetime.combine(day, datetime.min.time(), zone).astimezone(UTC)
        return midnight + timedelta(seconds=rng.choice([-1, 0, 1]))
    moment = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
        seconds=rng.randrange(86400)
    )
    return moment.replace(microsecond=rng.choice([0, 0, rng.randrange(1_000_000)]))


async def _generate(rng: random.Random) -> World:
    world = World()
    for index, zone_name in enumerate(ZONES):
        zone = ZoneInfo(zone_name)
        agency = await Agency.create(name=f"Agency {index}", timezone=zone_name)
        world.agencies.append(agency)
        clients = [
            Client(agency_id=agency.id, name=f"Client {index}-{n}", currency="USD")
            for n in range(12)
        ]
        await Client.bulk_create(clients)
        projects = [
            Project(agency_id=agency.id, client_id=c.id, name="Site", currency="USD")
            for c in clients
        ]
        await Project.bulk_create(projects)
        milestones = [
            Milestone(
                agency_id=agency.id,
                project_id=p.id,
                client_id=p.client_id,
                title=kind.value,
                kind=kind,
                amount_minor=100_00,
                currency="USD",
            )
            for p in projects
            for kind in MilestoneKind
        ]
        await Milestone.bulk_create(milestones)
        world.milestones.update({m.id: m for m in milestones})
        invoices = []
        for _ in range(INVOICES_PER_AGENCY):
            client = rng.choice(clients)
            issue = FIRST_DAY + timedelta(days=rng.randrange(420))
            total = rng.randrange(1_00, 5_000_00)
            paid = rng.choice([0, 0, total, rng.randrange(total)])
            refunded = rng.choice([0, 0, 0, paid // 3])
            credited = rng.choice([0, 0, 0, (total - paid + refunded) // 2])
            invoices.append(
                Invoice(
                    agency_id=agency.id,
                    client_id=client.id,
                    currency=rng.choice(CURRENCIES),
                    status=rng.choice(list(InvoiceStatus)),
                    number=f"INV-{uuid.uuid4().hex[:10]}",
                    issue_date=issue,
                    due_date=rng.choice([None, issue + timedelta(days=rng.choice([0, 15, 30]))]),
                    total_minor=total,
                    amount_paid_minor=paid,
                    amount_refunded_minor=refunded,
                    amount_credited_minor=credited,
                )
            )
        await Invoice.bulk_create(invoices)
        world.invoices += invoices
        payments, allocations, refunds = [], [], []
        for _ in range(PAYMENTS_PER_AGENCY):
            client = rng.choice(clients)
            currency = rng.choice(CURRENCIES)
            provider = rng.choice(list(PaymentProvider))
            status = rng.choice(
                [
                    PaymentStatus.SUCCEEDED,
                    PaymentStatus.SUCCEEDED,
                    PaymentStatus.PARTIALLY_REFUNDED,
                    PaymentStatus.REFUNDED,
                    PaymentStatus.FAILED,
                    PaymentStatus.CANCELLED,
                    PaymentStatus.PENDING,
                    PaymentStatus.SUPERSEDED,
                ]
            )
            amount = rng.randrange(50, 2_000_000)
            created = _instant(rng, zone)
            succeeded_at = failed_at = None
            if status in (P.SUCCEEDED, P.PARTIALLY_REFUNDED, P.REFUNDED):
                succeeded_at = created + timedelta(seconds=rng.choice([0, 60, 86400, 200_000]))
                if rng.random() < 0.1:  # a late success after a failure
                    failed_at = created
            elif status in (P.FAILED, P.CANCELLED):
                failed_at = created + timedelta(seconds=rng.choice([0, 30, 90_000]))
            payment = Payment(
                agency_id=agency.id,
                client_id=client.id,
                provider=provider,
                status=status,
                amount_minor=amount,
                currency=currency,
                method=rng.choice(list(OfflineMethod))
                if provider is PaymentProvider.OFFLINE
                else None,
                succeeded_at=succeeded_at,
                failed_at=failed_at,
            )
            payments.append(payment)
            same_currency = [i for i in invoices if i.currency == currency] or invoices
            shares = [amount] if rng.random() < 0.7 else [amount // 2, amount - amount // 2]
            for share in shares:
                milestone = rng.choice([None, *milestones])
                allocations.append(
                    PaymentAllocation(
                        agency_id=agency.id,
                        payment_id=payment.id,
                        invoice_id=rng.choice(same_currency).id,
                        milestone_id=milestone.id if milestone else None,
                        amount_minor=share,
                    )
                )
            if succeeded_at is not None and status is not P.SUCCEEDED:
                for _ in range(rng.choice([1, 2])):
                    refunds.append(
                        Refund(
                            agency_id=agency.id,
                            payment_id=payment.id,
                            amount_minor=rng.randrange(1, amount + 1),
                            currency=currency,
                            reason="Generated",
                            status=rng.choice(
                                [RefundStatus.SUCCEEDED] * 3
                                + [RefundStatus.PENDING, RefundStatus.FAILED]
                            ),
                            settled_at=succeeded_at
                            + timedelta(seconds=rng.choice([1, 3600, 86400 * 3])),
                        )
                    )
        await Payment.bulk_create(payments, batch_size=500)
        await PaymentAllocation.bulk_create(allocations, batch_size=500)
        await Refund.bulk_create(refunds, batch_size=500)
        world.payments += payments
        world.allocations += allocations
        world.refunds += refunds
    return world


def _owner(agency: Agency) -> Actor:
    return Actor(uuid.uuid4(), agency.id, Role.OWNER, None, "Owner", "owner@example.com")


@pytest.fixture
async def world(db: Backend) -> World:
    return await _generate(random.Random(14))


# --- the expected figures --------------------------------------------------------------


def _start(day: date, group_by: GroupBy) -> date:
    if group_by is GroupBy.DAY:
        return day
    if group_by is GroupBy.WEEK:
        return date.fromisocalendar(*day.isocalendar()[:2], 1)
    return date(day.year, day.month, 1)


def _round(numerator: int, denominator: int, places: str) -> str | None:
    if not denominator:
        return None
    return str((Decimal(numerator) / denominator).quantize(Decimal(places), ROUND_HALF_UP))


def _blank() -> dict[str, int]:
    return defaultdict(int)


def expected_analytics(
    world: World, agency: Agency, currency: str, start: date, end: date, group_by: GroupBy
) -> dict[str, Any]:
    zone = ZoneInfo(agency.timezone)

    def local(at: datetime | None) -> date | None:
        if at is None:
            return None
        day = at.astimezone(zone).date()
        return day if start <= day <= end else None

    figures: dict[str, dict[Any, dict[str, int]]] = {
        dim: defaultdict(_blank) for dim in ("period", "provider", "method", "total")
    }
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {"collected": 0, "payments": set()})
    payments = {p.id: p for p in world.payments}
    invoices = {i.id: i for i in world.invoices}

    def add(payment: Payment, day: date, name: str, value: int) -> None:
        keys = {
            "period": _start(day, group_by),
            "provider": payment.provider.value,
            "method": payment.method.value if payment.method else "gateway",
            "total": None,
        }
        for dim, key in keys.items():
            figures[dim][key][name] += value

    for p in world.payments:
        if p.agency_id != agency.id or p.currency != currency:
            continue
        day = local(p.succeeded_at)
        if day is not None:
            add(p, day, "collected", p.amount_minor)
            add(p, day, "payments", 1)
        failed_day = local(p.failed_at)
        if failed_day is not None and p.status in (PaymentStatus.FAILED, PaymentStatus.CANCELLED):
            add(p, failed_day, "failed", 1)
    for r in world.refunds:
        p = payments[r.payment_id]
        if p.agency_id != agency.id or r.currency != currency:
            continue
        day = local(r.settled_at)
        if day is not None and r.status is RefundStatus.SUCCEEDED:
            add(p, day, "refunded", r.amount_minor)
    for a in world.allocations:
        p = payments[a.payment_id]
        if p.agency_id != agency.id or p.currency != currency:
            continue
        day = local(p.succeeded_at)
        if day is None:
            continue
        issue = invoices[a.invoice_id].issue_date
        assert issue is not None
        add(p, day, "days_total", (day - issue).days)
        add(p, day, "days_count", 1)
        kind = world.milestones[a.milestone_id].kind.value if a.milestone_id else "invoice"
        kinds[kind]["collected"] += a.amount_minor
        kinds[kind]["payments"].add(p.id)

    def shown(found: dict[str, int]) -> dict[str, Any]:
        attempted = found["payments"] + found["failed"]
        return {
            "collected": found["collected"],
            "refunded": found["refunded"],
            "net": found["collected"] - found["refunded"],
            "payments": found["payments"],
            "failed": found["failed"],
            "success_rate": _round(found["payments"], attempted, "0.0001"),
            "average_days": _round(found["days_total"], found["days_count"], "0.01"),
        }

    periods = []
    first = _start(start, group_by)
    while first <= end:
        periods.append((first, shown(figures["period"].get(first, _blank()))))
        first = _start(
            first + timedelta(days={GroupBy.DAY: 1, GroupBy.WEEK: 7, GroupBy.MONTH: 32}[group_by]),
            group_by,
        )
    return {
        "periods": periods,
        "totals": shown(figures["total"].get(None, _blank())),
        "by_provider": {k: shown(v) for k, v in figures["provider"].items()},
        "by_method": {k: shown(v) for k, v in figures["method"].items()},
        "by_kind": {k: (v["collected"], len(v["payments"])) for k, v in kinds.items()},
    }


def actual_figures(found: report_service.Figures) -> dict[str, Any]:
    return {
        "collected": found.collected_minor,
        "refunded": found.refunded_minor,
        "net": found.net_minor,
        "payments": found.payments,
        "failed": found.failed,
        "success_rate": None if found.success_rate is None else str(found.success_rate),
        "average_days": (
            None if found.average_days_to_pay is None else str(found.average_days_to_pay)
        ),
    }


CASES = [
    (GroupBy.MONTH, date(2025, 12, 15), date(2027, 1, 20)),
    (GroupBy.WEEK, date(2026, 2, 25), date(2026, 11, 12)),
    (GroupBy.DAY, date(2026, 3, 1), date(2026, 4, 5)),
    (GroupBy.DAY, date(2026, 10, 20), date(2026, 11, 5)),
]


async def test_payment_analytics_match_an_independent_computation(
    db: Backend, world: World
) -> None:
    # given thousands of payments, refunds and allocations in three zones and currencies
    assert len(world.payments) == len(ZONES) * PAYMENTS_PER_AGENCY
    checked = 0
    for agency in world.agencies:
        for currency in CURRENCIES:
            for group_by, start, end in CASES:
                # when the report is asked
                report = await report_service.payment_analytics(
                    _owner(agency), start=start, end=end, currency=currency, group_by=group_by
                )
                # then every figure is the one computed here
                expected = expected_analytics(world, agency, currency, start, end, group_by)
                assert report.timezone == agency.timezone
                assert [(max(first, start), figures) for first, figures in expected["periods"]] == [
                    (p.start, actual_figures(p.figures)) for p in report.periods
                ]
                assert actual_figures(report.totals) == expected["totals"]
                assert {k: actual_figures(v) for k, v in report.by_provider.items()} == expected[
                    "by_provider"
                ]
                assert {k: actual_figures(v) for k, v in report.by_method.items()} == expected[
                    "by_method"
                ]
                assert {
                    k.kind: (k.collected_minor, k.payments) for k in report.by_kind
                } == expected["by_kind"]
                checked += 1
    # and the data exercised what it was meant to
    assert checked == len(ZONES) * len(CURRENCIES) * len(CASES)


def expected_aging(
    world: World, agency: Agency, currency: str, as_of: date
) -> tuple[dict[uuid.UUID, list[int]], list[int]]:
    open_statuses = {
        InvoiceStatus.SENT,
        InvoiceStatus.VIEWED,
        InvoiceStatus.PARTIALLY_PAID,
        InvoiceStatus.OVERDUE,
    }
    clients: dict[uuid.UUID, list[int]] = defaultdict(lambda: [0] * 6)
    totals = [0] * 6
    for i in world.invoices:
        if i.agency_id != agency.id or i.currency != currency or i.status not in open_statuses:
            continue
        assert i.issue_date is not None
        if i.issue_date > as_of:
            continue
        due = i.total_minor - (i.amount_paid_minor - i.amount_refunded_minor)
        due -= i.amount_credited_minor
        if due <= 0:
            continue
        late = (as_of - i.due_date).days if i.due_date else 0
        bucket = 1 + (late > 0) + (late > 30) + (late > 60) + (late > 90) if late > 0 else 1
        for row in (clients[i.client_id], totals):
            row[0] += 1
            row[bucket] += due
    return dict(clients), totals


async def test_receivables_aging_matches_an_independent_computation(
    db: Backend, world: World
) -> None:
    for agency in world.agencies:
        for currency in CURRENCIES:
            for as_of in (date(2026, 1, 31), date(2026, 7, 4), date(2027, 3, 1)):
                # when the aging is asked
                report = await report_service.receivables_aging(
                    _owner(agency), currency=currency, as_of=as_of
                )
                # then each client's buckets and the totals are the ones computed here
                clients, totals = expected_aging(world, agency, currency, as_of)

                def row(found: report_service.AgingRow) -> list[int]:
                    return [
                        found.invoices,
                        found.current,
                        found.days_1_30,
                        found.days_31_60,
                        found.days_61_90,
                        found.over_90,
                    ]

                assert {r.client_id: row(r) for r in report.clients} == clients
                assert row(report.totals) == totals
                names = [r.client_name for r in report.clients]
                assert names == sorted(names)
