"""Tenancy: another agency's ids, and another client's, act exactly like ids that exist nowhere.

REGISTRY holds every query and mutation that takes an id (an ``ID`` argument, or
an ``ID`` anywhere inside an input argument). ``test_registry_covers_every_id_field``
reads the served schema and fails, naming the field, when one is missing; every
registered operation is then walked as its own test case, against both backends.

Conventions of the registry: variables are named after the arguments they fill
(``$id`` for ``id``, ``$input`` for ``input``), and a probe's variables put one
of the target's ids in every ``ID`` slot of its field, so the schema check can
verify that each slot is exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import pytest
from gql.transport.exceptions import TransportQueryError
from graphql import (
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLScalarType,
    GraphQLSchema,
    extend_schema,
    get_named_type,
    parse,
)
from tortoise import Tortoise

from settle.core import clock
from settle.core.storage import get_storage
from settle.models.activity import ActivityEvent
from settle.models.agency import Role, User
from settle.models.client import Client, Contact, Note
from settle.models.csv_import import CsvImport, ImportEntity, ImportStatus
from settle.models.deliverable import Deliverable, DeliverableKind, DeliverableStatus
from settle.models.export import Export, ExportEntity
from settle.models.invoice import CreditNote, Invoice, InvoiceLine, InvoiceStatus
from settle.models.milestone import Milestone
from settle.models.payment import (
    Payment,
    PaymentAllocation,
    PaymentProvider,
    PaymentStatus,
    WebhookEvent,
)
from settle.models.project import Project, Task, TimeEntry
from settle.schema.schema import schema
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import (
    Account,
    create_client,
    create_contact,
    create_note,
    create_user,
)
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

# --- operations -------------------------------------------------------------

CLIENT_QUERY = """
query Client($id: ID!) {
  client(id: $id) { __typename id name }
}
"""

CONTACT_QUERY = """
query Contact($id: ID!) {
  contact(id: $id) { __typename id name }
}
"""

NOTE_QUERY = """
query Note($id: ID!) {
  note(id: $id) { __typename id body }
}
"""

TIMELINE_QUERY = """
query Timeline($filter: TimelineFilter) {
  timeline(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id summary } }
  }
}
"""

EXPORT_QUERY = """
query Export($id: ID!) {
  export(id: $id) { __typename id status }
}
"""

CREATE_EXPORT = """
mutation CreateExport($input: CreateExportInput!) {
  createExport(input: $input) {
    __typename
    ... on Export { id status }
    ... on Error { code message }
  }
}
"""

UPDATE_CLIENT = """
mutation UpdateClient($id: ID!, $input: UpdateClientInput!) {
  updateClient(id: $id, input: $input) {
    __typename
    ... on Client { id name }
    ... on Error { code message }
  }
}
"""

REMOVE_MEMBER = """
mutation RemoveMember($userId: ID!) {
  removeMember(userId: $userId) {
    __typename
    ... on User { id }
    ... on Error { code message }
  }
}
"""

DELETE_CLIENT = """
mutation DeleteClient($id: ID!) {
  deleteClient(id: $id) {
    __typename
    ... on Client { id }
    ... on Error { code message }
  }
}
"""

CREATE_CONTACT = """
mutation CreateContact($input: CreateContactInput!) {
  createContact(input: $input) {
    __typename
    ... on Contact { id name }
    ... on Error { code message }
  }
}
"""

UPDATE_CONTACT = """
mutation UpdateContact($id: ID!, $input: UpdateContactInput!) {
  updateContact(id: $id, input: $input) {
    __typename
    ... on Contact { id name }
    ... on Error { code message }
  }
}
"""

SET_PRIMARY_CONTACT = """
mutation SetPrimaryContact($id: ID!) {
  setPrimaryContact(id: $id) {
    __typename
    ... on Contact { id isPrimary }
    ... on Error { code message }
  }
}
"""

DELETE_CONTACT = """
mutation DeleteContact($id: ID!) {
  deleteContact(id: $id) {
    __typename
    ... on Contact { id }
    ... on Error { code message }
  }
}
"""

ADD_NOTE = """
mutation AddNote($input: AddNoteInput!) {
  addNote(input: $input) {
    __typename
    ... on Note { id body }
    ... on Error { code message }
  }
}
"""

UPDATE_NOTE = """
mutation UpdateNote($id: ID!, $input: UpdateNoteInput!) {
  updateNote(id: $id, input: $input) {
    __typename
    ... on Note { id body }
    ... on Error { code message }
  }
}
"""

DELETE_NOTE = """
mutation DeleteNote($id: ID!) {
  deleteNote(id: $id) {
    __typename
    ... on Note { id }
    ... on Error { code message }
  }
}
"""

INVITE_MEMBER = """
mutation InviteMember($input: InviteMemberInput!) {
  inviteMember(input: $input) {
    __typename
    ... on Invitation { id email }
    ... on Error { code message }
  }
}
"""

LISTS_QUERY = """
query Lists {
  clients(first: 100) {
    totalCount
    edges {
      node {
        id
        contacts { id clientId }
        notes(first: 100) { totalCount edges { node { id clientId } } }
        unpinnedNotes: notes(first: 100, pinned: false) { totalCount edges { node { id } } }
        timeline(first: 100) { totalCount edges { node { id clientId client { id } } } }
      }
    }
  }
  timeline(first: 100) { totalCount edges { node { id clientId client { id } } } }
}
"""

NOTIFICATION_PREFERENCES_QUERY = """
query NotificationPreferences($contactId: ID) {
  notificationPreferences(contactId: $contactId) { __typename kind }
}
"""

UPDATE_NOTIFICATION_PREFERENCES = """
mutation UpdateNotificationPreferences(
  $contactId: ID
  $preferences: [NotificationPreferenceInput!]!
) {
  updateNotificationPreferences(contactId: $contactId, preferences: $preferences) {
    __typename
    ... on Error { code message }
  }
}
"""

REQUEST_PAYMENT = """
mutation RequestPayment($milestoneIds: [ID!]!) {
  requestPayment(milestoneIds: $milestoneIds) {
    __typename
    ... on Error { code message }
  }
}
"""

MILESTONE_QUERY = """
query Milestone($id: ID!) {
  milestone(id: $id) { __typename id title }
}
"""

MILESTONES_QUERY = """
query Milestones($filter: MilestoneFilter) {
  milestones(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id title } }
  }
}
"""

CREATE_MILESTONE = """
mutation CreateMilestone($input: CreateMilestoneInput!) {
  createMilestone(input: $input) {
    __typename
    ... on Milestone { id }
    ... on Error { code message }
  }
}
"""

UPDATE_MILESTONE = """
mutation UpdateMilestone($id: ID!, $input: UpdateMilestoneInput!) {
  updateMilestone(id: $id, input: $input) {
    __typename
    ... on Milestone { id amount { amount } }
    ... on Error { code message }
  }
}
"""


def milestone_action(field: str, *arguments: str) -> str:
    """A milestone transition taking ``$id`` and the given String! arguments."""
    declared = "".join(f", ${name}: String!" for name in arguments)
    passed = "".join(f", {name}: ${name}" for name in arguments)
    return f"""
mutation Action($id: ID!{declared}) {{
  {field}(id: $id{passed}) {{
    __typename
    ... on Milestone {{ id status }}
    ... on Error {{ code message }}
  }}
}}
"""


APPLY_PAYMENT_TERMS = """
mutation ApplyPaymentTerms($projectId: ID!, $total: String!) {
  applyPaymentTerms(projectId: $projectId, total: $total) {
    __typename
    ... on PaymentTerms { milestones { id } }
    ... on Error { code message }
  }
}
"""

PROJECT_QUERY = """
query Project($id: ID!) {
  project(id: $id) { __typename id name }
}
"""

PROJECTS_QUERY = """
query Projects($filter: ProjectFilter) {
  projects(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id name } }
  }
}
"""

CREATE_PROJECT = """
mutation CreateProject($input: CreateProjectInput!) {
  createProject(input: $input) {
    __typename
    ... on Project { id name }
    ... on Error { code message }
  }
}
"""

UPDATE_PROJECT = """
mutation UpdateProject($id: ID!, $input: UpdateProjectInput!) {
  updateProject(id: $id, input: $input) {
    __typename
    ... on Project { id name }
    ... on Error { code message }
  }
}
"""

ARCHIVE_PROJECT = """
mutation ArchiveProject($id: ID!) {
  archiveProject(id: $id) {
    __typename
    ... on Project { id archivedAt }
    ... on Error { code message }
  }
}
"""

DELIVERABLE_QUERY = """
query Deliverable($id: ID!) {
  deliverable(id: $id) { __typename id title }
}
"""

DELIVERABLES_QUERY = """
query Deliverables($filter: DeliverableFilter) {
  deliverables(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id title } }
  }
}
"""

DELIVERABLE_DOWNLOAD_URL = """
query DeliverableDownloadUrl($id: ID!) {
  deliverableDownloadUrl(id: $id) {
    __typename
    ... on DownloadUrl { url }
    ... on Error { code message }
  }
}
"""

CREATE_DELIVERABLE_UPLOAD = """
mutation CreateDeliverableUpload($input: CreateDeliverableUploadInput!) {
  createDeliverableUpload(input: $input) {
    __typename
    ... on DeliverableUpload { uploadUrl deliverable { id } }
    ... on Error { code message }
  }
}
"""

DELETE_DELIVERABLE = """
mutation DeleteDeliverable($id: ID!) {
  deleteDeliverable(id: $id) {
    __typename
    ... on Deliverable { id }
    ... on Error { code message }
  }
}
"""

TASK_QUERY = """
query Task($id: ID!) {
  task(id: $id) { __typename id title }
}
"""

TASKS_QUERY = """
query Tasks($filter: TaskFilter) {
  tasks(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id title } }
  }
}
"""


def task_mutation(field: str, signature: str, arguments: str) -> str:
    """A task mutation answering with the task (or an error)."""
    return f"""
