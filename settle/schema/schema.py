"""The Schema: every query, mutation and subscription, bound to its resolver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaskErrors, SchemaExtension
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType
from strawberry.utils.logging import StrawberryLogger

from settle.core.db import read_snapshot
from settle.core.errors import AppError
from settle.core.settings import get_settings
from settle.resolvers import activity as activity_resolvers
from settle.resolvers import auth as auth_resolvers
from settle.resolvers import client as client_resolvers
from settle.resolvers.agency import AgencyMutation
from settle.resolvers.credit_note import CreditNoteMutation, CreditNoteQuery
from settle.resolvers.csv_import import CsvImportMutation, CsvImportQuery
from settle.resolvers.deliverable import DeliverableMutation, DeliverableQuery
from settle.resolvers.export import ExportMutation, ExportQuery
from settle.resolvers.invoice import InvoiceMutation, InvoiceQuery
from settle.resolvers.milestone import MilestoneMutation, MilestoneQuery
from settle.resolvers.notification import NotificationMutation, NotificationQuery
from settle.resolvers.payment import PaymentMutation, PaymentQuery
from settle.resolvers.project import ProjectMutation, ProjectQuery
from settle.resolvers.report import ReportQuery
from settle.resolvers.task import TaskMutation, TaskQuery
from settle.resolvers.telegram import TelegramMutation, TelegramQuery
from settle.resolvers.time_entry import TimeEntryMutation, TimeEntryQuery
from settle.schema import compiled, errors
from settle.schema.activity import ActivityEvent
from settle.schema.auth import User
from settle.schema.client import Client, Contact, Note
from settle.schema.common import Connection
from settle.schema.documents import ValidatedOnce
from settle.schema.inputs import InputChecks
from settle.schema.introspection import IntrospectionGate
from settle.schema.limits import OperationLimits
from settle.schema.scalars import SCALAR_OVERRIDES
from settle.subscriptions import activity as activity_subscriptions
from settle.subscriptions import csv_import as csv_import_subscriptions
from settle.subscriptions import dashboard as dashboard_subscriptions
from settle.subscriptions import export as export_subscriptions
from settle.subscriptions import live_status as live_status_subscriptions
from settle.subscriptions import payment as payment_subscriptions
from settle.subscriptions.frames import SharedEventExecutor


@strawberry.type
class CrmQuery:
    me: User | None = strawberry.field(resolver=auth_resolvers.me, description="The current user.")
    clients: Connection[Client] = strawberry.field(resolver=client_resolvers.clients)
    client: Client | None = strawberry.field(resolver=client_resolvers.client)
    contact: Contact | None = strawberry.field(resolver=client_resolvers.contact)
    note: Note | None = strawberry.field(resolver=client_resolvers.note)
    timeline: Connection[ActivityEvent] = strawberry.field(
        resolver=activity_resolvers.agency_timeline
    )
    members: Connection[User] = strawberry.field(
        resolver=auth_resolvers.members,
        description="The agency's active users, oldest first (not for client users).",
    )


@strawberry.type
class CrmMutation:
    sign_up: auth_resolvers.AuthResult = strawberry.mutation(resolver=auth_resolvers.sign_up)
    login: auth_resolvers.AuthResult = strawberry.mutation(resolver=auth_resolvers.login)
    invite_member: auth_resolvers.InviteMemberResult = strawberry.mutation(
        resolver=auth_resolvers.invite_member
    )
    accept_invitation: auth_resolvers.AuthResult = strawberry.mutation(
        resolver=auth_resolvers.accept_invitation
    )
    logout: auth_resolvers.LogoutResult = strawberry.mutation(
        resolver=auth_resolvers.logout,
        description="End the session of this request's token; other sessions go on.",
    )
    change_password: auth_resolvers.AuthResult = strawberry.mutation(
        resolver=auth_resolvers.change_password,
        description="Set a new password (the current one is required): every session of "
        "the user ends, and the answer carries a fresh token for the caller.",
    )
    remove_member: auth_resolvers.RemoveMemberResult = strawberry.mutation(
        resolver=auth_resolvers.remove_member,
        description="Take a user out of the agency (owners and admins; only owners remove "
        "owners; never yourself, never the last owner): deactivated, every session ended.",
    )

    create_client: client_resolvers.ClientResult = strawberry.mutation(
        resolver=client_resolvers.create_client
    )
    update_client: client_resolvers.ClientResult = strawberry.mutation(
        resolver=client_resolvers.update_client
    )
    delete_client: client_resolvers.ClientResult = strawberry.mutation(
        resolver=client_resolvers.delete_client
    )
    create_contact: client_resolvers.ContactResult = strawberry.mutation(
        resolver=client_resolvers.create_contact
    )
    update_contact: client_resolvers.ContactResult = strawberry.mutation(
        resolver=client_resolvers.update_contact
    )
    set_primary_contact: client_resolvers.ContactResult = strawberry.mutation(
        resolver=client_resolvers.set_primary_contact
    )
    delete_contact: client_resolvers.ContactResult = strawberry.mutation(
        resolver=client_resolvers.delete_contact
    )
    add_note: client_resolvers.NoteResult = strawberry.mutation(resolver=client_resolvers.add_note)
    update_note: client_resolvers.NoteResult = strawberry.mutation(
        resolver=client_resolvers.update_note
    )
    delete_note: client_resolvers.NoteResult = strawberry.mutation(
        resolver=client_resolvers.delete_note
    )


# Each domain contributes its own query and mutation types; they merge into one root.
# A domain adds its pair here (types defined beside its resolvers).
QUERY_TYPES: tuple[type, ...] = (
    CrmQuery,
    CreditNoteQuery,
    CsvImportQuery,
    DeliverableQuery,
    ExportQuery,
    InvoiceQuery,
    MilestoneQuery,
    NotificationQuery,
    PaymentQuery,
    ProjectQuery,
    ReportQuery,
    TaskQuery,
    TelegramQuery,
    TimeEntryQuery,
)
MUTATION_TYPES: tuple[type, ...] = (
    AgencyMutation,
    CrmMutation,
    CreditNoteMutation,
    CsvImportMutation,
    DeliverableMutation,
    ExportMutation,
    InvoiceMutation,
    MilestoneMutation,
    NotificationMutation,
    PaymentMutation,
    ProjectMutation,
    TaskMutation,
    TelegramMutation,
    TimeEntryMutation,
)

Query = merge_types("Query", QUERY_TYPES)
Mutation = merge_types("Mutation", MUTATION_TYPES)


@strawberry.type
class Subscription:
    activity_added = strawberry.subscription(resolver=activity_subscriptions.activity_added)
    payment_status_changed = strawberry.subscription(
        resolver=payment_subscriptions.payment_status_changed,
        description="Changes to the payments the caller may see (a client user's own "
        "client's); projectId, invoiceId and paymentId each narrow them when given.",
    )
    milestone_status_changed = strawberry.subscription(
        resolver=live_status_subscriptions.milestone_status_changed,
        description="Status changes of a project's milestones (new milestones too), or of one "
        "milestone of it; NOT_FOUND for a project or milestone the caller may not see.",
    )
    invoice_status_changed = strawberry.subscription(
        resolver=live_status_subscriptions.invoice_status_changed,
        description="Status changes of a client's invoices (new invoices too; a client user "
        "hears of an invoice once issued), or of one invoice of it; NOT_FOUND for a client or "
        "invoice the caller may not see.",
    )
    project_payment_status_changed = strawberry.subscription(
        resolver=live_status_subscriptions.project_payment_status_changed,
        description="A project's payment status (as the projectPaymentStatus query) now, then "
        "each time it changes; NOT_FOUND for a project the caller may not see.",
    )
    import_progress = strawberry.subscription(
        resolver=csv_import_subscriptions.import_progress,
        description="A CSV import's progress now, then as its batches commit (a few times a "
        "second at most); ends once it has completed or failed. NOT_FOUND for an import the "
        "caller may not see (client users see none).",
    )
    dashboard = strawberry.subscription(
        resolver=dashboard_subscriptions.dashboard,
        description="The agency's billing at a glance (owners and admins; PERMISSION_DENIED "
        "for others): now, then each time it changes, at most once a second.",
    )
    export_progress = strawberry.subscription(
        resolver=export_subscriptions.export_progress,
        description="A CSV export now, then each time its rows or status change (progress "
        "at most a few times a second); ends once it is completed or failed. NOT_FOUND for an "
        "export the caller may not see.",
    )


def _should_mask(error: GraphQLError) -> bool:
    """Mask what we did not mean to say: anything but GraphQL's own and our public errors."""
    original: Any = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    # A domain error that escaped a union (a query field) is still an expected one.
    return not isinstance(original, AppError)


