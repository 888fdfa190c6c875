"""The invoice service: numbering, races, where invoices come from, the lifecycle, tenancy."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from settle.core import clock
from settle.core.errors import (
    AppError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.core.outbox import relay_later, transaction
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.invoice import (
    Invoice,
    InvoiceCounter,
    InvoiceDelivery,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceSource,
    InvoiceStatus,
)
from settle.models.milestone import Milestone, MilestoneStatus
from settle.models.outbox import OutboxMessage
from settle.models.project import Project, Task, TimeEntry
from settle.services import agency as agency_service
from settle.services import invoice as invoice_service
from settle.services import project as project_service
from settle.services import settlement
from settle.services import task as task_service
from settle.services import time_entry as time_entry_service
from settle.services.invoice import (
    RENDER_PDF_JOB,
    SEND_EMAIL_JOB,
    TRANSITIONS,
    InvoiceFilter,
    InvoiceNotEditableError,
    TimeGrouping,
    check_number_pattern,
    format_number,
)
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import (
    DEFAULT_INVOICE_LINE,
    Account,
    create_client,
    create_contact,
    create_invoice,
    create_project,
    create_user,
    issue_invoice,
)

T = TypeVar("T")
S = InvoiceStatus

NOW = datetime(2026, 3, 20, 9, 30, tzinfo=UTC)
TODAY = NOW.date()
MARCH = (date(2026, 3, 1), date(2026, 3, 31))
INVOICE_TABLES = (Invoice, InvoiceLine, InvoiceCounter, InvoiceDelivery, Milestone, TimeEntry)


class TickingClock:
    """The clock at ``now``, one millisecond later at each reading: events keep their order."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        self.now += timedelta(milliseconds=1)
        return self.now


@pytest.fixture(autouse=True)
def now() -> Iterator[TickingClock]:
    current = TickingClock(NOW)
    clock.set_clock(current)
    yield current
    clock.set_clock(None)


@pytest.fixture(autouse=True)
def jobs_held() -> Iterator[None]:
    """Jobs stay in the outbox: these tests check what the service asks for (render the PDF,
    send the email), while the workers that do it, and their timeline events, are tested in
    tests/tasks/test_invoice.py."""
    with relay_later():
        yield


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite runs one transaction at a time; the race needs PostgreSQL")


async def committed(call: Awaitable[T]) -> T:
    """One service call in its own transaction, as a request makes it."""
    async with transaction():
        return await call


async def outcome(call: Awaitable[T]) -> T | AppError:
    """The call's result, or the domain error it raised (its transaction rolled back)."""
    try:
        return await committed(call)
    except AppError as exc:
        return exc


async def timeline(invoice: Invoice) -> list[tuple[str, uuid.UUID | None]]:
    """The invoice's timeline events in order: (verb, actor id)."""
    rows = await ActivityEvent.filter(entity_type="invoice", entity_id=invoice.id).order_by(
        "created_at"
    )
    return [(row.verb, row.actor_id) for row in rows]


async def lines_of(invoice: Invoice) -> list[tuple[str, Decimal, int, int]]:
    """(description, quantity, unit price, amount) of each line, in order."""
    return [
        (line.description, line.quantity, line.unit_price_minor, line.amount_minor)
        for line in await invoice_service.invoice_lines(invoice)
    ]


# --- numbering -------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["INV-{YYYY}-{SEQ:4}", "{SEQ}", "A/{YY}/{MM}/{SEQ:9}", "#{SEQ:1}_x.y", "2026-{SEQ:3}"],
)
def test_number_pattern_accepted(pattern: str) -> None:
    assert check_number_pattern(f"  {pattern} ") == pattern


@pytest.mark.parametrize(
    ("pattern", "code"),
    [
        (None, "REQUIRED"),
        ("   ", "REQUIRED"),
        ("INV-{YYYY}", "INVALID_PATTERN"),  # no sequence
        ("{SEQ}-{SEQ:4}", "INVALID_PATTERN"),  # two sequences
        ("{YYYY}{SEQ}{SEQ}", "INVALID_PATTERN"),
        ("INV {SEQ}", "INVALID_PATTERN"),  # a space
        ("INV-€{SEQ}", "INVALID_PATTERN"),
        ("INV-{DD}-{SEQ}", "INVALID_PATTERN"),  # not a token
        ("{seq}", "INVALID_PATTERN"),
        ("INV-{SEQ:0}", "INVALID_PATTERN"),  # padding is 1 to 9
        ("INV-{SEQ:10}", "INVALID_PATTERN"),
        ("INV-{SEQ", "INVALID_PATTERN"),
        ("X" * 56 + "{SEQ}", "TOO_LONG"),
    ],
)
def test_number_pattern_refused(pattern: str | None, code: str) -> None:
    with pytest.raises(ValidationError) as refused:
        check_number_pattern(pattern)
    assert (refused.value.field, refused.value.code) == ("invoiceNumberPattern", code)


@pytest.mark.parametrize(
    ("pattern", "issued_on", "sequence", "number"),
    [
        ("INV-{YYYY}-{SEQ:4}", date(2026, 3, 7), 7, "INV-2026-0007"),
        ("INV-{YYYY}-{SEQ:4}", date(2026, 3, 7), 12_345, "INV-2026-12345"),
        ("INV-{YYYY}-{SEQ:4}", date(2026, 3, 7), None, "INV-2026-{SEQ}"),
        ("{YY}{MM}-{SEQ}", date(2026, 11, 30), 42, "2611-42"),
        ("{YY}/{MM}/{SEQ:3}", date(2009, 1, 5), 1, "09/01/001"),
        ("{YY}/{MM}/{SEQ:3}", date(2009, 1, 5), None, "09/01/{SEQ}"),
        ("N-{SEQ:2}", date(2026, 3, 7), None, "N-{SEQ}"),
    ],
)
def test_format_number(pattern: str, issued_on: date, sequence: int | None, number: str) -> None:
    # given a pattern and an issue date; when a number (or, without a sequence, the
    # counter's scope) is formatted; then the tokens are filled in
    assert format_number(pattern, issued_on, sequence) == number