mutation Action({signature}) {{
  {field}({arguments}) {{
    __typename
    ... on Task {{ id title status }}
    ... on Error {{ code message }}
  }}
}}
"""


REORDER_TASKS = """
mutation ReorderTasks($projectId: ID!, $taskIds: [ID!]!) {
  reorderTasks(projectId: $projectId, taskIds: $taskIds) {
    __typename
    ... on ReorderedTasks { tasks { id position } }
    ... on Error { code message }
  }
}
"""

TIME_ENTRY_QUERY = """
query TimeEntry($id: ID!) {
  timeEntry(id: $id) { __typename id minutes }
}
"""

TIME_ENTRIES_QUERY = """
query TimeEntries($filter: TimeEntryFilter) {
  timeEntries(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id minutes } }
  }
}
"""

TIME_SUMMARY_QUERY = """
query TimeSummary($projectId: ID!) {
  timeSummary(projectId: $projectId) { __typename minutes byUser { minutes } }
}
"""


def time_entry_mutation(field: str, signature: str, arguments: str) -> str:
    """A time entry mutation answering with the entry (or an error)."""
    return f"""
mutation Action({signature}) {{
  {field}({arguments}) {{
    __typename
    ... on TimeEntry {{ id minutes isRunning }}
    ... on Error {{ code message }}
  }}
}}
"""


INVOICE_QUERY = """
query Invoice($id: ID!) {
  invoice(id: $id) { __typename id status }
}
"""

INVOICES_QUERY = """
query Invoices($filter: InvoiceFilter) {
  invoices(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id status } }
  }
}
"""

INVOICE_PREVIEW_URL = """
query InvoicePreviewUrl($id: ID!) {
  invoicePreviewUrl(id: $id) {
    __typename
    ... on DownloadUrl { url }
    ... on Error { code message }
  }
}
"""


def invoice_mutation(
    field: str, signature: str, arguments: str, success: str = "Invoice { id status }"
) -> str:
    """An invoice mutation answering with ``success`` (a type and its selection) or an error."""
    return f"""
mutation Action({signature}) {{
  {field}({arguments}) {{
    __typename
    ... on {success}
    ... on Error {{ code message }}
  }}
}}
"""


CREDIT_NOTE_QUERY = """
query CreditNote($id: ID!) {
  creditNote(id: $id) { __typename id number }
}
"""

CREDIT_NOTES_QUERY = """
query CreditNotes($filter: CreditNoteFilter) {
  creditNotes(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id number } }
  }
}
"""

PAYMENT_QUERY = """
query Payment($id: ID!) {
  payment(id: $id) { __typename id status }
}
"""

PAYMENTS_QUERY = """
query Payments($filter: PaymentFilter) {
  payments(first: 100, filter: $filter) {
    __typename
    totalCount
    edges { node { id status } }
  }
}
"""

PROJECT_PAYMENT_STATUS_QUERY = """
query ProjectPaymentStatus($projectId: ID!) {
  projectPaymentStatus(projectId: $projectId) { __typename total { amount } }
}
"""

DELIVERABLE_ACCESS_QUERY = """
query DeliverableAccess($projectId: ID!) {
  deliverableAccess(projectId: $projectId) { __typename deliverableId clientCanOpen reason }
}
"""


def payment_mutation(field: str, signature: str, arguments: str, success: str) -> str:
    """A payment mutation answering with ``success`` (a type and its selection) or an error."""
    return f"""
mutation Action({signature}) {{
  {field}({arguments}) {{
    __typename
    ... on {success}
    ... on Error {{ code message }}
  }}
}}
"""


IMPORT_QUERY = """
query Import($id: ID!) {
  import(id: $id) { __typename id status }
}
"""

PREVIEW_IMPORT = """
mutation PreviewImport($id: ID!) {
  previewImport(id: $id) {
    __typename
    ... on ImportPreview { header import { id } }
    ... on Error { code message }
  }
}
"""

START_IMPORT = """
mutation StartImport($id: ID!) {
  startImport(id: $id) {
    __typename
    ... on Import { id status }
    ... on Error { code message }
  }
}
"""


PAYER_ONLY = "Only the client lead, an owner or an admin starts payments"

# --- the registry -----------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The ids a probe aims at: a client, a contact and a note of it, a project, a milestone."""

    client_id: str
    contact_id: str  # not the primary one, so setPrimaryContact would have work to do
    note_id: str
    project_id: str
    milestone_id: str  # pending
    deliverable_id: str  # uploaded (ready)
    task_id: str  # the project's only task, assigned to user_id
    time_entry_id: str  # stopped, not billed, on task_id, logged by user_id
    user_id: str  # the agency member who logged time_entry_id
    invoice_id: str  # a draft of the project, with one line
    invoice_line_id: str  # that line
    issued_invoice_id: str  # a sent invoice of the project, with payment_id under way
    payment_id: str  # a pending sandbox payment of issued_invoice_id, its checkout made
    credit_note_id: str  # a credit note of 10.00 on issued_invoice_id (the 40.00 due is paying)
    export_id: str  # a pending export of the client's invoices, asked for by its client lead
    import_id: str  # a CSV import of clients, its file uploaded, not started

    @classmethod
    def unknown(cls) -> Target:
        """Ids that exist in no agency."""
        return cls(*(str(uuid.uuid4()) for _ in fields(cls)))

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(
            {
                self.client_id,
                self.contact_id,
                self.note_id,
                self.project_id,
                self.milestone_id,
                self.deliverable_id,
                self.task_id,
                self.time_entry_id,
                self.user_id,
                self.invoice_id,
                self.invoice_line_id,
                self.issued_invoice_id,
                self.payment_id,
                self.credit_note_id,
                self.export_id,
                self.import_id,
            }
        )


class Answer(Enum):
    NULL = "null"  # a nullable lookup: null
    EMPTY = "empty"  # a list: an empty connection
    NOT_FOUND = "not found"  # a mutation: NotFoundError, nothing written
    ERROR = "error"  # a non-null query: one top-level NOT_FOUND error, data null


@dataclass(frozen=True)
class Probe:
    operation: str
    variables: Callable[[Target], dict[str, Any]]
    answer: Answer
    # __typename the agency's own member gets for the same request (proves the probe aims right)
    found: str
    # the entity the NotFoundError names
    entity: str = ""
    # a client viewer is refused by role before any lookup, whatever the id
    viewer_denied: bool = False
    # the message of that refusal
    denied_message: str = "You are not allowed to do this"

    def refusal(self, field: str, *, denied: bool = False) -> dict[str, Any]:
        """The exact answer for an id the caller may not see."""
        if self.answer is Answer.ERROR:
            code, message = (
                ("PERMISSION_DENIED", self.denied_message)
                if denied
                else ("NOT_FOUND", f"{self.entity or self.found} not found")
            )
            return {"data": None, "errors": [{"code": code, "message": message}]}
        if self.answer is Answer.NULL:
            return {field: None}
        if self.answer is Answer.EMPTY:
            return {field: {"__typename": self.found, "totalCount": 0, "edges": []}}
        if denied:
            return {
                field: {
                    "__typename": "PermissionDeniedError",
                    "code": "PERMISSION_DENIED",
                    "message": self.denied_message,
                }
            }
        return {
            field: {
                "__typename": "NotFoundError",
                "code": "NOT_FOUND",
                "message": f"{self.entity or self.found} not found",
            }
        }

    async def send(self, gql: GraphQLClient, target: Target, token: str) -> dict[str, Any]:
        """The answer to this probe's request: ``data``, or (ERROR) the data and error codes."""
        if self.answer is not Answer.ERROR:
            data: dict[str, Any] = await gql.execute(
                self.operation, self.variables(target), token=token
            )
            return data
        body = await gql.execute(
            self.operation, self.variables(target), token=token, expect_errors=True
        )
        errors = [
            {"code": error["extensions"]["code"], "message": error["message"]}
            for error in body.get("errors", [])
        ]
        return {"data": body["data"], "errors": errors} if errors else body["data"]

    def assert_found(self, field: str, data: dict[str, Any]) -> None:
        """The same request by the rows' own agency reaches them."""
        result = data[field]
        assert result is not None, f"{field}: the owner gets null for its own row"
        if self.answer is Answer.ERROR:
            assert result, f"{field}: the owner gets nothing for its own row"
            result = result[0]
        assert result["__typename"] == self.found, result
        if self.answer is Answer.EMPTY:
            assert result["totalCount"] > 0, result


