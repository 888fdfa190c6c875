"""DataLoaders: one query per kind of child, however long the list."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Literal, TypeVar

from strawberry.dataloader import DataLoader
from tortoise.models import Model

from settle.core.pagination import Page
from settle.core.tenancy import Actor, scoped
from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, User
from settle.models.client import Client, Contact, Note
from settle.models.csv_import import CsvImportError
from settle.models.deliverable import Deliverable
from settle.models.invoice import (
    CreditNote,
    Invoice,
    InvoiceDelivery,
    InvoiceLine,
    InvoiceStatus,
)
from settle.models.milestone import Milestone
from settle.models.payment import (
    Payment,
    PaymentAllocation,
    PaymentAuditEntry,
    Refund,
    WebhookEvent,
)
from settle.models.project import Project, Task, TimeEntry
from settle.services import activity as activity_service
from settle.services import client as client_service
from settle.services import credit_note as credit_note_service
from settle.services import csv_import as csv_import_service
from settle.services import deliverable as deliverable_service
from settle.services import invoice as invoice_service
from settle.services import milestone as milestone_service
from settle.services import payment as payment_service
from settle.services import project as project_service
from settle.services import task as task_service
from settle.services import time_entry as time_entry_service

M = TypeVar("M", bound=Model)
PaymentChild = TypeVar("PaymentChild", PaymentAllocation, Refund, PaymentAuditEntry, WebhookEvent)


class Loaders:
    """Per-request loaders bound to the acting user, so batching never crosses tenants."""

    def __init__(self, actor: Actor | None, *, cache: bool = True) -> None:
        self.actor = actor
        self.client = DataLoader(self._clients, cache=cache)
        self.project = DataLoader(self._projects, cache=cache)
        self.contacts = DataLoader(self._contacts, cache=cache)
        self.user = DataLoader(self._users, cache=cache)
        self.agency = DataLoader(self._agencies, cache=cache)
        self.project_statistics = DataLoader(self._project_statistics, cache=cache)
        self.project_milestones = DataLoader(self._project_milestones, cache=cache)
        self.project_deliverables = DataLoader(self._project_deliverables, cache=cache)
        self.payment_state = DataLoader(self._payment_states, cache=cache)
        self.task = DataLoader(self._tasks, cache=cache)
        self.invoice_lines = DataLoader(self._invoice_lines, cache=cache)
        self.milestone_invoice = DataLoader(self._milestone_invoices, cache=cache)
        self.invoice = DataLoader(self._invoices, cache=cache)
        self.milestone = DataLoader(self._milestones, cache=cache)
        self.invoice_payments = DataLoader(self._invoice_payments, cache=cache)
        self.invoice_credit_notes = DataLoader(self._invoice_credit_notes, cache=cache)
        self.invoice_deliveries = DataLoader(self._invoice_deliveries, cache=cache)
        self.credit_note = DataLoader(self._credit_notes, cache=cache)
        self.payment_allocations = DataLoader(self._payment_allocations, cache=cache)
        self.payment_refunds = DataLoader(self._payment_refunds, cache=cache)
        self.payment_audit_log = DataLoader(self._payment_audit_log, cache=cache)
        self.payment_webhook_events = DataLoader(self._payment_webhook_events, cache=cache)
        # Child connections: one loader per kind of list and its arguments, so every
        # parent on a page asks for the same page of its own children at once.
        self._pages: dict[Hashable, DataLoader[uuid.UUID, Page[Any]]] = {}
        self._cache = cache

    def client_notes(
        self, *, first: int, after: str | None, pinned: bool | None
    ) -> DataLoader[uuid.UUID, Page[Note]]:
        """A page of notes per client (newest first)."""
        return self._paged(
            ("client_notes", first, after, pinned),
            lambda ids: client_service.notes_of_clients(
                self._require_actor(), ids, first=first, after=after, pinned=pinned
            ),
        )

    def import_errors(
        self, *, first: int, after: str | None
    ) -> DataLoader[uuid.UUID, Page[CsvImportError]]:
        """A page of row errors per CSV import, by row."""
        return self._paged(
            ("import_errors", first, after),
            lambda ids: csv_import_service.errors_of_imports(
                self._require_actor(), ids, first=first, after=after
            ),
        )

    def timelines(
        self,
        flt: activity_service.TimelineFilter,
        key: Literal["client_id", "entity_id"],
        *,
        first: int,
        after: str | None,
    ) -> DataLoader[uuid.UUID, Page[ActivityEvent]]:
        """A page of timeline events per client or entity (``key``), newest first."""
        return self._paged(
            ("timelines", flt, key, first, after),
            lambda ids: activity_service.timelines(
                self._require_actor(), flt, key, ids, first=first, after=after
            ),
        )

    def project_tasks(self, *, first: int, after: str | None) -> DataLoader[uuid.UUID, Page[Task]]:
        """A page of tasks per project, in their order."""
        return self._paged(
            ("project_tasks", first, after),
            lambda ids: task_service.tasks_of_projects(
                self._require_actor(), ids, first=first, after=after
            ),
        )

    def project_time_entries(
        self, *, first: int, after: str | None
    ) -> DataLoader[uuid.UUID, Page[TimeEntry]]:
        """A page of time entries per project, newest work date first."""
        return self._paged(
            ("project_time_entries", first, after),
            lambda ids: time_entry_service.entries_of_projects(
                self._require_actor(), ids, first=first, after=after
            ),
        )

    def _paged(
        self,
        key: Hashable,
        fetch: Callable[[list[uuid.UUID]], Awaitable[dict[uuid.UUID, Page[M]]]],
    ) -> DataLoader[uuid.UUID, Page[M]]:
        loader = self._pages.get(key)
        if loader is None:

            async def load(ids: Sequence[uuid.UUID]) -> list[Page[M]]:
                found = await fetch(list(ids))
                return [found[i] for i in ids]

            loader = DataLoader(load, cache=self._cache)
            self._pages[key] = loader
        return loader

    def _require_actor(self) -> Actor:
        if self.actor is None:
            raise PermissionError("loaders need an authenticated actor")
        return self.actor

    async def _clients(self, ids: Sequence[uuid.UUID]) -> list[Client | None]:
        found = await client_service.clients_by_ids(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _projects(self, ids: Sequence[uuid.UUID]) -> list[Project | None]:
        found = await project_service.projects_by_ids(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _contacts(self, ids: Sequence[uuid.UUID]) -> list[list[Contact]]:
        found = await client_service.contacts_for_clients(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _tasks(self, ids: Sequence[uuid.UUID]) -> list[Task | None]:
        found = await task_service.tasks_by_ids(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _project_milestones(self, ids: Sequence[uuid.UUID]) -> list[list[Milestone]]:
        found = await milestone_service.milestones_for_projects(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _project_statistics(
        self, ids: Sequence[uuid.UUID]
    ) -> list[project_service.ProjectStatistics | None]:
        found = await project_service.project_statistics(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _project_deliverables(self, ids: Sequence[uuid.UUID]) -> list[list[Deliverable]]:
        found = await deliverable_service.deliverables_for_projects(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _invoice_lines(self, ids: Sequence[uuid.UUID]) -> list[list[InvoiceLine]]:
        found = await invoice_service.lines_for_invoices(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _milestone_invoices(self, ids: Sequence[uuid.UUID]) -> list[Invoice | None]:
        """The live invoice billing each milestone, by milestone id (null for none)."""
        found = await invoice_service.invoices_for_milestones(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _invoices(self, ids: Sequence[uuid.UUID]) -> list[Invoice | None]:
        """Invoices by id, as the invoice service scopes them (no drafts for client users)."""
        actor = self._require_actor()
        qs = scoped(Invoice, actor).filter(id__in=list(ids))
        if actor.is_client_user:
            qs = qs.exclude(status=InvoiceStatus.DRAFT)
        found = {row.id: row for row in await qs}
        return [found.get(i) for i in ids]

    async def _milestones(self, ids: Sequence[uuid.UUID]) -> list[Milestone | None]:
        """Milestones by id, as the milestone service scopes them (not a deleted client's)."""
        rows = await scoped(Milestone, self._require_actor()).filter(
            id__in=list(ids), project__client__deleted_at__isnull=True
        )
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _invoice_payments(self, ids: Sequence[uuid.UUID]) -> list[list[Payment]]:
        """Each invoice's payments, newest first."""
        found = await payment_service.payments_for_invoices(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _invoice_credit_notes(self, ids: Sequence[uuid.UUID]) -> list[list[CreditNote]]:
        """Each invoice's credit notes, oldest first."""
        found = await credit_note_service.credit_notes_for_invoices(
            self._require_actor(), list(ids)
        )
        return [found.get(i, []) for i in ids]

    async def _invoice_deliveries(self, ids: Sequence[uuid.UUID]) -> list[list[InvoiceDelivery]]:
        """Each invoice's emails, newest first."""
        found = await invoice_service.deliveries_for_invoices(self._require_actor(), ids)
        return [found.get(i, []) for i in ids]

    async def _credit_notes(self, ids: Sequence[uuid.UUID]) -> list[CreditNote | None]:
        """Credit notes by id, as the credit note service scopes them."""
        found = await credit_note_service.credit_notes_by_ids(self._require_actor(), ids)
        return [found.get(i) for i in ids]

    async def _payment_allocations(self, ids: Sequence[uuid.UUID]) -> list[list[PaymentAllocation]]:
        """What each payment pays; callers pass ids of payments the actor already sees."""
        return await self._payment_children(PaymentAllocation, ids, "created_at")

    async def _payment_refunds(self, ids: Sequence[uuid.UUID]) -> list[list[Refund]]:
        """Each payment's refunds, oldest first (ids of payments the actor sees)."""
        return await self._payment_children(Refund, ids, "created_at")

    async def _payment_audit_log(self, ids: Sequence[uuid.UUID]) -> list[list[PaymentAuditEntry]]:
        """Each payment's audit entries, oldest first (ids of payments the actor sees)."""
        return await self._payment_children(PaymentAuditEntry, ids, "created_at")

    async def _payment_webhook_events(self, ids: Sequence[uuid.UUID]) -> list[list[WebhookEvent]]:
        """The gateway events matched to each payment, oldest first (ids the actor sees)."""
        return await self._payment_children(WebhookEvent, ids, "received_at")

    async def _payment_children(
        self, model: type[PaymentChild], ids: Sequence[uuid.UUID], order: str
    ) -> list[list[PaymentChild]]:
        actor = self._require_actor()
        rows = await model.filter(agency_id=actor.agency_id, payment_id__in=list(ids)).order_by(
            order, "id"
        )
        # Keyed by the optional id: a webhook event's payment is known only once matched.
        grouped: dict[uuid.UUID | None, list[PaymentChild]] = {i: [] for i in ids}
        for row in rows:
            grouped[row.payment_id].append(row)
        return [grouped[i] for i in ids]

    async def _payment_states(
        self, ids: Sequence[uuid.UUID]
    ) -> list[milestone_service.ProjectPaymentState]:
        """Payment state per project id; callers pass ids of rows the actor already sees."""
        self._require_actor()
        found = await milestone_service.payment_state(ids)
        return [found[i] for i in ids]

    async def _users(self, ids: Sequence[uuid.UUID]) -> list[User | None]:
        actor = self._require_actor()
        rows = await User.filter(agency_id=actor.agency_id, id__in=list(ids))
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]

    async def _agencies(self, ids: Sequence[uuid.UUID]) -> list[Agency | None]:
        actor = self._require_actor()
        rows = await Agency.filter(id__in=[i for i in ids if i == actor.agency_id])
        found = {row.id: row for row in rows}
        return [found.get(i) for i in ids]