async def test_each_agency_numbers_its_own_invoices(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a client in each of two agencies
    ours = await create_client(owner)
    theirs = await create_client(rival)
    # when both agencies issue invoices
    first = await issue_invoice(owner, await create_invoice(owner, ours))
    rival_first = await issue_invoice(rival, await create_invoice(rival, theirs))
    second = await issue_invoice(owner, await create_invoice(owner, ours))
    # then each agency's sequence starts at 0001
    assert [first.number, rival_first.number, second.number] == [
        "INV-2026-0001",
        "INV-2026-0001",
        "INV-2026-0002",
    ]
    counters = await InvoiceCounter.all().values_list("agency_id", "scope", "last_value")
    assert sorted(counters, key=lambda row: row[2]) == [
        (rival.agency_id, "INV-2026-{SEQ}", 1),
        (owner.agency_id, "INV-2026-{SEQ}", 2),
    ]


async def test_a_new_year_starts_a_yearly_sequence_again(
    db: Backend, owner: Account, now: TickingClock
) -> None:
    # given two invoices issued on New Year's Eve
    client = await create_client(owner)
    now.now = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)
    numbers = [(await issue_invoice(owner, await create_invoice(owner, client))).number]
    numbers.append((await issue_invoice(owner, await create_invoice(owner, client))).number)
    # when the next is issued on New Year's Day
    now.now = datetime(2027, 1, 1, 0, 0, tzinfo=UTC)
    numbers.append((await issue_invoice(owner, await create_invoice(owner, client))).number)
    # then the year's sequence started again
    assert numbers == ["INV-2026-0001", "INV-2026-0002", "INV-2027-0001"]


async def test_a_pattern_without_the_year_never_restarts(
    db: Backend, owner: Account, now: TickingClock
) -> None:
    # given an agency numbering without the year, and an invoice of December
    await committed(
        agency_service.update_agency(owner.actor, {"invoice_number_pattern": "N-{SEQ:3}"})
    )
    client = await create_client(owner)
    now.now = datetime(2026, 12, 31, 12, 0, tzinfo=UTC)
    december = await issue_invoice(owner, await create_invoice(owner, client))
    # when one is issued in January
    now.now = datetime(2027, 1, 2, 12, 0, tzinfo=UTC)
    january = await issue_invoice(owner, await create_invoice(owner, client))
    # then the sequence went on
    assert (december.number, january.number) == ("N-001", "N-002")


class Rollback(Exception):
    """Raised inside a transaction to roll it back, as a failure after finalizing would."""


async def test_a_rolled_back_finalization_uses_no_number(db: Backend, owner: Account) -> None:
    # given two drafts
    client = await create_client(owner)
    first = await create_invoice(owner, client)
    second = await create_invoice(owner, client)
    seen: list[str | None] = []

    async def finalize_then_fail() -> None:
        async with transaction():
            seen.append((await invoice_service.finalize_invoice(owner.actor, first.id)).number)
            raise Rollback

    # when the first is finalized in a transaction that then fails
    with pytest.raises(Rollback):
        await finalize_then_fail()
    assert seen == ["INV-2026-0001"]
    # then the first is still a draft without a number, and nobody heard of it
    row = await Invoice.get(id=first.id)
    assert (row.status, row.number, row.issue_date) == (S.DRAFT, None, None)
    assert ("finalized", owner.user.id) not in await timeline(first)
    assert not await OutboxMessage.filter(topic=RENDER_PDF_JOB).exists()
    # and the next finalization gets the number the rolled-back one would have had
    assert (await issue_invoice(owner, second)).number == "INV-2026-0001"
    assert (await issue_invoice(owner, first)).number == "INV-2026-0002"
    jobs = await OutboxMessage.filter(topic=RENDER_PDF_JOB).order_by("id")
    assert [job.payload["args"] for job in jobs] == [[str(second.id)], [str(first.id)]]


async def test_fifty_invoices_finalized_at_once_are_numbered_consecutively(
    db: Backend, owner: Account
) -> None:
    require_postgres(db)
    # given fifty drafts of an agency that has issued nothing yet (no counter row)
    client = await create_client(owner)
    drafts = await asyncio.gather(*(create_invoice(owner, client) for _ in range(50)))
    # when all fifty are finalized at once, each in its own transaction
    results = await asyncio.gather(
        *(outcome(invoice_service.finalize_invoice(owner.actor, d.id)) for d in drafts)
    )
    # then every one was issued
    assert all(isinstance(result, Invoice) for result in results), results
    # and the numbers are exactly 0001 to 0050: unique, consecutive, without gaps
    rows = await Invoice.filter(agency_id=owner.agency_id)
    assert sorted(row.number or "" for row in rows) == [f"INV-2026-{n:04d}" for n in range(1, 51)]
    # and each invoice kept the number its own transaction saw
    assert {r.id: r.number for r in results if isinstance(r, Invoice)} == {
        row.id: row.number for row in rows
    }
    assert await InvoiceCounter.filter(agency_id=owner.agency_id).values_list(
        "scope", "last_value"
    ) == [("INV-2026-{SEQ}", 50)]


# --- invoices from time ----------------------------------------------------------------


@dataclass
class Timesheet:
    """A month of a project's time: what an invoice of March bills, and what it leaves."""

    project: Project
    billed: list[TimeEntry]
    unbilled: list[TimeEntry] = field(default_factory=list)


async def _task(owner: Account, project: Project, title: str) -> Task:
    return await committed(task_service.create_task(owner.actor, project.id, {"title": title}))


async def timesheet(owner: Account) -> Timesheet:
    client = await create_client(owner, name="Acme")
    project = await create_project(owner, client, hourly_rate="100.00")
    design = await _task(owner, project, "Design")
    build = await _task(owner, project, "Build")
    member = await create_user(owner, role=Role.MEMBER, name="Mo Member")

    async def log(
        account: Account, hours: str, day: date, task: Task | None = None, **kw: Any
    ) -> TimeEntry:
        values = {"hours": hours, "work_date": day, "task_id": task.id if task else None, **kw}
        return await committed(time_entry_service.log_time(account.actor, project.id, values))

    sheet = Timesheet(
        project,
        [
            await log(owner, "1.5", date(2026, 3, 1), design),
            await log(member, "0.25", date(2026, 3, 3), design),
            await log(owner, "2", date(2026, 3, 4), build),
            await log(member, "1", date(2026, 3, 5)),
        ],
    )
    # The rate goes up: time logged from now on is billed at 150.00, on lines of its own.
    await committed(
        project_service.update_project(owner.actor, project.id, {"hourly_rate": "150.00"})
    )
    sheet.billed.append(await log(owner, "0.75", date(2026, 3, 31), design))
    sheet.unbilled += [
        await log(owner, "3", date(2026, 3, 6), billable=False),
        await log(owner, "4", date(2026, 2, 28)),
        await log(owner, "5", date(2026, 4, 1)),
    ]
    # Time logged before the project had a rate has none to bill at.
    no_rate = await log(member, "6", date(2026, 3, 7))
    await TimeEntry.filter(id=no_rate.id).update(hourly_rate_minor=None)
    # A running timer (today, in March) has no time to bill yet.
    running = await committed(time_entry_service.start_timer(member.actor, project.id, None, None))
    other = await create_project(owner, client, name="Other", hourly_rate="100.00")
    elsewhere = await committed(
        time_entry_service.log_time(
            owner.actor, other.id, {"hours": "1", "work_date": date(2026, 3, 2)}
        )
    )
    sheet.unbilled += [no_rate, running, elsewhere]
    return sheet