REGISTRY: dict[str, Probe] = {
    "client": Probe(CLIENT_QUERY, lambda t: {"id": t.client_id}, Answer.NULL, "Client"),
    "contact": Probe(CONTACT_QUERY, lambda t: {"id": t.contact_id}, Answer.NULL, "Contact"),
    "note": Probe(NOTE_QUERY, lambda t: {"id": t.note_id}, Answer.NULL, "Note"),
    "timeline": Probe(
        TIMELINE_QUERY,
        lambda t: {"filter": {"clientId": t.client_id}},
        Answer.EMPTY,
        "ActivityEventConnection",
    ),
    "updateClient": Probe(
        UPDATE_CLIENT,
        lambda t: {"id": t.client_id, "input": {"name": "Taken over", "isActive": False}},
        Answer.NOT_FOUND,
        "Client",
    ),
    "deleteClient": Probe(DELETE_CLIENT, lambda t: {"id": t.client_id}, Answer.NOT_FOUND, "Client"),
    "createContact": Probe(
        CREATE_CONTACT,
        lambda t: {"input": {"clientId": t.client_id, "name": "Planted", "isPrimary": True}},
        Answer.NOT_FOUND,
        "Contact",
        entity="Client",
        viewer_denied=True,
    ),
    "updateContact": Probe(
        UPDATE_CONTACT,
        lambda t: {"id": t.contact_id, "input": {"name": "Renamed", "email": "x@rival.test"}},
        Answer.NOT_FOUND,
        "Contact",
    ),
    "setPrimaryContact": Probe(
        SET_PRIMARY_CONTACT, lambda t: {"id": t.contact_id}, Answer.NOT_FOUND, "Contact"
    ),
    "deleteContact": Probe(
        DELETE_CONTACT, lambda t: {"id": t.contact_id}, Answer.NOT_FOUND, "Contact"
    ),
    "addNote": Probe(
        ADD_NOTE,
        lambda t: {"input": {"clientId": t.client_id, "body": "Planted", "pinned": True}},
        Answer.NOT_FOUND,
        "Note",
        entity="Client",
        viewer_denied=True,
    ),
    "updateNote": Probe(
        UPDATE_NOTE,
        lambda t: {"id": t.note_id, "input": {"body": "Rewritten", "pinned": True}},
        Answer.NOT_FOUND,
        "Note",
    ),
    "deleteNote": Probe(DELETE_NOTE, lambda t: {"id": t.note_id}, Answer.NOT_FOUND, "Note"),
    "inviteMember": Probe(
        INVITE_MEMBER,
        lambda t: {
            "input": {"email": "spy@rival.test", "role": "CLIENT_VIEWER", "clientId": t.client_id}
        },
        Answer.NOT_FOUND,
        "Invitation",
        entity="Client",
        viewer_denied=True,
    ),
    # The target user is the owner, who is told they cannot remove themselves.
    "removeMember": Probe(
        REMOVE_MEMBER,
        lambda t: {"userId": t.user_id},
        Answer.NOT_FOUND,
        "ValidationError",
        entity="User",
        viewer_denied=True,
    ),
    "project": Probe(PROJECT_QUERY, lambda t: {"id": t.project_id}, Answer.NULL, "Project"),
    "projects": Probe(
        PROJECTS_QUERY,
        lambda t: {"filter": {"clientId": t.client_id, "includeArchived": True}},
        Answer.EMPTY,
        "ProjectConnection",
    ),
    "createProject": Probe(
        CREATE_PROJECT,
        lambda t: {"input": {"clientId": t.client_id, "name": "Planted", "budget": "1.00"}},
        Answer.NOT_FOUND,
        "Project",
        entity="Client",
        viewer_denied=True,
    ),
    "updateProject": Probe(
        UPDATE_PROJECT,
        lambda t: {"id": t.project_id, "input": {"name": "Taken over", "status": "CANCELLED"}},
        Answer.NOT_FOUND,
        "Project",
    ),
    "archiveProject": Probe(
        ARCHIVE_PROJECT, lambda t: {"id": t.project_id}, Answer.NOT_FOUND, "Project"
    ),
    "milestone": Probe(MILESTONE_QUERY, lambda t: {"id": t.milestone_id}, Answer.NULL, "Milestone"),
    # A list of the contact's preferences: another agency's contact is a top-level error.
    "notificationPreferences": Probe(
        NOTIFICATION_PREFERENCES_QUERY,
        lambda t: {"contactId": t.contact_id},
        Answer.ERROR,
        "NotificationPreference",
        entity="Contact",
        viewer_denied=True,
    ),
    "updateNotificationPreferences": Probe(
        UPDATE_NOTIFICATION_PREFERENCES,
        lambda t: {
            "contactId": t.contact_id,
            "preferences": [
                {"kind": "ADVANCE_PAYMENT_REMINDER", "channels": ["EMAIL"], "frequency": "OFF"}
            ],
        },
        Answer.NOT_FOUND,
        "NotificationPreferences",
        entity="Contact",
        viewer_denied=True,
    ),
    # The target's contact has no email: the owner is told there is nobody to ask.
    "requestPayment": Probe(
        REQUEST_PAYMENT,
        lambda t: {"milestoneIds": [t.milestone_id]},
        Answer.NOT_FOUND,
        "ValidationError",
        entity="Milestone",
        viewer_denied=True,
    ),
    "milestones": Probe(
        MILESTONES_QUERY,
        lambda t: {"filter": {"projectId": t.project_id}},
        Answer.EMPTY,
        "MilestoneConnection",
    ),
    "createMilestone": Probe(
        CREATE_MILESTONE,
        lambda t: {"input": {"projectId": t.project_id, "title": "Planted", "amount": "1.00"}},
        Answer.NOT_FOUND,
        "Milestone",
        entity="Project",
        viewer_denied=True,
    ),
    "updateMilestone": Probe(
        UPDATE_MILESTONE,
        lambda t: {"id": t.milestone_id, "input": {"title": "Taken", "amount": "0.01"}},
        Answer.NOT_FOUND,
        "Milestone",
    ),
    # The target milestone is pending: the owner's own request proves it reached the row
    # when it starts or cancels it, or is told the move is not allowed from pending.
    "startMilestone": Probe(
        milestone_action("startMilestone"),
        lambda t: {"id": t.milestone_id},
        Answer.NOT_FOUND,
        "Milestone",
    ),
    "submitMilestone": Probe(
        milestone_action("submitMilestone"),
        lambda t: {"id": t.milestone_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Milestone",
    ),
    "approveMilestone": Probe(
        milestone_action("approveMilestone"),
        lambda t: {"id": t.milestone_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Milestone",
    ),
    "rejectMilestone": Probe(
        milestone_action("rejectMilestone", "reason"),
        lambda t: {"id": t.milestone_id, "reason": "Not good enough"},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Milestone",
    ),
    "cancelMilestone": Probe(
        milestone_action("cancelMilestone", "reason"),
        lambda t: {"id": t.milestone_id, "reason": "Sabotage"},
        Answer.NOT_FOUND,
        "Milestone",
    ),
    "markMilestonePaid": Probe(
        milestone_action("markMilestonePaid", "reference"),
        lambda t: {"id": t.milestone_id, "reference": "FAKE-1"},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Milestone",
    ),
    "applyPaymentTerms": Probe(
        APPLY_PAYMENT_TERMS,
        lambda t: {"projectId": t.project_id, "total": "100.00"},
        Answer.NOT_FOUND,
        "PaymentTerms",
        entity="Project",
        viewer_denied=True,
    ),
    "deliverable": Probe(
        DELIVERABLE_QUERY, lambda t: {"id": t.deliverable_id}, Answer.NULL, "Deliverable"
    ),
    "deliverables": Probe(
        DELIVERABLES_QUERY,
        lambda t: {"filter": {"projectId": t.project_id}},
        Answer.EMPTY,
        "DeliverableConnection",
    ),
    "deliverableDownloadUrl": Probe(
        DELIVERABLE_DOWNLOAD_URL,
        lambda t: {"id": t.deliverable_id},
        Answer.NOT_FOUND,
        "DownloadUrl",
        entity="Deliverable",
    ),
    "createDeliverableUpload": Probe(
        CREATE_DELIVERABLE_UPLOAD,
        lambda t: {
            "input": {
                "projectId": t.project_id,
                "milestoneId": t.milestone_id,
                "title": "Planted",
                "kind": "FINAL",
                "filename": "planted.zip",
                "contentType": "application/zip",
                "sizeBytes": 10,
            }
        },
        Answer.NOT_FOUND,
        "DeliverableUpload",
        entity="Project",
        viewer_denied=True,
    ),
    "deleteDeliverable": Probe(
        DELETE_DELIVERABLE, lambda t: {"id": t.deliverable_id}, Answer.NOT_FOUND, "Deliverable"
    ),
    "task": Probe(TASK_QUERY, lambda t: {"id": t.task_id}, Answer.NULL, "Task"),
    "tasks": Probe(
        TASKS_QUERY,
        lambda t: {"filter": {"projectId": t.project_id, "assigneeId": t.user_id}},
        Answer.EMPTY,
        "TaskConnection",
    ),
    "createTask": Probe(
        task_mutation("createTask", "$input: CreateTaskInput!", "input: $input"),
        lambda t: {
            "input": {"projectId": t.project_id, "title": "Planted", "assigneeId": t.user_id}
        },
        Answer.NOT_FOUND,
        "Task",
        entity="Project",
        viewer_denied=True,
    ),
    "updateTask": Probe(
        task_mutation("updateTask", "$id: ID!, $input: UpdateTaskInput!", "id: $id, input: $input"),
        lambda t: {"id": t.task_id, "input": {"title": "Taken over", "assigneeId": t.user_id}},
        Answer.NOT_FOUND,
        "Task",
    ),
    "setTaskStatus": Probe(
        task_mutation(
            "setTaskStatus", "$id: ID!, $status: TaskStatus!", "id: $id, status: $status"
        ),
        lambda t: {"id": t.task_id, "status": "COMPLETED"},
        Answer.NOT_FOUND,
        "Task",
    ),
    "deleteTask": Probe(
        task_mutation("deleteTask", "$id: ID!", "id: $id"),
        lambda t: {"id": t.task_id},
        Answer.NOT_FOUND,
        "Task",
    ),
    "reorderTasks": Probe(
        REORDER_TASKS,
        lambda t: {"projectId": t.project_id, "taskIds": [t.task_id]},
        Answer.NOT_FOUND,
        "ReorderedTasks",
        entity="Project",
        viewer_denied=True,
    ),
    "timeEntry": Probe(
        TIME_ENTRY_QUERY, lambda t: {"id": t.time_entry_id}, Answer.NULL, "TimeEntry"
    ),
    "timeEntries": Probe(
        TIME_ENTRIES_QUERY,
        lambda t: {"filter": {"projectId": t.project_id, "userId": t.user_id, "taskId": t.task_id}},
        Answer.EMPTY,
        "TimeEntryConnection",
    ),
    "timeSummary": Probe(
        TIME_SUMMARY_QUERY, lambda t: {"projectId": t.project_id}, Answer.NULL, "TimeSummary"
    ),
    "logTime": Probe(
        time_entry_mutation("logTime", "$input: LogTimeInput!", "input: $input"),
        lambda t: {"input": {"projectId": t.project_id, "taskId": t.task_id, "hours": "1"}},
        Answer.NOT_FOUND,
        "TimeEntry",
        entity="Project",
        viewer_denied=True,
    ),
    "updateTimeEntry": Probe(
        time_entry_mutation(
            "updateTimeEntry", "$id: ID!, $input: UpdateTimeEntryInput!", "id: $id, input: $input"
        ),
        lambda t: {"id": t.time_entry_id, "input": {"hours": "8", "taskId": t.task_id}},
        Answer.NOT_FOUND,
        "TimeEntry",
    ),
    "deleteTimeEntry": Probe(
        time_entry_mutation("deleteTimeEntry", "$id: ID!", "id: $id"),
        lambda t: {"id": t.time_entry_id},
        Answer.NOT_FOUND,
        "TimeEntry",
    ),
    "startTimer": Probe(
        time_entry_mutation(
            "startTimer", "$projectId: ID!, $taskId: ID", "projectId: $projectId, taskId: $taskId"
        ),
        lambda t: {"projectId": t.project_id, "taskId": t.task_id},
        Answer.NOT_FOUND,
        "TimeEntry",
        entity="Project",
        viewer_denied=True,
    ),
    "invoice": Probe(INVOICE_QUERY, lambda t: {"id": t.invoice_id}, Answer.NULL, "Invoice"),
    "invoices": Probe(
        INVOICES_QUERY,
        lambda t: {"filter": {"clientId": t.client_id, "projectId": t.project_id}},
        Answer.EMPTY,
        "InvoiceConnection",
    ),
    "invoicePreviewUrl": Probe(
        INVOICE_PREVIEW_URL,
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "DownloadUrl",
        entity="Invoice",
    ),
    "createInvoice": Probe(
        invoice_mutation("createInvoice", "$input: CreateInvoiceInput!", "input: $input"),
        lambda t: {
            "input": {
                "clientId": t.client_id,
                "projectId": t.project_id,
                "lines": [{"description": "Planted", "quantity": "1", "unitPrice": "1.00"}],
            }
        },
        Answer.NOT_FOUND,
        "Invoice",
        entity="Client",
        viewer_denied=True,
    ),
    "updateInvoice": Probe(
        invoice_mutation(
            "updateInvoice", "$id: ID!, $input: UpdateInvoiceInput!", "id: $id, input: $input"
        ),
        lambda t: {"id": t.invoice_id, "input": {"notes": "Taken over", "taxRate": "99"}},
        Answer.NOT_FOUND,
        "Invoice",
    ),
    "addInvoiceLine": Probe(
        invoice_mutation(
            "addInvoiceLine",
            "$invoiceId: ID!, $input: InvoiceLineInput!",
            "invoiceId: $invoiceId, input: $input",
            "InvoiceLinePayload { line { id } }",
        ),
        lambda t: {
            "invoiceId": t.invoice_id,
            "input": {"description": "Planted", "quantity": "1", "unitPrice": "1.00"},
        },
        Answer.NOT_FOUND,
        "InvoiceLinePayload",
        entity="Invoice",
    ),
    "updateInvoiceLine": Probe(
        invoice_mutation(
            "updateInvoiceLine",
            "$id: ID!, $input: UpdateInvoiceLineInput!",
            "id: $id, input: $input",
            "InvoiceLinePayload { line { id } }",
        ),
        lambda t: {"id": t.invoice_line_id, "input": {"unitPrice": "0.01"}},
        Answer.NOT_FOUND,
        "InvoiceLinePayload",
        entity="InvoiceLine",
    ),
    "removeInvoiceLine": Probe(
        invoice_mutation("removeInvoiceLine", "$id: ID!", "id: $id"),
        lambda t: {"id": t.invoice_line_id},
        Answer.NOT_FOUND,
        "Invoice",
        entity="InvoiceLine",
    ),
    "deleteInvoice": Probe(
        invoice_mutation("deleteInvoice", "$id: ID!", "id: $id", "DeletedInvoice { id }"),
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "DeletedInvoice",
        entity="Invoice",
    ),
    "finalizeInvoice": Probe(
        invoice_mutation("finalizeInvoice", "$id: ID!", "id: $id"),
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "Invoice",
    ),
    "sendInvoice": Probe(
        invoice_mutation(
            "sendInvoice", "$id: ID!, $to: [String!]", 'id: $id, to: $to, message: "Hi"'
        ),
        lambda t: {"id": t.invoice_id, "to": ["spy@rival.test"]},
        Answer.NOT_FOUND,
        "Invoice",
    ),
    # The target invoice is a draft: the owner's own request proves it reached the row
    # when it is told the move is not allowed from draft.
    "resendInvoiceEmail": Probe(
        invoice_mutation("resendInvoiceEmail", "$id: ID!", "id: $id"),
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Invoice",
    ),
    "markInvoiceViewed": Probe(
        invoice_mutation("markInvoiceViewed", "$id: ID!", "id: $id"),
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Invoice",
    ),
    "voidInvoice": Probe(
        invoice_mutation("voidInvoice", "$id: ID!", 'id: $id, reason: "Sabotage"'),
        lambda t: {"id": t.invoice_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Invoice",
    ),
    # The target's time has no rate and its milestone is pending: the owner is told there
    # is nothing to bill, which only a request that reached the rows can learn.
    "createInvoiceFromTimeEntries": Probe(
        invoice_mutation(
            "createInvoiceFromTimeEntries",
            "$projectId: ID!",
            'projectId: $projectId, from: "2026-03-01", to: "2026-03-31", groupBy: USER',
        ),
        lambda t: {"projectId": t.project_id},
        Answer.NOT_FOUND,
        "ValidationError",
        entity="Project",
        viewer_denied=True,
    ),
    "createInvoiceFromMilestones": Probe(
        invoice_mutation(
            "createInvoiceFromMilestones", "$milestoneIds: [ID!]!", "milestoneIds: $milestoneIds"
        ),
        lambda t: {"milestoneIds": [t.milestone_id]},
        Answer.NOT_FOUND,
        "ValidationError",
        entity="Milestone",
        viewer_denied=True,
    ),
    "createInvoiceUpload": Probe(
        invoice_mutation(
            "createInvoiceUpload",
            "$invoiceId: ID!",
            'invoiceId: $invoiceId, filename: "planted.pdf", sizeBytes: 1000',
            "InvoiceUpload { uploadUrl invoice { id } }",
        ),
        lambda t: {"invoiceId": t.invoice_id},
        Answer.NOT_FOUND,
        "InvoiceUpload",
        entity="Invoice",
    ),
    "createPaymentUpload": Probe(
        invoice_mutation(
            "createPaymentUpload",
            "$paymentId: ID!",
            'paymentId: $paymentId, filename: "planted.pdf", sizeBytes: 1000',
            "InvoiceUpload { uploadUrl invoice { id } }",
        ),
        lambda t: {"paymentId": t.payment_id},
        Answer.NOT_FOUND,
        "InvoiceUpload",
        entity="Payment",
    ),
    "creditNote": Probe(
        CREDIT_NOTE_QUERY, lambda t: {"id": t.credit_note_id}, Answer.NULL, "CreditNote"
    ),
    "creditNotes": Probe(
        CREDIT_NOTES_QUERY,
        lambda t: {"filter": {"invoiceId": t.issued_invoice_id, "clientId": t.client_id}},
        Answer.EMPTY,
        "CreditNoteConnection",
    ),
    # More than the 40.00 due: the owner is told the amount is out of range, which only a
    # request that reached the invoice can learn (and nothing is credited).
    "issueCreditNote": Probe(
        invoice_mutation(
            "issueCreditNote",
            "$input: IssueCreditNoteInput!",
            "input: $input",
            "CreditNotePayload { creditNote { id } }",
        ),
        lambda t: {
            "input": {"invoiceId": t.issued_invoice_id, "amount": "999.00", "reason": "Planted"}
        },
        Answer.NOT_FOUND,
        "ValidationError",
        entity="Invoice",
        viewer_denied=True,
    ),
    "import": Probe(IMPORT_QUERY, lambda t: {"id": t.import_id}, Answer.NULL, "Import"),
    "previewImport": Probe(
        PREVIEW_IMPORT,
        lambda t: {"id": t.import_id},
        Answer.NOT_FOUND,
        "ImportPreview",
        entity="Import",
    ),
    "startImport": Probe(
        START_IMPORT, lambda t: {"id": t.import_id}, Answer.NOT_FOUND, "Import", entity="Import"
    ),
    "payment": Probe(PAYMENT_QUERY, lambda t: {"id": t.payment_id}, Answer.NULL, "Payment"),
    "payments": Probe(
        PAYMENTS_QUERY,
        lambda t: {"filter": {"clientId": t.client_id, "projectId": t.project_id}},
        Answer.EMPTY,
        "PaymentConnection",
    ),
    "projectPaymentStatus": Probe(
        PROJECT_PAYMENT_STATUS_QUERY,
        lambda t: {"projectId": t.project_id},
        Answer.NULL,
        "ProjectPaymentStatus",
    ),
    "deliverableAccess": Probe(
        DELIVERABLE_ACCESS_QUERY,
        lambda t: {"projectId": t.project_id},
        Answer.ERROR,
        "DeliverableAccess",
        entity="Project",
        viewer_denied=True,
    ),
    # The target milestone is pending: the owner is told it is not payable yet.
    "payMilestones": Probe(
        payment_mutation(
            "payMilestones",
            "$milestoneIds: [ID!]!",
            "milestoneIds: $milestoneIds",
            "PaymentCheckout { payment { id } }",
        ),
        lambda t: {"milestoneIds": [t.milestone_id]},
        Answer.NOT_FOUND,
        "ValidationError",
        entity="Milestone",
        viewer_denied=True,
        denied_message=PAYER_ONLY,
    ),
    # The issued invoice's payment is under way: the owner gets its checkout again.
    "payInvoice": Probe(
        payment_mutation(
            "payInvoice",
            "$invoiceId: ID!",
            "invoiceId: $invoiceId",
            "PaymentCheckout { resumed payment { id } }",
        ),
        lambda t: {"invoiceId": t.issued_invoice_id},
        Answer.NOT_FOUND,
        "PaymentCheckout",
        entity="Invoice",
        viewer_denied=True,
        denied_message=PAYER_ONLY,
    ),
    # The target payment is pending: the owner is told it cannot be refunded yet.
    "refundPayment": Probe(
        payment_mutation(
            "refundPayment",
            "$paymentId: ID!",
            'paymentId: $paymentId, reason: "Sabotage"',
            "RefundPayload { refund { id } }",
        ),
        lambda t: {"paymentId": t.payment_id},
        Answer.NOT_FOUND,
        "InvalidTransitionError",
        entity="Payment",
    ),
    "overridePaymentStatus": Probe(
        payment_mutation(
            "overridePaymentStatus",
            "$paymentId: ID!",
            'paymentId: $paymentId, status: CANCELLED, reason: "Sabotage"',
            "Payment { id status }",
        ),
        lambda t: {"paymentId": t.payment_id},
        Answer.NOT_FOUND,
        "Payment",
    ),
    "recordOfflinePayment": Probe(
        payment_mutation(
            "recordOfflinePayment",
            "$invoiceId: ID!",
            'invoiceId: $invoiceId, amount: "1.00", method: CASH, reference: "Planted"',
            "Payment { id status }",
        ),
        lambda t: {"invoiceId": t.issued_invoice_id},
        Answer.NOT_FOUND,
        "Payment",
        entity="Invoice",
        viewer_denied=True,
    ),
    "export": Probe(EXPORT_QUERY, lambda t: {"id": t.export_id}, Answer.NULL, "Export"),
    # Invoices, which a client user may export too: the client is checked before the project.
    "createExport": Probe(
        CREATE_EXPORT,
        lambda t: {
            "input": {
                "entity": "INVOICES",
                "filter": {"clientId": t.client_id, "projectId": t.project_id},
            }
        },
        Answer.NOT_FOUND,
        "Export",
        entity="Client",
    ),
}

# --- reading the schema -----------------------------------------------------


def id_fields(graphql_schema: GraphQLSchema) -> dict[str, set[str]]:
    """Query and mutation fields that take an id, with each id's path ("id", "input.clientId")."""
    found: dict[str, set[str]] = {}
    for root in (graphql_schema.query_type, graphql_schema.mutation_type):
        if root is None:
            continue
        for name, field in root.fields.items():
            paths = {
                path
                for arg_name, arg in field.args.items()
                for path in _id_paths(arg.type, arg_name, frozenset())
            }
            if paths:
                found[name] = paths
    return found


def _id_paths(type_: GraphQLInputType, path: str, seen: frozenset[str]) -> Iterator[str]:
    named = get_named_type(type_)
    if isinstance(named, GraphQLScalarType) and named.name == "ID":
        yield path
    elif isinstance(named, GraphQLInputObjectType) and named.name not in seen:
        for name, field in named.fields.items():
            yield from _id_paths(field.type, f"{path}.{name}", seen | {named.name})


def filled_id_paths(variables: Any, ids: frozenset[str], path: str = "") -> Iterator[str]:
    """Paths of ``variables`` that hold one of ``ids`` (variables are named after arguments)."""
    if isinstance(variables, dict):
        for key, value in variables.items():
            yield from filled_id_paths(value, ids, f"{path}.{key}" if path else key)
    elif isinstance(variables, list):
        for item in variables:
            yield from filled_id_paths(item, ids, path)
    elif variables in ids:
        yield path


def registry_gaps(fields: dict[str, set[str]], registry: dict[str, Probe]) -> list[str]:
    """What the registry misses or gets wrong, one readable line per problem."""
    problems = [
        f"{name} takes an id ({', '.join(sorted(paths))}) but has no entry in REGISTRY "
        f"of tests/e2e/test_tenancy.py: add one so other tenants are proven not to reach it"
        for name, paths in sorted(fields.items())
        if name not in registry
    ]
    problems += [
        f"REGISTRY has {name}, which is not a query or mutation taking an id"
        for name in sorted(set(registry) - set(fields))
    ]
    for name in sorted(set(fields) & set(registry)):
        target = Target.unknown()
        filled = set(filled_id_paths(registry[name].variables(target), target.ids))
        if filled != fields[name]:
            problems.append(
                f"REGISTRY[{name!r}] puts target ids in {sorted(filled)}, "
                f"but the field's id slots are {sorted(fields[name])}"
            )
    return problems


# --- rows --------------------------------------------------------------------


@dataclass(frozen=True)
class Rows:
    client: Client
    primary: Contact
    contact: Contact
    note: Note
    project: Project
    milestone: Milestone
    deliverable: Deliverable
    task: Task
    time_entry: TimeEntry
    invoice: Invoice
    invoice_line: InvoiceLine
    issued_invoice: Invoice
    payment: Payment
    credit_note: CreditNote
    export: Export
    csv_import: CsvImport

    @property
    def target(self) -> Target:
        return Target(
            str(self.client.id),
            str(self.contact.id),
            str(self.note.id),
            str(self.project.id),
            str(self.milestone.id),
            str(self.deliverable.id),
            str(self.task.id),
            str(self.time_entry.id),
            str(self.time_entry.user_id),
            str(self.invoice.id),
            str(self.invoice_line.id),
            str(self.issued_invoice.id),
            str(self.payment.id),
            str(self.credit_note.id),
            str(self.export.id),
            str(self.csv_import.id),
        )


async def client_rows(account: Account, name: str) -> Rows:
    """A client with a primary and a second contact and a note, each on the timeline.

    And a project with a pending milestone, a task with an hour logged on it, a
    draft invoice with one line, and a sent invoice with a credit note and a sandbox
    payment of the rest under way, written directly (off the timeline, so the timeline
    counts below stay those of the CRM rows).
    """
    client = await create_client(account, name=name, email=f"{name.lower()}@example.com")
    primary = await create_contact(account, client, name=f"{name} Primary", primary=True)
    contact = await create_contact(account, client, name=f"{name} Second")
    note = await create_note(account, client, f"{name} internal note")
    project = await Project.create(
        agency_id=account.agency_id,
        client_id=client.id,
        name=f"{name} Website",
        currency="USD",
        advance_percent=40,
    )
    milestone = await Milestone.create(
        agency_id=account.agency_id,
        project_id=project.id,
        client_id=client.id,
        currency="USD",
        title=f"{name} Design",
        amount_minor=100_000,
    )
    deliverable = Deliverable(
        agency_id=account.agency_id,
        project_id=project.id,
        client_id=client.id,
        milestone_id=milestone.id,
        title=f"{name} Beta",
        kind=DeliverableKind.BETA,
        status=DeliverableStatus.READY,
        filename="beta.zip",
        content_type="application/zip",
        size_bytes=10,
    )
    deliverable.storage_key = f"deliverables/{account.agency_id}/{project.id}/{deliverable.id}"
    await deliverable.save()
    task = await Task.create(
        agency_id=account.agency_id,
        project_id=project.id,
        client_id=client.id,
        title=f"{name} Task",
        assignee_id=account.user.id,
    )
    time_entry = await TimeEntry.create(
        agency_id=account.agency_id,
        project_id=project.id,
        client_id=client.id,
        task_id=task.id,
        user_id=account.user.id,
        work_date=date(2026, 3, 2),
        minutes=60,
        currency="USD",
    )
    invoice = await Invoice.create(
        agency_id=account.agency_id,
        client_id=client.id,
        project_id=project.id,
        currency="USD",
        subtotal_minor=5_000,
        total_minor=5_000,
    )
    invoice_line = await InvoiceLine.create(
        agency_id=account.agency_id,
        invoice_id=invoice.id,
        description=f"{name} Hosting",
        quantity=Decimal(1),
        unit_price_minor=5_000,
        amount_minor=5_000,
    )
    issued_invoice = await Invoice.create(
        agency_id=account.agency_id,
        client_id=client.id,
        project_id=project.id,
        currency="USD",
        status=InvoiceStatus.SENT,
        number=f"{name}-0001",
        issue_date=date(2026, 3, 2),
        subtotal_minor=5_000,
        total_minor=5_000,
        amount_credited_minor=1_000,
    )
    credit_note = await CreditNote.create(
        agency_id=account.agency_id,
        invoice_id=issued_invoice.id,
        client_id=client.id,
        number=f"{name}-CN-0001",
        amount_minor=1_000,
        currency="USD",
        reason="Goodwill",
        issue_date=date(2026, 3, 3),
    )
    payment = await Payment.create(
        agency_id=account.agency_id,
        client_id=client.id,
        project_id=project.id,
        invoice_id=issued_invoice.id,
        provider=PaymentProvider.SANDBOX,
        status=PaymentStatus.PENDING,
        amount_minor=4_000,
        currency="USD",
        provider_order_id=f"sbx_{name}",
        checkout_url=f"http://settle.test/sandbox/pay/{name}",
    )
    await PaymentAllocation.create(
        agency_id=account.agency_id,
        payment_id=payment.id,
        invoice_id=issued_invoice.id,
        amount_minor=4_000,
    )
    # Pending, so a subscription to it listens; of the client, as a client user's export is.
    export = await Export.create(
        agency_id=account.agency_id,
        requested_by_id=account.user.id,
        client_id=client.id,
        entity=ExportEntity.INVOICES,
        columns=["id", "number"],
        total_rows=1,
    )
    import_id = uuid.uuid4()
    body = f"name\n{name} Imported\n".encode()
    csv_import = await CsvImport.create(
        id=import_id,
        agency_id=account.agency_id,
        created_by_id=account.user.id,
        entity=ImportEntity.CLIENTS,
        status=ImportStatus.UPLOADED,
        filename=f"{name}.csv",
        size_bytes=len(body),
        storage_key=f"imports/{account.agency_id}/{import_id}/source.csv",
    )
    await get_storage().put(csv_import.storage_key, _body(body))
    return Rows(
        client,
        primary,
        contact,
        note,
        project,
        milestone,
        deliverable,
        task,
        time_entry,
        invoice,
        invoice_line,
        issued_invoice,
        payment,
        credit_note,
        export,
        csv_import,
    )


async def _body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every table, to prove a refused request wrote nothing anywhere."""
    models = Tortoise.apps["settle"].values()
    return {
        model.__name__: await model.all().order_by(model._meta.pk_attr).values() for model in models
    }


def strings_in(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield value


async def agency_ids(agency_id: uuid.UUID) -> set[str]:
    """The ids of every row an agency owns."""
    ids: set[str] = set()
    for model in (
        Client,
        Contact,
        Note,
        ActivityEvent,
        User,
        Project,
        Milestone,
        Deliverable,
        Invoice,
        InvoiceLine,
        CreditNote,
        Export,
        CsvImport,
    ):
        rows = await model.filter(agency_id=agency_id).values_list("id", flat=True)
        ids |= {str(row) for row in rows}
    return ids


# --- the schema check ---------------------------------------------------------

NEW_FIELDS = """
input GadgetPartInput { projectId: ID! quantity: Int! }
input GadgetInput { parts: [GadgetPartInput!]! memo: String }
extend type Query { gadget(id: ID!): String search(term: String!): String }
extend type Mutation { createGadget(input: GadgetInput!): String }
"""


def test_registry_covers_every_id_field() -> None:
    # given every query and mutation of the served schema that takes an id
    fields = id_fields(schema._schema)
    # when they are held against the registry
    problems = registry_gaps(fields, REGISTRY)
    # then each has an entry whose variables aim at every id slot
    assert not problems, "\n".join(problems)
    assert {"client", "updateClient", "createContact", "inviteMember", "timeline"} <= set(fields)


def test_a_new_id_field_without_an_entry_is_named() -> None:
    # given the served schema plus a query taking an id and a mutation with an id deep in its input
    extended = extend_schema(schema._schema, parse(NEW_FIELDS))
    # when the registry is checked against it
    fields = id_fields(extended)
    problems = registry_gaps(fields, REGISTRY)
    # then both new fields, and only they, are named with their id slots
    assert fields["gadget"] == {"id"}
    assert fields["createGadget"] == {"input.parts.projectId"}
    assert problems == [
        "createGadget takes an id (input.parts.projectId) but has no entry in REGISTRY "
        "of tests/e2e/test_tenancy.py: add one so other tenants are proven not to reach it",
        "gadget takes an id (id) but has no entry in REGISTRY "
        "of tests/e2e/test_tenancy.py: add one so other tenants are proven not to reach it",
    ]


# --- the walk -----------------------------------------------------------------

FIELDS = sorted(REGISTRY)


@pytest.mark.parametrize("field", FIELDS, ids=FIELDS)
async def test_foreign_id(
    field: str, db: Backend, gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given the owner's client with contacts and a note, and the rival's own client
    probe = REGISTRY[field]
    victim = await client_rows(owner, "Acme")
    await client_rows(rival, "Rivalco")
    await db.drain()
    before = await snapshot()

    # when the rival sends the owner's ids, and then ids that exist nowhere
    foreign = await probe.send(gql, victim.target, rival.token)
    unknown = await probe.send(gql, Target.unknown(), rival.token)

    # then the answer is the plain refusal, the same as for ids that do not exist
    assert foreign == probe.refusal(field)
    assert unknown == foreign
    # and not one row changed, in any table
    assert await snapshot() == before
    # and the very same request from the owner does reach the rows
    own = await probe.send(gql, victim.target, owner.token)
    probe.assert_found(field, own)


@pytest.mark.parametrize("field", FIELDS, ids=FIELDS)
async def test_other_client_id_for_a_client_user(
    field: str, db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given an agency with clients A and B, and a viewer who belongs to A
    probe = REGISTRY[field]
    mine = await client_rows(owner, "Acme")
    other = await client_rows(owner, "Bolt")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=mine.client)
    await db.drain()
    before = await snapshot()

    # when the viewer sends B's ids, and then ids that exist nowhere
    foreign = await probe.send(gql, other.target, viewer.token)
    unknown = await probe.send(gql, Target.unknown(), viewer.token)

    # then B's rows are as invisible as rows that do not exist (a role refusal comes
    # before any lookup, whatever the id)
    assert foreign == probe.refusal(field, denied=probe.viewer_denied)
    assert unknown == foreign
    assert await snapshot() == before


# --- lists --------------------------------------------------------------------


async def test_lists_hold_only_the_callers_agency(
    db: Backend, gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given two agencies, each with clients, contacts, notes and timeline events
    acme = await client_rows(owner, "Acme")
    bolt = await client_rows(owner, "Bolt")
    rivalco = await client_rows(rival, "Rivalco")
    await db.drain()

    for account, other, clients in (
        (owner, rival, [acme, bolt]),
        (rival, owner, [rivalco]),
    ):
        # when each agency lists its clients, their children, and its timeline
        data = await gql.execute(LISTS_QUERY, token=account.token)

        # then every list holds exactly the agency's own rows
        by_id = {str(rows.client.id): rows for rows in clients}
        nodes = [edge["node"] for edge in data["clients"]["edges"]]
        assert sorted(node["id"] for node in nodes) == sorted(by_id)
        assert data["clients"]["totalCount"] == len(clients)
        for node in nodes:
            rows = by_id[node["id"]]
            assert node["contacts"] == [
                {"id": str(rows.primary.id), "clientId": node["id"]},
                {"id": str(rows.contact.id), "clientId": node["id"]},
            ]
            # (the first page's exact notes are checked in test_client_notes_first_page)
            assert node["notes"]["totalCount"] == 1
            assert node["unpinnedNotes"] == {
                "totalCount": 1,
                "edges": [{"node": {"id": str(rows.note.id)}}],
            }
            events = await ActivityEvent.filter(client_id=rows.client.id).values_list(
                "id", flat=True
            )
            assert node["timeline"]["totalCount"] == len(events) == 4
            assert {edge["node"]["id"] for edge in node["timeline"]["edges"]} == {
                str(event) for event in events
            }
            assert {
                (edge["node"]["clientId"], edge["node"]["client"]["id"])
                for edge in node["timeline"]["edges"]
            } == {(node["id"], node["id"])}
        agency_events = await ActivityEvent.filter(agency_id=account.agency_id).values_list(
            "id", flat=True
        )
        assert {edge["node"]["id"] for edge in data["timeline"]["edges"]} == {
            str(event) for event in agency_events
        }
        assert data["timeline"]["totalCount"] == len(agency_events)
        # and no id of the other agency appears anywhere in the answer
        assert set(strings_in(data)).isdisjoint(await agency_ids(other.agency_id))


async def test_lists_hold_only_a_client_users_own_client(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    # given an agency with clients A and B, and a viewer who belongs to A
    acme = await client_rows(owner, "Acme")
    bolt = await client_rows(owner, "Bolt")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=acme.client)
    await db.drain()

    # when the viewer lists clients, their children, and the timeline
    data = await gql.execute(LISTS_QUERY, token=viewer.token)

    # then only A is there, with its contacts, none of the agency's internal notes,
    # and only A's events that are not internal
    acme_id = str(acme.client.id)
    visible = await ActivityEvent.filter(
        client_id=acme.client.id, entity_type__in=["client", "contact"]
    ).values_list("id", flat=True)
    assert len(visible) == 3
    timeline = {
        "totalCount": 3,
        "edges": [
            {"node": {"id": str(event), "clientId": acme_id, "client": {"id": acme_id}}}
            for event in visible
        ],
    }
    node = data["clients"]["edges"][0]["node"]
    assert data["clients"]["totalCount"] == 1
    assert node["id"] == acme_id
    assert node["contacts"] == [
        {"id": str(acme.primary.id), "clientId": acme_id},
        {"id": str(acme.contact.id), "clientId": acme_id},
    ]
    assert node["notes"] == {"totalCount": 0, "edges": []}
    assert node["unpinnedNotes"] == {"totalCount": 0, "edges": []}
    assert _sorted_edges(node["timeline"]) == _sorted_edges(timeline)
    assert _sorted_edges(data["timeline"]) == _sorted_edges(timeline)
    # and nothing of B, or of the viewer's own invitation, appears anywhere
    hidden = {str(bolt.client.id), str(bolt.primary.id), str(bolt.contact.id), str(bolt.note.id)}
    hidden |= {
        str(event)
        for event in await ActivityEvent.exclude(id__in=list(visible)).values_list("id", flat=True)
    }
    assert set(strings_in(data)).isdisjoint(hidden)
    assert viewer.user.client_id == acme.client.id


async def test_client_notes_first_page(
    request: pytest.FixtureRequest, db: Backend, gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given two clients of the owner and one of the rival, each with one note
    acme = await client_rows(owner, "Acme")
    bolt = await client_rows(owner, "Bolt")
    await client_rows(rival, "Rivalco")
    # when the owner lists its clients with their notes (the batched first page)
    data = await gql.execute(LISTS_QUERY, token=owner.token)
    # then each client holds exactly its own note
    notes = {edge["node"]["id"]: edge["node"]["notes"] for edge in data["clients"]["edges"]}
    assert notes == {
        str(rows.client.id): {
            "totalCount": 1,
            "edges": [{"node": {"id": str(rows.note.id), "clientId": str(rows.client.id)}}],
        }
        for rows in (acme, bolt)
    }


def _sorted_edges(connection: dict[str, Any]) -> dict[str, Any]:
    return {
        "totalCount": connection["totalCount"],
        "edges": sorted(connection["edges"], key=lambda edge: edge["node"]["id"]),
    }


# --- subscriptions ------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionProbe:
    """A subscription that names what it watches: refused at once, NOT_FOUND, like the query."""

    operation: str
    variables: Callable[[Target], dict[str, Any]]
    # the entity the NOT_FOUND names (the first id checked)
    entity: str
    # the bus channel an accepted subscription listens on
    channel: Callable[[uuid.UUID], str]
    # whether a client user may watch their own client's rows (imports are the agency's own)
    client_users_watch: bool = True


SUBSCRIPTION_REGISTRY: dict[str, SubscriptionProbe] = {
    "milestoneStatusChanged": SubscriptionProbe(
        """
subscription Watch($projectId: ID!, $milestoneId: ID) {
  milestoneStatusChanged(projectId: $projectId, milestoneId: $milestoneId) { status }
}
""",
        lambda t: {"projectId": t.project_id, "milestoneId": t.milestone_id},
        "Project",
        channels.milestones,
    ),
    "invoiceStatusChanged": SubscriptionProbe(
        """
subscription Watch($clientId: ID!, $invoiceId: ID) {
  invoiceStatusChanged(clientId: $clientId, invoiceId: $invoiceId) { status }
}
""",
        lambda t: {"clientId": t.client_id, "invoiceId": t.issued_invoice_id},
        "Client",
        channels.invoices,
    ),
    "projectPaymentStatusChanged": SubscriptionProbe(
        """
subscription Watch($projectId: ID!) {
  projectPaymentStatusChanged(projectId: $projectId) { total { amount } }
}
""",
        lambda t: {"projectId": t.project_id},
        "Project",
        channels.milestones,
    ),
    "exportProgress": SubscriptionProbe(
        """
subscription Watch($id: ID!) {
  exportProgress(id: $id) { status }
}
""",
        lambda t: {"id": t.export_id},
        "Export",
        channels.exports,
    ),
    "importProgress": SubscriptionProbe(
        """
subscription Watch($id: ID!) {
  importProgress(id: $id) { status processed }
}
""",
        lambda t: {"id": t.import_id},
        "Import",
        channels.imports,
        client_users_watch=False,
    ),
}

# Subscriptions whose ids only narrow what the caller's own agency channel carries (they
# never refuse an id, they hear nothing of it); their own tests prove nothing leaks.
NARROWING_SUBSCRIPTIONS = {
    "activityAdded": "tests/subscriptions/test_activity.py",
    "paymentStatusChanged": "tests/subscriptions/test_payment.py",
}


def subscription_id_fields(graphql_schema: GraphQLSchema) -> dict[str, set[str]]:
    """Subscription fields that take an id, with each id's path."""
    root = graphql_schema.subscription_type
    assert root is not None
    return {
        name: paths
        for name, field in root.fields.items()
        if (
            paths := {
                path
                for arg_name, arg in field.args.items()
                for path in _id_paths(arg.type, arg_name, frozenset())
            }
        )
    }


def test_subscription_registry_covers_every_id_field() -> None:
    # given every subscription of the served schema that takes an id
    fields = subscription_id_fields(schema._schema)
    # then each is walked below, or is one that only narrows its own agency's events
    assert set(fields) == set(SUBSCRIPTION_REGISTRY) | set(NARROWING_SUBSCRIPTIONS)
    # and each walked one's variables aim at every id slot
    target = Target.unknown()
    for name, probe in SUBSCRIPTION_REGISTRY.items():
        assert set(filled_id_paths(probe.variables(target), target.ids)) == fields[name], name


async def refusal(url: str, field: str, variables: dict[str, Any], token: str) -> Any:
    """The errors a subscription is refused with (it must end at once, with no event)."""
    probe = SUBSCRIPTION_REGISTRY[field]
    async with Subscription(url, probe.operation, field, token=token, variables=variables) as sub:
        with pytest.raises(TransportQueryError) as raised:
            await sub.next()
    return raised.value.errors


def not_found(entity: str) -> list[dict[str, Any]]:
    return [{"message": f"{entity} not found", "extensions": {"code": "NOT_FOUND"}}]


async def accepted(url: str, field: str, variables: dict[str, Any], account: Account) -> None:
    """The same subscription from the rows' own agency starts listening."""
    probe = SUBSCRIPTION_REGISTRY[field]
    channel = probe.channel(account.agency_id)
    async with Subscription(
        url, probe.operation, field, token=account.token, variables=variables
    ) as sub:

        async def listening() -> bool:
            return await get_bus().subscriber_count(channel) == 1

        await wait_for(listening)
        if field == "projectPaymentStatusChanged":
            assert await sub.next() == {"total": {"amount": "1000.00"}}
        if field == "exportProgress":
            assert await sub.next() == {"status": "PENDING"}


SUBSCRIPTION_FIELDS = sorted(SUBSCRIPTION_REGISTRY)


@pytest.mark.parametrize("field", SUBSCRIPTION_FIELDS, ids=SUBSCRIPTION_FIELDS)
async def test_foreign_id_subscription(
    field: str, db: Backend, ws_url: str, owner: Account, rival: Account
) -> None:
    # given the owner's client with its rows, and the rival's own
    probe = SUBSCRIPTION_REGISTRY[field]
    victim = await client_rows(owner, "Acme")
    await client_rows(rival, "Rivalco")
    await db.drain()

    # when the rival subscribes to the owner's ids, and then to ids that exist nowhere
    foreign = await refusal(ws_url, field, probe.variables(victim.target), rival.token)
    unknown = await refusal(ws_url, field, probe.variables(Target.unknown()), rival.token)

    # then both are refused alike, NOT_FOUND, as the query answers
    assert foreign == not_found(probe.entity)
    assert unknown == foreign
    # and the very same subscription from the owner listens
    await accepted(ws_url, field, probe.variables(victim.target), owner)


@pytest.mark.parametrize("field", SUBSCRIPTION_FIELDS, ids=SUBSCRIPTION_FIELDS)
async def test_other_client_id_subscription_for_a_client_user(
    field: str, db: Backend, ws_url: str, owner: Account
) -> None:
    # given an agency with clients A and B, and a viewer who belongs to A
    probe = SUBSCRIPTION_REGISTRY[field]
    mine = await client_rows(owner, "Acme")
    other = await client_rows(owner, "Bolt")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=mine.client)
    await db.drain()

    # when the viewer subscribes to B's ids, and then to ids that exist nowhere
    foreign = await refusal(ws_url, field, probe.variables(other.target), viewer.token)
    unknown = await refusal(ws_url, field, probe.variables(Target.unknown()), viewer.token)

    # then B's rows are as invisible as rows that do not exist
    assert foreign == not_found(probe.entity)
    assert unknown == foreign
    if not probe.client_users_watch:
        # and the agency's own rows (an import) are as invisible, whichever client
        mine_refused = await refusal(ws_url, field, probe.variables(mine.target), viewer.token)
        assert mine_refused == foreign
        return
    # and A's own are the viewer's to watch
    await accepted(ws_url, field, probe.variables(mine.target), viewer)


async def test_a_subscription_mixing_own_and_other_ids_is_refused(
    db: Backend, ws_url: str, owner: Account, rival: Account
) -> None:
    # given the owner's clients A and B, the rival's client, and a viewer of A
    acme = await client_rows(owner, "Acme")
    mine = acme.target
    other = (await client_rows(owner, "Bolt")).target
    theirs = (await client_rows(rival, "Rivalco")).target
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=acme.client)
    await db.drain()
    milestones, invoices = "milestoneStatusChanged", "invoiceStatusChanged"

    # when the owner names its own project with another project's or agency's milestone,
    # or its own client with another client's or agency's invoice; and when the viewer
    # names its own client's draft, which the invoices query keeps from it
    cases = [
        (milestones, {"projectId": mine.project_id, "milestoneId": other.milestone_id}, owner),
        (milestones, {"projectId": mine.project_id, "milestoneId": theirs.milestone_id}, owner),
        (invoices, {"clientId": mine.client_id, "invoiceId": other.issued_invoice_id}, owner),
        (invoices, {"clientId": mine.client_id, "invoiceId": theirs.issued_invoice_id}, owner),
        (invoices, {"clientId": mine.client_id, "invoiceId": mine.invoice_id}, viewer),
    ]
    answers = [
        await refusal(ws_url, field, variables, who.token) for field, variables, who in cases
    ]

    # then each is refused, naming the row that is not the caller's to watch there
    assert answers == [
        not_found("Milestone"),
        not_found("Milestone"),
        not_found("Invoice"),
        not_found("Invoice"),
        not_found("Invoice"),
    ]


# --- reports ------------------------------------------------------------------

REPORTS_QUERY = """
query Reports {
  paymentAnalytics(from: "2026-01-01", to: "2026-12-31", currency: "USD", groupBy: MONTH) {
    totals { collected { amount } payments }
  }
  receivablesAging(currency: "USD", asOf: "2026-06-01") {
    clients { clientId } totals { total { amount } }
  }
  webhookEvents(first: 100) { totalCount edges { node { id } } }
}
"""


async def _paid_with_event(account: Account, rows: Rows) -> str:
    """The rows' payment succeeded, and the webhook event that said so, tied to the agency."""
    await Payment.filter(id=rows.payment.id).update(
        status=PaymentStatus.SUCCEEDED, succeeded_at=datetime(2026, 3, 5, 12, tzinfo=UTC)
    )
    event = await WebhookEvent.create(
        provider=PaymentProvider.SANDBOX,
        event_id=f"evt_{rows.payment.id}",
        event_type="payment.succeeded",
        payload={},
        agency_id=account.agency_id,
        payment_id=rows.payment.id,
        received_at=datetime(2026, 3, 5, 12, tzinfo=UTC),
        processed_at=datetime(2026, 3, 5, 12, tzinfo=UTC),
        outcome="applied",
    )
    return str(event.id)


async def test_reports_hold_only_the_callers_agency(
    db: Backend, gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given two agencies, each with a client owing 40.00, a payment of 40.00 received and
    # the webhook event that reported it
    acme = await client_rows(owner, "Acme")
    rivalco = await client_rows(rival, "Rivalco")
    events = {
        owner.agency_id: await _paid_with_event(owner, acme),
        rival.agency_id: await _paid_with_event(rival, rivalco),
    }
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=acme.client)
    await db.drain()

    for account, rows in ((owner, acme), (rival, rivalco)):
        # when each agency's owner asks for the reports
        data = await gql.execute(REPORTS_QUERY, token=account.token)
        # then each holds the agency's own figures and rows only
        assert data == {
            "paymentAnalytics": {"totals": {"collected": {"amount": "40.00"}, "payments": 1}},
            "receivablesAging": {
                "clients": [{"clientId": str(rows.client.id)}],
                "totals": {"total": {"amount": "40.00"}},
            },
            "webhookEvents": {
                "totalCount": 1,
                "edges": [{"node": {"id": events[account.agency_id]}}],
            },
        }

    # and a client user gets none of them
    for field, arguments in (
        ("paymentAnalytics", 'from: "2026-01-01", to: "2026-12-31", currency: "USD"'),
        ("receivablesAging", 'currency: "USD"'),
        ("webhookEvents", "first: 10"),
    ):
        body = await gql.execute(
            f"query {{ {field}({arguments}) {{ __typename }} }}",
            token=viewer.token,
            expect_errors=True,
        )
        assert body["data"] is None
        assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
            ([field], "PERMISSION_DENIED")
        ]