class SnapshotReads(SchemaExtension):
    """A query operation reads one moment: one read-only snapshot on PostgreSQL.

    Two rows written in one transaction (a refund and its payment) are read by
    separate statements, at different moments unless they share a snapshot.
    Mutations keep their own transactions. A subscription is left alone: its
    events carry what the committing transaction announced (at most the name of
    an event's actor or client is looked up, one row each), and a transaction
    per event and subscriber would hold a connection for each.
    """

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        settings = getattr(context, "settings", None) or get_settings()
        if (
            self.execution_context.operation_type is not OperationType.QUERY
            or not settings.snapshot_reads
        ):
            yield
            return
        async with read_snapshot():
            yield


class SettleSchema(strawberry.Schema):
    def _get_execute_function(self) -> Callable[..., Any]:
        """Query operations run on the compiled read path; it hands the rest to graphql-core."""
        return compiled.execute

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Log only unexpected errors; a caller's mistake is not an operator's alarm."""
        for error in errors:
            if _should_mask(error):
                StrawberryLogger.error(error, execution_context)


def build_schema() -> strawberry.Schema:
    return SettleSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=list(errors.ERROR_TYPES),
        scalar_overrides=SCALAR_OVERRIDES,
        # A subscription event is executed once per group of subscribers with one result.
        execution_context_class=SharedEventExecutor,
        # OperationLimits first: no other extension may parse or validate before it.
        extensions=[
            OperationLimits,
            InputChecks,
            IntrospectionGate,
            # After every extension that adds rules or refuses before validation.
            ValidatedOnce,
            lambda: MaskErrors(should_mask_error=_should_mask),
            SnapshotReads,
        ],
    )


schema = build_schema()