def _from_time(account: Account, project: Project, group_by: TimeGrouping) -> Awaitable[Invoice]:
    return invoice_service.create_invoice_from_time_entries(
        account.actor, project.id, MARCH[0], MARCH[1], group_by
    )


async def _billed_to(entries: list[TimeEntry]) -> list[uuid.UUID | None]:
    rows = {row.id: row for row in await TimeEntry.filter(id__in=[e.id for e in entries])}
    return [rows[entry.id].invoice_line_id for entry in entries]


# The expected lines of each grouping: (description, hours, rate, amount, indexes of the
# billed entries on the line). A line names the days its time was worked, not the range asked.
GROUPED_LINES: dict[TimeGrouping, list[tuple[str, str, int, int, list[int]]]] = {
    TimeGrouping.TASK: [
        ("Design: time, 2026-03-01 to 2026-03-03", "1.75", 10_000, 17_500, [0, 1]),
        ("Build: time, 2026-03-04", "2.00", 10_000, 20_000, [2]),
        ("Other work: time, 2026-03-05", "1.00", 10_000, 10_000, [3]),
        ("Design: time, 2026-03-31", "0.75", 15_000, 11_250, [4]),
    ],
    TimeGrouping.USER: [
        ("Olive Owner: time, 2026-03-01 to 2026-03-04", "3.50", 10_000, 35_000, [0, 2]),
        ("Mo Member: time, 2026-03-03 to 2026-03-05", "1.25", 10_000, 12_500, [1, 3]),
        ("Olive Owner: time, 2026-03-31", "0.75", 15_000, 11_250, [4]),
    ],
    TimeGrouping.SINGLE_LINE: [
        ("Website: time, 2026-03-01 to 2026-03-05", "4.75", 10_000, 47_500, [0, 1, 2, 3]),
        ("Website: time, 2026-03-31", "0.75", 15_000, 11_250, [4]),
    ],
}


@pytest.mark.parametrize("group_by", list(TimeGrouping))
async def test_invoice_from_time_bills_the_uninvoiced_billable_time_of_the_range(
    db: Backend, owner: Account, group_by: TimeGrouping
) -> None:
    # given a month of time: billable, not, outside the range, without a rate, running
    sheet = await timesheet(owner)
    # when March is invoiced
    invoice = await committed(_from_time(owner, sheet.project, group_by))
    # then a draft of the project bills each group's hours at its rate
    expected = GROUPED_LINES[group_by]
    assert (invoice.status, invoice.source, invoice.project_id, invoice.currency) == (
        S.DRAFT,
        InvoiceSource.TIME_ENTRIES,
        sheet.project.id,
        "USD",
    )
    assert await lines_of(invoice) == [
        (description, Decimal(hours), rate, amount)
        for description, hours, rate, amount, _ in expected
    ]
    assert invoice.total_minor == sum(amount for _, _, _, amount, _ in expected) == 58_750
    lines = await invoice_service.invoice_lines(invoice)
    assert {line.kind for line in lines} == {InvoiceLineKind.TIME}
    # and each billed entry points at its line, while the rest stay unbilled
    line_of_entry = {entry: n for n, (*_, entries) in enumerate(expected) for entry in entries}
    assert await _billed_to(sheet.billed) == [
        lines[line_of_entry[index]].id for index in range(len(sheet.billed))
    ]
    assert await _billed_to(sheet.unbilled) == [None] * len(sheet.unbilled)


async def test_time_already_invoiced_is_not_billed_again(db: Backend, owner: Account) -> None:
    # given March invoiced once
    sheet = await timesheet(owner)
    await committed(_from_time(owner, sheet.project, TimeGrouping.TASK))
    before = await row_counts(*INVOICE_TABLES)
    # when March is invoiced again
    with pytest.raises(ValidationError) as refused:
        await committed(_from_time(owner, sheet.project, TimeGrouping.SINGLE_LINE))
    # then there is nothing left to bill, and nothing was written
    assert (refused.value.field, refused.value.code) == ("from", "NOTHING_TO_BILL")
    assert await row_counts(*INVOICE_TABLES) == before


async def test_racing_invoices_from_time_bill_each_entry_once(db: Backend, owner: Account) -> None:
    require_postgres(db)
    # given a month of time
    sheet = await timesheet(owner)
    # when two requests invoice it at the same moment
    results = await asyncio.gather(
        outcome(_from_time(owner, sheet.project, TimeGrouping.TASK)),
        outcome(_from_time(owner, sheet.project, TimeGrouping.SINGLE_LINE)),
    )
    # then one made the invoice and the other found nothing left (or a conflict)
    invoices = [r for r in results if isinstance(r, Invoice)]
    refused = [r for r in results if not isinstance(r, Invoice)]
    assert len(invoices) == len(refused) == 1
    assert isinstance(refused[0], ValidationError | ConflictError)
    if isinstance(refused[0], ValidationError):
        assert refused[0].code == "NOTHING_TO_BILL"
    # and the database holds that one invoice, with every entry billed once, to it
    winner = invoices[0]
    assert await Invoice.all().count() == 1
    lines = await invoice_service.invoice_lines(winner)
    assert await InvoiceLine.all().count() == len(lines)
    assert set(await _billed_to(sheet.billed)) == {line.id for line in lines}
    assert await _billed_to(sheet.unbilled) == [None] * len(sheet.unbilled)


async def test_deleting_the_draft_frees_its_time(db: Backend, owner: Account) -> None:
    # given March invoiced in a draft
    sheet = await timesheet(owner)
    draft = await committed(_from_time(owner, sheet.project, TimeGrouping.TASK))
    # when the draft is deleted
    await committed(invoice_service.delete_invoice(owner.actor, draft.id))
    # then its time is unbilled, and can be invoiced again
    assert await _billed_to(sheet.billed) == [None] * len(sheet.billed)
    again = await committed(_from_time(owner, sheet.project, TimeGrouping.SINGLE_LINE))
    assert [line[1:] for line in await lines_of(again)] == [
        (Decimal("4.75"), 10_000, 47_500),
        (Decimal("0.75"), 15_000, 11_250),
    ]
    assert await Invoice.filter(id=draft.id).count() == 0


async def test_voiding_the_invoice_frees_its_time(db: Backend, owner: Account) -> None:
    # given March invoiced and issued
    sheet = await timesheet(owner)
    issued = await issue_invoice(
        owner, await committed(_from_time(owner, sheet.project, TimeGrouping.TASK))
    )
    # when the invoice is voided
    await committed(invoice_service.void_invoice(owner.actor, issued.id, "Wrong rate"))
    # then its time is unbilled and a new invoice bills it again, while the void one keeps
    # its lines as issued
    assert await _billed_to(sheet.billed) == [None] * len(sheet.billed)
    again = await committed(_from_time(owner, sheet.project, TimeGrouping.TASK))
    task_lines = [line[:4] for line in GROUPED_LINES[TimeGrouping.TASK]]
    assert (
        await lines_of(issued)
        == await lines_of(again)
        == [
            (description, Decimal(hours), rate, amount)
            for description, hours, rate, amount in task_lines
        ]
    )
    assert set(await _billed_to(sheet.billed)) == {
        line.id for line in await invoice_service.invoice_lines(again)
    }