# --- cursors (after) ------------------------------------------------------------


@dataclass(frozen=True)
class ResumeProbe:
    """A subscription that resumes from a cursor, and an event of a target it must hear."""

    operation: str
    variables: Callable[[Target], dict[str, Any]]
    channel: Callable[[uuid.UUID], str]
    # the event as services announce it, for the target's rows of the agency
    event: Callable[[uuid.UUID, Target], dict[str, Any]]
    # what a subscriber hears of it, to tell one target's events from another's
    heard: Callable[[Target], dict[str, Any]]


def _now() -> str:
    return clock.now().isoformat()


RESUME_REGISTRY: dict[str, ResumeProbe] = {
    "activityAdded": ResumeProbe(
        """
subscription Watch($after: String) { activityAdded(after: $after) { clientId } }
""",
        lambda t: {},
        channels.activity,
        lambda agency, t: {
            "id": str(uuid.uuid4()),
            "agencyId": str(agency),
            "clientId": t.client_id,
            "actorId": None,
            "actorName": None,
            "entityType": "client",
            "entityId": t.client_id,
            "verb": "updated",
            "summary": "Client updated",
            "changes": {},
            "internal": False,
            "createdAt": _now(),
        },
        lambda t: {"clientId": t.client_id},
    ),
    "paymentStatusChanged": ResumeProbe(
        """
subscription Watch($after: String) { paymentStatusChanged(after: $after) { paymentId } }
""",
        lambda t: {},
        channels.payments,
        lambda agency, t: {
            "paymentId": t.payment_id,
            "agencyId": str(agency),
            "clientId": t.client_id,
            "projectId": t.project_id,
            "invoiceIds": [t.issued_invoice_id],
            "milestoneIds": [],
            "status": "pending",
            "provider": "sandbox",
            "amountMinor": 1,
            "amountRefundedMinor": 0,
            "currency": "USD",
            "changedAt": _now(),
        },
        lambda t: {"paymentId": t.payment_id},
    ),
    "milestoneStatusChanged": ResumeProbe(
        """
subscription Watch($projectId: ID!, $after: String) {
  milestoneStatusChanged(projectId: $projectId, after: $after) { milestoneId }
}
""",
        lambda t: {"projectId": t.project_id},
        channels.milestones,
        lambda agency, t: {
            "eventId": str(uuid.uuid4()),
            "milestoneId": t.milestone_id,
            "agencyId": str(agency),
            "clientId": t.client_id,
            "projectId": t.project_id,
            "title": "Design",
            "status": "in_progress",
            "previousStatus": "pending",
            "paymentStatus": "unpaid",
            "amountMinor": 1,
            "amountPaidMinor": 0,
            "currency": "USD",
            "statusChanged": True,
            "changedAt": _now(),
        },
        lambda t: {"milestoneId": t.milestone_id},
    ),
    "invoiceStatusChanged": ResumeProbe(
        """
subscription Watch($clientId: ID!, $after: String) {
  invoiceStatusChanged(clientId: $clientId, after: $after) { invoiceId }
}
""",
        lambda t: {"clientId": t.client_id},
        channels.invoices,
        lambda agency, t: {
            "invoiceId": t.issued_invoice_id,
            "agencyId": str(agency),
            "clientId": t.client_id,
            "projectId": t.project_id,
            "number": "INV-1",
            "status": "viewed",
            "previousStatus": "sent",
            "totalMinor": 1,
            "dueMinor": 1,
            "currency": "USD",
            "internal": False,
            "changedAt": _now(),
        },
        lambda t: {"invoiceId": t.issued_invoice_id},
    ),
}
RESUME_FIELDS = sorted(RESUME_REGISTRY)