async def test_invoice_from_time_refuses_a_reversed_range(db: Backend, owner: Account) -> None:
    sheet = await timesheet(owner)
    with pytest.raises(ValidationError) as refused:
        await committed(
            invoice_service.create_invoice_from_time_entries(
                owner.actor, sheet.project.id, MARCH[1], MARCH[0], TimeGrouping.TASK
            )
        )
    assert (refused.value.field, refused.value.code) == ("to", "OUT_OF_RANGE")


# --- invoices from milestones ------------------------------------------------------------


async def milestone_of(
    project: Project,
    title: str = "Design",
    *,
    amount_minor: int = 50_000,
    status: MilestoneStatus = MilestoneStatus.APPROVED,
) -> Milestone:
    """A milestone row (approving through the service would start the automatic invoice)."""
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        currency=project.currency,
        title=title,
        amount_minor=amount_minor,
        status=status,
    )


def _from_milestones(account: Account, *milestones: Milestone) -> Awaitable[Invoice]:
    return invoice_service.create_invoice_from_milestones(account.actor, [m.id for m in milestones])


async def test_invoice_from_milestones_has_a_line_for_each(db: Backend, owner: Account) -> None:
    # given two approved milestones of a project
    client = await create_client(owner)
    project = await create_project(owner, client)
    design = await milestone_of(project, "Design", amount_minor=50_000)
    build = await milestone_of(project, "Build", amount_minor=123_456)
    # when they are invoiced together (one named twice)
    invoice = await committed(_from_milestones(owner, build, design, build))
    # then a draft of the project has one line per milestone, in the order given
    assert (invoice.status, invoice.source, invoice.project_id, invoice.client_id) == (
        S.DRAFT,
        InvoiceSource.MILESTONES,
        project.id,
        client.id,
    )
    assert await lines_of(invoice) == [
        ("Build", Decimal(1), 123_456, 123_456),
        ("Design", Decimal(1), 50_000, 50_000),
    ]
    lines = await invoice_service.invoice_lines(invoice)
    assert [(line.kind, line.milestone_id) for line in lines] == [
        (InvoiceLineKind.MILESTONE, build.id),
        (InvoiceLineKind.MILESTONE, design.id),
    ]
    assert invoice.total_minor == 173_456
    # and both milestones are billed by it
    rows = await Milestone.filter(id__in=[design.id, build.id]).values_list("invoice_id", flat=True)
    assert list(rows) == [invoice.id, invoice.id]


async def test_milestones_of_two_projects_make_an_invoice_without_a_project(
    db: Backend, owner: Account
) -> None:
    client = await create_client(owner)
    first = await milestone_of(await create_project(owner, client, name="One"))
    second = await milestone_of(await create_project(owner, client, name="Two"))
    invoice = await committed(_from_milestones(owner, first, second))
    assert (invoice.project_id, invoice.client_id, invoice.currency) == (None, client.id, "USD")


async def test_only_approved_milestones_are_invoiced(db: Backend, owner: Account) -> None:
    # given an approved milestone, and one in each other status
    project = await create_project(owner, await create_client(owner))
    approved = await milestone_of(project, "Approved")
    others = {
        status: await milestone_of(project, status.value, status=status)
        for status in MilestoneStatus
        if status != MilestoneStatus.APPROVED
    }
    before = await row_counts(*INVOICE_TABLES)
    # when the approved one is invoiced with each of the others
    refused = {
        status: await outcome(_from_milestones(owner, approved, other))
        for status, other in others.items()
    }
    # then each request is refused, and nothing was written
    assert {
        status: (type(error).__name__, getattr(error, "field", None), error.code)
        for status, error in refused.items()
        if isinstance(error, AppError)
    } == dict.fromkeys(others, ("ValidationError", "milestoneIds", "NOT_BILLABLE"))
    assert await row_counts(*INVOICE_TABLES) == before


async def test_milestones_of_two_clients_or_currencies_are_refused(
    db: Backend, owner: Account
) -> None:
    # given milestones of two clients, and of one client in two currencies
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    of_acme = await milestone_of(await create_project(owner, acme))
    of_blue = await milestone_of(await create_project(owner, blue))
    in_rupees = await milestone_of(await create_project(owner, acme, currency="INR"))
    before = await row_counts(*INVOICE_TABLES)
    # when each pair is invoiced together; then both are refused as a mismatch
    for pair in ((of_acme, of_blue), (of_acme, in_rupees)):
        with pytest.raises(ValidationError) as refused:
            await committed(_from_milestones(owner, *pair))
        assert (refused.value.field, refused.value.code) == ("milestoneIds", "MISMATCH")
    assert await row_counts(*INVOICE_TABLES) == before


async def test_a_milestone_on_a_live_invoice_is_not_invoiced_again(
    db: Backend, owner: Account
) -> None:
    # given a milestone on an issued invoice
    project = await create_project(owner, await create_client(owner))
    milestone = await milestone_of(project)
    issued = await issue_invoice(owner, await committed(_from_milestones(owner, milestone)))
    # when it is invoiced again; then that conflicts
    with pytest.raises(ConflictError):
        await committed(_from_milestones(owner, milestone))
    # and once that invoice is voided, the milestone is free to invoice again
    await committed(invoice_service.void_invoice(owner.actor, issued.id, "Wrong amount"))
    again = await committed(_from_milestones(owner, milestone))
    assert (await Milestone.get(id=milestone.id)).invoice_id == again.id
    # as it is when a draft billing it is deleted
    await committed(invoice_service.delete_invoice(owner.actor, again.id))
    assert (await Milestone.get(id=milestone.id)).invoice_id is None


async def test_racing_invoices_for_one_milestone_make_one(db: Backend, owner: Account) -> None:
    require_postgres(db)
    # given an approved milestone
    milestone = await milestone_of(await create_project(owner, await create_client(owner)))
    # when two requests invoice it at once
    results = await asyncio.gather(
        outcome(_from_milestones(owner, milestone)), outcome(_from_milestones(owner, milestone))
    )
    # then one invoice was made and the other request conflicted
    invoices = [r for r in results if isinstance(r, Invoice)]
    assert len(invoices) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 1
    assert await Invoice.all().count() == 1
    assert await InvoiceLine.all().count() == 1
    assert (await Milestone.get(id=milestone.id)).invoice_id == invoices[0].id


# --- the automatic invoice of an approved milestone ---------------------------------------------


async def test_generate_for_milestone_issues_one_invoice(db: Backend, owner: Account) -> None:
    # given an approved milestone whose earlier attempt failed
    client = await create_client(owner)
    project = await create_project(owner, client)
    milestone = await milestone_of(project, "Launch", amount_minor=250_000)
    await committed(invoice_service.record_milestone_invoice_error(milestone.id, "SMTP down"))
    assert (await Milestone.get(id=milestone.id)).invoice_error == "SMTP down"
    # when the worker generates its invoice
    invoice = await committed(invoice_service.generate_for_milestone(milestone.id))
    # then one invoice is issued, numbered, with the milestone's amount on one line
    assert invoice is not None
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.source, row.number, row.issue_date, row.created_by_id) == (
        S.SENT,
        InvoiceSource.MILESTONE_APPROVAL,
        "INV-2026-0001",
        TODAY,
        None,
    )
    assert (row.client_id, row.project_id, row.total_minor) == (client.id, project.id, 250_000)
    assert await lines_of(row) == [("Launch", Decimal(1), 250_000, 250_000)]
    # and the milestone points at it, its error cleared
    billed = await Milestone.get(id=milestone.id)
    assert (billed.invoice_id, billed.invoice_error) == (invoice.id, None)
    assert await timeline(row) == [("created", None), ("finalized", None)]
    # and a later error report does not hide the invoice it has
    await committed(invoice_service.record_milestone_invoice_error(milestone.id, "late"))
    assert (await Milestone.get(id=milestone.id)).invoice_error is None
    # and running the job again returns the same invoice and makes no other
    again = await committed(invoice_service.generate_for_milestone(milestone.id))
    assert again is not None
    assert again.id == invoice.id
    assert await Invoice.all().count() == 1
    assert await InvoiceDelivery.all().count() == 0


async def test_generate_for_milestone_twice_at_once_makes_one_invoice(
    db: Backend, owner: Account
) -> None:
    require_postgres(db)
    # given an approved milestone
    milestone = await milestone_of(await create_project(owner, await create_client(owner)))
    # when the job runs twice at the same moment
    results = await asyncio.gather(
        outcome(invoice_service.generate_for_milestone(milestone.id)),
        outcome(invoice_service.generate_for_milestone(milestone.id)),
    )
    # then both runs answer with the one invoice made
    assert all(isinstance(r, Invoice) for r in results), results
    assert len({r.id for r in results if isinstance(r, Invoice)}) == 1
    assert await Invoice.all().count() == 1
    assert await Invoice.filter(status=S.SENT, number="INV-2026-0001").count() == 1
    assert await InvoiceCounter.all().values_list("last_value", flat=True) == [1]


async def test_generate_for_milestone_skips_a_milestone_not_approved(
    db: Backend, owner: Account
) -> None:
    # given milestones cancelled (or never approved) before the job ran, and one deleted
    project = await create_project(owner, await create_client(owner))
    statuses = [MilestoneStatus.CANCELLED, MilestoneStatus.PENDING, MilestoneStatus.REJECTED]
    ids = [(await milestone_of(project, status=status)).id for status in statuses]
    # when the job runs for each; then it makes nothing
    results = [await committed(invoice_service.generate_for_milestone(i)) for i in ids]
    assert results == [None, None, None]
    assert await committed(invoice_service.generate_for_milestone(uuid.uuid4())) is None
    assert await Invoice.all().count() == 0


async def test_generate_for_milestone_leaves_a_milestone_invoiced_by_hand(
    db: Backend, owner: Account
) -> None:
    # given an approved milestone already on a draft made by hand
    milestone = await milestone_of(await create_project(owner, await create_client(owner)))
    draft = await committed(_from_milestones(owner, milestone))
    # when the job runs; then it makes no invoice and leaves the draft as it is
    await committed(invoice_service.generate_for_milestone(milestone.id))
    assert await Invoice.all().values_list("id", "status") == [(draft.id, S.DRAFT)]


# A client's contacts (the first one added is the primary one), and whom the invoice goes to.
CONTACTS: dict[str, tuple[list[dict[str, Any]], list[list[str]]]] = {
    "primary with email": ([{"email": "Ana@Acme.test"}], [["ana@acme.test"]]),
    "primary without email": ([{}], []),
    "not primary": ([{}, {"email": "ben@acme.test"}], []),
    "no contact": ([], []),
}


async def test_generate_for_milestone_emails_the_primary_contact_only(
    db: Backend, owner: Account
) -> None:
    # given clients with contacts of each kind, and an approved milestone of each
    milestones = {}
    for name, (contacts, _) in CONTACTS.items():
        client = await create_client(owner, name=name)
        for contact in contacts:
            await create_contact(owner, client, **contact)
        milestones[name] = await milestone_of(await create_project(owner, client))
    # when the job issues each milestone's invoice
    sent: dict[str, list[list[str]]] = {}
    for name, milestone in milestones.items():
        invoice = await committed(invoice_service.generate_for_milestone(milestone.id))
        assert invoice is not None
        deliveries = await InvoiceDelivery.filter(invoice_id=invoice.id)
        sent[name] = [delivery.recipients for delivery in deliveries]
    # then an email is requested only when the primary contact has an address
    assert sent == {name: recipients for name, (_, recipients) in CONTACTS.items()}
    # and that request is a job for the email worker, sent after commit
    (delivery,) = await InvoiceDelivery.all()
    jobs = await OutboxMessage.filter(topic=SEND_EMAIL_JOB)
    assert [job.payload["args"] for job in jobs] == [[str(delivery.id)]]


# --- the lifecycle --------------------------------------------------------------------------


async def invoice_in(
    owner: Account, client: Client, status: InvoiceStatus, *, due: date | None = None
) -> Invoice:
    """A fresh invoice of 100.00 brought to ``status`` through the service, as users get there."""
    invoice = await create_invoice(owner, client)
    if due is not None or status == S.OVERDUE:
        await committed(
            invoice_service.update_invoice(owner.actor, invoice.id, {"due_date": due or TODAY})
        )
    if status == S.DRAFT:
        return await Invoice.get(id=invoice.id)
    invoice = await issue_invoice(owner, invoice)
    if status == S.VIEWED:
        await committed(invoice_service.mark_invoice_viewed(owner.actor, invoice.id))
    elif status == S.PARTIALLY_PAID:
        await committed(settlement.receive_on_invoice(invoice.id, 4_000, actor=owner.actor))
    elif status == S.PAID:
        await committed(settlement.receive_on_invoice(invoice.id, 10_000, actor=owner.actor))
    elif status == S.OVERDUE:
        await committed(invoice_service.mark_overdue(TODAY + timedelta(days=1)))
    elif status == S.VOID:
        await committed(invoice_service.void_invoice(owner.actor, invoice.id, "Issued twice"))
    row = await Invoice.get(id=invoice.id)
    assert row.status == status
    return row


Move = Callable[[Account, Invoice], Awaitable[Invoice]]