def test_resume_registry_covers_every_subscription_with_after() -> None:
    # given every subscription of the served schema that takes a cursor
    root = schema._schema.subscription_type
    assert root is not None
    resumable = {name for name, field in root.fields.items() if "after" in field.args}
    # then each is walked below
    assert resumable == set(RESUME_REGISTRY)


async def resume(url: str, field: str, target: Target, after: str, token: str) -> Subscription:
    probe = RESUME_REGISTRY[field]
    return Subscription(
        url,
        probe.operation,
        field,
        token=token,
        variables={**probe.variables(target), "after": after},
    )


@pytest.mark.parametrize("field", RESUME_FIELDS, ids=RESUME_FIELDS)
async def test_a_cursor_never_opens_another_agencys_stream(
    field: str, db: Backend, ws_url: str, owner: Account, rival: Account
) -> None:
    # given both agencies' rows, and the owner's cursor followed by events of its rows
    probe = RESUME_REGISTRY[field]
    victim = (await client_rows(owner, "Acme")).target
    own = (await client_rows(rival, "Rivalco")).target
    await db.drain()
    bus = get_bus()
    await bus.stream_tail(str(rival.agency_id))
    cursor = await bus.stream_tail(str(owner.agency_id))
    for _ in range(2):
        await bus.publish(probe.channel(owner.agency_id), probe.event(owner.agency_id, victim))

    # when the rival resumes its own subscription from the owner's cursor
    async with await resume(ws_url, field, own, cursor, rival.token) as sub:
        # then it is refused: the cursor names no place in the rival's own stream
        with pytest.raises(TransportQueryError) as raised:
            await sub.next()
    assert [e["extensions"]["code"] for e in raised.value.errors] == ["CURSOR_EXPIRED"]

    # and the owner, from the same cursor, hears its events
    async with await resume(ws_url, field, victim, cursor, owner.token) as sub:
        assert await sub.next() == probe.heard(victim)


@pytest.mark.parametrize("field", RESUME_FIELDS, ids=RESUME_FIELDS)
async def test_a_cursor_replays_only_a_client_users_own_client(
    field: str, db: Backend, ws_url: str, owner: Account
) -> None:
    # given an agency with clients A and B, a viewer of A, and a cursor followed by
    # events of B's rows, then of A's
    probe = RESUME_REGISTRY[field]
    mine = await client_rows(owner, "Acme")
    other = (await client_rows(owner, "Bolt")).target
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=mine.client)
    await db.drain()
    bus = get_bus()
    cursor = await bus.stream_tail(str(owner.agency_id))
    channel = probe.channel(owner.agency_id)
    await bus.publish(channel, probe.event(owner.agency_id, other))
    await bus.publish(channel, probe.event(owner.agency_id, mine.target))

    # when the viewer resumes from the cursor (on its own client's rows where it names any)
    async with await resume(ws_url, field, mine.target, cursor, viewer.token) as sub:
        # then the first event it hears is A's: B's was passed over
        assert await sub.next() == probe.heard(mine.target)