# How a user asks for each status the service moves an invoice to by request (overdue is the
# sweep's: see test_mark_overdue_moves_only_issued_unpaid_invoices_past_due).
MOVES: dict[InvoiceStatus, Move] = {
    S.SENT: lambda owner, invoice: invoice_service.finalize_invoice(owner.actor, invoice.id),
    S.VIEWED: lambda owner, invoice: invoice_service.mark_invoice_viewed(owner.actor, invoice.id),
    S.PARTIALLY_PAID: lambda owner, invoice: settlement.receive_on_invoice(
        invoice.id, 1, actor=owner.actor
    ),
    S.PAID: lambda owner, invoice: settlement.receive_on_invoice(
        invoice.id, max(invoice.total_minor - invoice.amount_paid_minor, 1), actor=owner.actor
    ),
    S.VOID: lambda owner, invoice: invoice_service.void_invoice(
        owner.actor, invoice.id, "Client cancelled"
    ),
}
ALLOWED = [(target, current) for target in MOVES for current in S if current in TRANSITIONS[target]]
DISALLOWED = [
    (target, current) for target in MOVES for current in S if current not in TRANSITIONS[target]
]
# Viewing an invoice that is past "viewed" records the view and keeps its status.
KEEPS_STATUS = {(S.VIEWED, s) for s in (S.VIEWED, S.PARTIALLY_PAID, S.PAID, S.OVERDUE)}
# Money received cannot be undone by voiding: that is a conflict, whatever the status.
HAS_PAYMENTS = {(S.VOID, S.PARTIALLY_PAID), (S.VOID, S.PAID)}


def _expected_refusal(target: InvoiceStatus, current: InvoiceStatus) -> tuple[str, str | None]:
    if (target, current) in KEEPS_STATUS:
        return ("kept", current.value)
    if (target, current) in HAS_PAYMENTS:
        return ("ConflictError", None)
    return ("InvalidTransitionError", current.value)


async def test_every_disallowed_move_is_refused(db: Backend, owner: Account) -> None:
    # given an invoice in each status a move is not allowed from
    client = await create_client(owner)
    refused: dict[tuple[InvoiceStatus, InvoiceStatus], tuple[str, str | None]] = {}
    for target, current in DISALLOWED:
        invoice = await invoice_in(owner, client, current)
        before = await row_counts(*INVOICE_TABLES)
        # when it is moved to the target
        result = await outcome(MOVES[target](owner, invoice))
        # (a refusal changes nothing)
        if isinstance(result, AppError):
            assert await row_counts(*INVOICE_TABLES) == before, (target, current)
            refused[(target, current)] = (type(result).__name__, getattr(result, "current", None))
        else:
            refused[(target, current)] = ("kept", result.status.value)
        assert (await Invoice.get(id=invoice.id)).status == current
    # then each move is refused naming the current status (or, for a view, changes nothing)
    assert refused == {move: _expected_refusal(*move) for move in DISALLOWED}


async def test_every_allowed_move_is_made(db: Backend, owner: Account) -> None:
    # given an invoice in each status a move is allowed from
    client = await create_client(owner)
    moved: dict[tuple[InvoiceStatus, InvoiceStatus], InvoiceStatus] = {}
    for target, current in ALLOWED:
        invoice = await invoice_in(owner, client, current)
        # when it is moved to the target
        await committed(MOVES[target](owner, invoice))
        moved[(target, current)] = (await Invoice.get(id=invoice.id)).status
    # then it is there
    assert moved == {(target, current): target for target, current in ALLOWED}


EDITS: dict[str, Callable[[Account, Invoice, InvoiceLine], Awaitable[object]]] = {
    "update_invoice": lambda owner, invoice, line: invoice_service.update_invoice(
        owner.actor, invoice.id, {"notes": "Thanks"}
    ),
    "add_invoice_line": lambda owner, invoice, line: invoice_service.add_invoice_line(
        owner.actor, invoice.id, dict(DEFAULT_INVOICE_LINE)
    ),
    "update_invoice_line": lambda owner, invoice, line: invoice_service.update_invoice_line(
        owner.actor, line.id, {"quantity": "2"}
    ),
    "remove_invoice_line": lambda owner, invoice, line: invoice_service.remove_invoice_line(
        owner.actor, line.id
    ),
    "delete_invoice": lambda owner, invoice, line: invoice_service.delete_invoice(
        owner.actor, invoice.id
    ),
}


async def test_only_a_draft_can_be_edited(db: Backend, owner: Account) -> None:
    # given an invoice in each status past draft
    client = await create_client(owner)
    invoices = {
        status: await invoice_in(owner, client, status) for status in S if status != S.DRAFT
    }
    before = await row_counts(*INVOICE_TABLES)
    # when each edit is tried on each
    refused: dict[tuple[InvoiceStatus, str], tuple[str, str | None]] = {}
    for status, invoice in invoices.items():
        (line,) = await invoice_service.invoice_lines(invoice)
        for name, edit in EDITS.items():
            result = await outcome(edit(owner, invoice, line))
            refused[(status, name)] = (type(result).__name__, getattr(result, "code", None))
            if isinstance(result, InvoiceNotEditableError):
                assert result.status == status
    # then each is refused as not editable, naming the status, and nothing changed
    assert refused == {
        (status, name): ("InvoiceNotEditableError", "INVOICE_NOT_EDITABLE")
        for status in invoices
        for name in EDITS
    }
    assert await row_counts(*INVOICE_TABLES) == before


async def test_void_needs_a_reason_and_keeps_the_number_used(db: Backend, owner: Account) -> None:
    # given an issued invoice
    client = await create_client(owner)
    issued = await issue_invoice(owner, await create_invoice(owner, client))
    # when it is voided without a reason; then that is refused
    for reason in (None, "", "   "):
        with pytest.raises(ValidationError) as refused:
            await committed(invoice_service.void_invoice(owner.actor, issued.id, reason))
        assert (refused.value.field, refused.value.code) == ("reason", "REQUIRED")
    # when it is voided with one
    voided = await committed(invoice_service.void_invoice(owner.actor, issued.id, " Sent twice "))
    # then it is void with its reason, and keeps its number
    row = await Invoice.get(id=issued.id)
    assert (row.status, row.void_reason, row.number) == (S.VOID, "Sent twice", "INV-2026-0001")
    assert row.voided_at is not None
    assert voided.voided_at == row.voided_at
    # and the number stays used: the next invoice gets the one after it
    following = await issue_invoice(owner, await create_invoice(owner, client))
    assert following.number == "INV-2026-0002"
    assert (await timeline(row))[-1] == ("voided", owner.user.id)


async def test_void_is_refused_once_anything_was_paid(db: Backend, owner: Account) -> None:
    # given an issued invoice paid in part
    invoice = await invoice_in(owner, await create_client(owner), S.PARTIALLY_PAID)
    # when it is voided; then that conflicts and it stays as it was
    with pytest.raises(ConflictError):
        await committed(invoice_service.void_invoice(owner.actor, invoice.id, "Oops"))
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor, row.void_reason) == (S.PARTIALLY_PAID, 4_000, None)


async def test_mark_overdue_moves_only_issued_unpaid_invoices_past_due(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given invoices in every status due today, one due later, and one of another agency
    client = await create_client(owner)
    # (the overdue one first: the sweep that makes it overdue would move the others too)
    due = {
        status: await invoice_in(owner, client, status, due=TODAY)
        for status in (S.OVERDUE, *(s for s in S if s != S.OVERDUE))
    }
    later = await invoice_in(owner, client, S.SENT)
    theirs = await invoice_in(rival, await create_client(rival), S.VIEWED, due=TODAY)
    # when the sweep runs tomorrow
    moved = await committed(invoice_service.mark_overdue(TODAY + timedelta(days=1)))
    # then exactly the issued, unpaid invoices past due are overdue (of every agency)
    statuses = {
        row.id: row.status
        for row in await Invoice.filter(id__in=[i.id for i in (*due.values(), later, theirs)])
    }
    assert {status: statuses[invoice.id] for status, invoice in due.items()} == {
        S.DRAFT: S.DRAFT,
        S.SENT: S.OVERDUE,
        S.VIEWED: S.OVERDUE,
        S.PARTIALLY_PAID: S.OVERDUE,
        S.PAID: S.PAID,
        S.OVERDUE: S.OVERDUE,
        S.VOID: S.VOID,
    }
    assert (statuses[later.id], statuses[theirs.id]) == (S.SENT, S.OVERDUE)
    assert moved == 4
    # and each move is on its invoice's timeline, made by nobody (the sweep)
    for status in (S.SENT, S.VIEWED, S.PARTIALLY_PAID):
        assert (await timeline(due[status]))[-1] == ("overdue", None)
        assert (await Invoice.get(id=due[status].id)).overdue_at is not None
    assert [verb for verb, _ in await timeline(due[S.OVERDUE])].count("overdue") == 1
    # and a second sweep has nothing left to do
    assert await committed(invoice_service.mark_overdue(TODAY + timedelta(days=1))) == 0
    # and the sweep of today does not count today's due date as past
    assert await committed(invoice_service.mark_overdue(TODAY)) == 0
    assert invoice_service.is_overdue(await Invoice.get(id=later.id), TODAY + timedelta(days=31))


async def test_record_payment_moves_to_partially_paid_then_paid(
    db: Backend, owner: Account
) -> None:
    # given an issued invoice of 100.00
    invoice = await invoice_in(owner, await create_client(owner), S.VIEWED)
    # when 40.00 is received
    part = await committed(settlement.receive_on_invoice(invoice.id, 4_000, actor=None))
    # then it is partially paid
    assert (part.status, part.amount_paid_minor, part.paid_at) == (S.PARTIALLY_PAID, 4_000, None)
    # and more than the balance, or nothing, is refused
    for amount in (6_001, 0, -5):
        with pytest.raises(ValidationError) as refused:
            await committed(settlement.receive_on_invoice(invoice.id, amount, actor=None))
        assert (refused.value.field, refused.value.code) == ("amount", "OUT_OF_RANGE")
    # when the balance of 60.00 is received; then it is paid
    paid = await committed(settlement.receive_on_invoice(invoice.id, 6_000, actor=owner.actor))
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.amount_paid_minor) == (S.PAID, 10_000)
    assert row.paid_at is not None
    assert row.paid_at == paid.paid_at
    assert (await timeline(row))[-2:] == [("partially_paid", None), ("paid", owner.user.id)]
    events = await ActivityEvent.filter(entity_id=invoice.id, verb="paid").values_list(
        "summary", flat=True
    )
    assert events == ["Invoice INV-2026-0001: 60.00 USD received, paid in full"]
    with pytest.raises(NotFoundError):
        await committed(settlement.receive_on_invoice(uuid.uuid4(), 1, actor=None))


async def test_every_step_is_on_the_timeline(db: Backend, owner: Account) -> None:
    # given a client with a lead who reads invoices
    client = await create_client(owner)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    me = owner.user.id
    # when an invoice is drafted, edited, sent, opened by the client and paid
    invoice = await create_invoice(owner, client)
    _, line = await committed(
        invoice_service.add_invoice_line(
            owner.actor, invoice.id, {"description": "Hosting", "quantity": "2", "unit_price": "5"}
        )
    )
    await committed(invoice_service.update_invoice_line(owner.actor, line.id, {"quantity": "3"}))
    await committed(invoice_service.remove_invoice_line(owner.actor, line.id))
    await committed(invoice_service.update_invoice(owner.actor, invoice.id, {"tax_rate": "18"}))
    await committed(invoice_service.send_invoice(owner.actor, invoice.id, to=["ap@acme.test"]))
    await committed(invoice_service.record_client_view(lead.actor, invoice.id))
    await committed(invoice_service.record_client_view(lead.actor, invoice.id))
    await committed(invoice_service.resend_invoice_email(owner.actor, invoice.id))
    await committed(settlement.receive_on_invoice(invoice.id, 100, actor=None))
    await committed(settlement.receive_on_invoice(invoice.id, 11_700, actor=None))
    # then each step is one event on the invoice's timeline, in order, by whom made it
    assert await timeline(invoice) == [
        ("created", me),
        ("line_added", me),
        ("line_updated", me),
        ("line_removed", me),
        ("updated", me),
        ("finalized", me),
        ("email_requested", me),
        ("viewed", lead.user.id),
        ("email_resent", me),
        ("partially_paid", None),
        ("paid", None),
    ]
    row = await Invoice.get(id=invoice.id)
    assert (row.status, row.total_minor, row.tax_minor) == (S.PAID, 11_800, 1_800)
    deliveries = await invoice_service.deliveries_for_invoices(owner.actor, [invoice.id])
    assert [d.recipients for d in deliveries[invoice.id]] == [["ap@acme.test"], ["ap@acme.test"]]


async def test_finalizing_takes_the_due_date_from_the_terms(db: Backend, owner: Account) -> None:
    # given drafts with and without a project (whose terms say 10 days), and one dated by hand
    await committed(agency_service.update_agency(owner.actor, {"invoice_due_days": 45}))
    client = await create_client(owner)
    project = await create_project(owner, client, invoice_due_days=10)
    with_terms = await create_invoice(owner, client, project)
    without = await create_invoice(owner, client)
    by_hand = await create_invoice(owner, client, project, due_date=TODAY + timedelta(days=3))
    # when they are finalized; then each is due by its own terms
    issued = [await issue_invoice(owner, i) for i in (with_terms, without, by_hand)]
    assert [(i.issue_date, i.due_date) for i in issued] == [
        (TODAY, TODAY + timedelta(days=10)),
        (TODAY, TODAY + timedelta(days=45)),
        (TODAY, TODAY + timedelta(days=3)),
    ]


async def test_an_invoice_without_lines_is_not_finalized(db: Backend, owner: Account) -> None:
    draft = await create_invoice(owner, await create_client(owner), lines=())
    with pytest.raises(ValidationError) as refused:
        await committed(invoice_service.finalize_invoice(owner.actor, draft.id))
    assert (refused.value.field, refused.value.code) == ("lines", "REQUIRED")
    assert not await InvoiceCounter.all().exists()


async def test_a_yen_invoice_has_no_minor_unit(db: Backend, owner: Account) -> None:
    # given a client billed in yen
    client = await create_client(owner, currency="JPY")
    # when an invoice with a fractional quantity is created
    invoice = await create_invoice(
        owner,
        client,
        lines=[{"description": "Work", "quantity": "1.5", "unit_price": "333"}],
        tax_rate="10",
    )
    # then its amounts are whole yen, rounded half up
    assert (invoice.currency, invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (
        "JPY",
        500,
        50,
        550,
    )
    with pytest.raises(ValidationError) as refused:
        await create_invoice(
            owner, client, lines=[{"description": "W", "quantity": "1", "unit_price": "0.5"}]
        )
    assert refused.value.field == "unitPrice"


# --- tenancy ----------------------------------------------------------------------------------


async def test_another_agencys_ids_are_not_found(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given an agency's draft, issued invoice (with an email), project, milestone and line
    client = await create_client(owner)
    project = await create_project(owner, client)
    draft = await create_invoice(owner, client)
    issued = await issue_invoice(owner, await create_invoice(owner, client))
    await InvoiceDelivery.create(
        agency_id=owner.agency_id, invoice_id=issued.id, recipients=["ap@acme.test"]
    )
    (line,) = await invoice_service.invoice_lines(draft)
    milestone = await milestone_of(project)
    theirs = await create_client(rival)
    before = await row_counts(*INVOICE_TABLES)
    r = rival.actor
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get_invoice": lambda: invoice_service.get_invoice(r, draft.id),
        "update_invoice": lambda: invoice_service.update_invoice(r, draft.id, {"notes": "x"}),
        "add_invoice_line": lambda: invoice_service.add_invoice_line(
            r, draft.id, dict(DEFAULT_INVOICE_LINE)
        ),
        "update_invoice_line": lambda: invoice_service.update_invoice_line(
            r, line.id, {"quantity": "2"}
        ),
        "remove_invoice_line": lambda: invoice_service.remove_invoice_line(r, line.id),
        "delete_invoice": lambda: invoice_service.delete_invoice(r, draft.id),
        "finalize_invoice": lambda: invoice_service.finalize_invoice(r, draft.id),
        "send_invoice": lambda: invoice_service.send_invoice(r, issued.id, to=["x@rival.test"]),
        "resend_invoice_email": lambda: invoice_service.resend_invoice_email(r, issued.id),
        "mark_invoice_viewed": lambda: invoice_service.mark_invoice_viewed(r, issued.id),
        "void_invoice": lambda: invoice_service.void_invoice(r, issued.id, "mine now"),
        "create_invoice (client)": lambda: invoice_service.create_invoice(r, client.id, None, {}),
        "create_invoice (project)": lambda: invoice_service.create_invoice(
            r, theirs.id, project.id, {}
        ),
        "create_invoice_from_time_entries": lambda: (
            invoice_service.create_invoice_from_time_entries(
                r, project.id, MARCH[0], MARCH[1], TimeGrouping.TASK
            )
        ),
        "create_invoice_from_milestones": lambda: invoice_service.create_invoice_from_milestones(
            r, [milestone.id]
        ),
    }
    # when the other agency's owner calls every function taking an id with them
    results = {name: await outcome(call()) for name, call in calls.items()}
    # then each is simply not found, and nothing changed
    found = {name: type(result).__name__ for name, result in results.items()}
    assert found == dict.fromkeys(calls, "NotFoundError")
    assert await row_counts(*INVOICE_TABLES) == before
    # and the readers that take many ids find none of them
    assert await invoice_service.lines_for_invoices(r, [draft.id, issued.id]) == {}
    assert await invoice_service.invoices_for_milestones(r, [milestone.id]) == {}
    assert await invoice_service.deliveries_for_invoices(r, [issued.id]) == {}
    page = await invoice_service.list_invoices(r, InvoiceFilter(), first=10, after=None)
    assert page.items == []


async def test_client_users_see_their_clients_issued_invoices_only(
    db: Backend, owner: Account
) -> None:
    # given a client's draft and issued invoice, another client's issued invoice, and a lead
    acme = await create_client(owner, name="Acme")
    blue = await create_client(owner, name="Blue")
    milestone = await milestone_of(await create_project(owner, acme))
    draft = await committed(_from_milestones(owner, milestone))
    issued = await issue_invoice(owner, await create_invoice(owner, acme))
    not_theirs = await issue_invoice(owner, await create_invoice(owner, blue))
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=acme)
    member = await create_user(owner, role=Role.MEMBER)
    # when the lead reads invoices; then the issued one of their client is all they see
    page = await invoice_service.list_invoices(lead.actor, InvoiceFilter(), first=10, after=None)
    assert [i.id for i in page.items] == [issued.id]
    assert (await invoice_service.get_invoice(lead.actor, issued.id)).id == issued.id
    for hidden in (draft, not_theirs):
        with pytest.raises(NotFoundError):
            await invoice_service.get_invoice(lead.actor, hidden.id)
    lines = await invoice_service.lines_for_invoices(lead.actor, [draft.id, issued.id])
    assert list(lines) == [issued.id]
    assert await invoice_service.invoices_for_milestones(lead.actor, [milestone.id]) == {}
    # and drafts stay out of reach for any call (not found), issued ones are read-only
    assert isinstance(
        await outcome(invoice_service.finalize_invoice(lead.actor, draft.id)), NotFoundError
    )
    assert isinstance(
        await outcome(invoice_service.mark_invoice_viewed(lead.actor, draft.id)), NotFoundError
    )
    assert isinstance(
        await outcome(invoice_service.void_invoice(lead.actor, issued.id, "no")),
        PermissionDeniedError,
    )
    assert await committed(invoice_service.record_client_view(lead.actor, draft.id)) is None
    # and members of the agency do not write invoices
    assert isinstance(
        await outcome(invoice_service.create_invoice(member.actor, acme.id, None, {})),
        PermissionDeniedError,
    )
    assert isinstance(
        await outcome(invoice_service.finalize_invoice(member.actor, draft.id)),
        PermissionDeniedError,
    )
    # and a lead opening the issued invoice marks it viewed, once
    viewed = await committed(invoice_service.record_client_view(lead.actor, issued.id))
    assert viewed is not None
    assert viewed.status == S.VIEWED
    assert await committed(invoice_service.record_client_view(lead.actor, issued.id)) is None
    assert await committed(invoice_service.record_client_view(owner.actor, issued.id)) is None
