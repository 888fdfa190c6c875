"""Deliverables through the API: declaring uploads, lists, lookups, deletion and batching."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from settle.core.settings import configure_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.deliverable import Deliverable, DeliverableKind, DeliverableStatus
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.project import Project
from settle.resolvers.deliverable import project_deliverables
from settle.schema.context import Context
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries

ERROR_FIELDS = """
    ... on Error { __typename code message }
    ... on ValidationError { field }
"""

DELIVERABLE_FIELDS = """
  id projectId milestoneId title kind status filename contentType sizeBytes checksum
  uploadedAt downloadCount accessExpiresAt locked uploadedBy { name }
"""

CREATE_UPLOAD = f"""
mutation CreateDeliverableUpload($input: CreateDeliverableUploadInput!) {{
  createDeliverableUpload(input: $input) {{
    __typename
    ... on DeliverableUpload {{ uploadUrl expiresAt deliverable {{ {DELIVERABLE_FIELDS} }} }}
    {ERROR_FIELDS}
  }}
}}
"""

DELIVERABLE = f"""
query Deliverable($id: ID!) {{
  deliverable(id: $id) {{ {DELIVERABLE_FIELDS} }}
}}
"""

DELIVERABLES = """
query Deliverables($first: Int!, $after: String, $filter: DeliverableFilter) {
  deliverables(first: $first, after: $after, filter: $filter) {
    totalCount
    edges { node { title kind status } }
    pageInfo { hasNextPage endCursor }
  }
}
"""

DOWNLOAD_URL = f"""
query DeliverableDownloadUrl($id: ID!) {{
  deliverableDownloadUrl(id: $id) {{
    __typename
    ... on DownloadUrl {{ url expiresAt }}
    {ERROR_FIELDS}
  }}
}}
"""

DELETE_DELIVERABLE = f"""
mutation DeleteDeliverable($id: ID!) {{
  deleteDeliverable(id: $id) {{
    __typename
    ... on Deliverable {{ id title }}
    {ERROR_FIELDS}
  }}
}}
"""

TIMELINE = """
query Timeline($filter: TimelineFilter) {
  timeline(first: 20, filter: $filter) {
    edges { node { entityType entityId verb summary actor { name } } }
  }
}
"""


@pytest.fixture(autouse=True)
def files_dir(db: Backend, tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "files"
    configure_settings(db.settings.model_copy(update={"storage_dir": root}))
    yield root
    configure_settings(db.settings)


async def make_project(account: Account, client: Client | None = None) -> Project:
    client = client or await create_client(account, name="Acme", currency="USD")
    return await Project.create(
        agency_id=account.agency_id, client_id=client.id, name="Website", currency="USD"
    )


async def add_deliverable(
    project: Project,
    title: str,
    kind: DeliverableKind = DeliverableKind.BETA,
    status: DeliverableStatus = DeliverableStatus.READY,
) -> Deliverable:
    row = Deliverable(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=title,
        kind=kind,
        status=status,
        filename=f"{title}.zip",
        content_type="application/zip",
        size_bytes=10,
    )
    row.storage_key = f"deliverables/{project.agency_id}/{project.id}/{row.id}"
    await row.save()
    return row


def upload_input(project: Project, **overrides: Any) -> dict[str, Any]:
    return {
        "projectId": str(project.id),
        "title": "Beta build",
        "kind": "BETA",
        "filename": "beta.zip",
        "contentType": "application/zip",
        "sizeBytes": 2048,
        **overrides,
    }


# --- createDeliverableUpload ---------------------------------------------------------


async def test_create_upload_returns_the_waiting_deliverable(
    gql: GraphQLClient, owner: Account
) -> None:
    # given a project with a milestone
    project = await make_project(owner)
    milestone = await Milestone.create(
        agency_id=owner.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title="Design",
        amount_minor=100_00,
        currency="USD",
    )
    # when a file of that milestone is declared
    data = await gql.execute(
        CREATE_UPLOAD,
        {"input": upload_input(project, milestoneId=str(milestone.id), kind="FINAL")},
        token=owner.token,
    )
    # then it comes back waiting for its upload, with a signed upload URL
    result = data["createDeliverableUpload"]
    deliverable_id = result["deliverable"]["id"]
    assert result["__typename"] == "DeliverableUpload"
    assert result["uploadUrl"].startswith("http://settle.test/files/upload/")
    assert result["deliverable"] == {
        "id": deliverable_id,
        "projectId": str(project.id),
        "milestoneId": str(milestone.id),
        "title": "Beta build",
        "kind": "FINAL",
        "status": "AWAITING_UPLOAD",
        "filename": "beta.zip",
        "contentType": "application/zip",
        "sizeBytes": 2048,
        "checksum": None,
        "uploadedAt": None,
        "downloadCount": 0,
        "accessExpiresAt": None,
        "locked": None,
        "uploadedBy": None,
    }
    assert await Deliverable.filter(id=deliverable_id, project_id=project.id).exists()


INVALID_INPUTS: dict[str, tuple[dict[str, Any], str, str]] = {
    "project id": ({"projectId": "nope"}, "projectId", "INVALID_ID"),
    "milestone id": ({"milestoneId": "nope"}, "milestoneId", "INVALID_ID"),
    "title": ({"title": ""}, "title", "REQUIRED"),
    "filename": ({"filename": "a/b.zip"}, "filename", "INVALID_FILENAME"),
    "content type": ({"contentType": "text/html"}, "contentType", "CONTENT_TYPE_NOT_ALLOWED"),
    "size": ({"sizeBytes": 524_288_001}, "sizeBytes", "TOO_LARGE"),
    "empty": ({"sizeBytes": 0}, "sizeBytes", "OUT_OF_RANGE"),
}


@pytest.mark.parametrize("case", list(INVALID_INPUTS), ids=list(INVALID_INPUTS))
async def test_create_upload_rejects_bad_input_by_field(
    gql: GraphQLClient, owner: Account, case: str
) -> None:
    # given a project
    project = await make_project(owner)
    before = await row_counts(Deliverable)
    overrides, field, code = INVALID_INPUTS[case]
    # when a file is declared with one bad field
    data = await gql.execute(
        CREATE_UPLOAD, {"input": upload_input(project, **overrides)}, token=owner.token
    )
    # then a ValidationError names the field, and nothing is written
    result = data["createDeliverableUpload"]
    assert (result["__typename"], result["field"], result["code"]) == (
        "ValidationError",
        field,
        code,
    )
    assert await row_counts(Deliverable) == before


async def test_client_users_cannot_declare_uploads(gql: GraphQLClient, owner: Account) -> None:
    # given a project and its client's lead
    project = await make_project(owner)
    client = await Client.get(id=project.client_id)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    before = await row_counts(Deliverable)
    # when the lead declares a file
    data = await gql.execute(CREATE_UPLOAD, {"input": upload_input(project)}, token=lead.token)
    # then they may not, and nothing is written
    assert data["createDeliverableUpload"] == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    assert await row_counts(Deliverable) == before


# --- reading ---------------------------------------------------------------------------


async def test_lists_filter_page_and_hide_unfinished_uploads_from_clients(
    gql: GraphQLClient, owner: Account
) -> None:
    # given two projects of one client, one of another, with files in every state
    acme = await create_client(owner, name="Acme")
    website = await make_project(owner, acme)
    app = await make_project(owner, acme)
    other = await make_project(owner)
    await add_deliverable(website, "w-beta")
    await add_deliverable(website, "w-final", DeliverableKind.FINAL)
    await add_deliverable(website, "w-waiting", status=DeliverableStatus.AWAITING_UPLOAD)
    await add_deliverable(app, "a-beta")
    await add_deliverable(other, "o-beta")
    gone = await add_deliverable(website, "w-deleted")
    await Deliverable.filter(id=gone.id).update(deleted_at=datetime.now(UTC))
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=acme)

    async def titles(account: Account, flt: dict[str, Any] | None, first: int = 10) -> Any:
        data = await gql.execute(DELIVERABLES, {"first": first, "filter": flt}, token=account.token)
        page = data["deliverables"]
        return page["totalCount"], [edge["node"]["title"] for edge in page["edges"]]

    # when the owner lists them, then every live file shows, newest first
    assert await titles(owner, None) == (
        5,
        ["o-beta", "a-beta", "w-waiting", "w-final", "w-beta"],
    )
    assert await titles(owner, {"projectId": str(website.id)}) == (
        3,
        ["w-waiting", "w-final", "w-beta"],
    )
    assert await titles(owner, {"projectId": str(website.id), "kind": "FINAL"}) == (
        1,
        ["w-final"],
    )
    # when the client's viewer lists them, then only their client's uploaded files show
    assert await titles(viewer, None) == (3, ["a-beta", "w-final", "w-beta"])
    assert await titles(viewer, {"projectId": str(other.id)}) == (0, [])
    # and pages follow on from each other
    first = await gql.execute(DELIVERABLES, {"first": 2}, token=owner.token)
    rest = await gql.execute(
        DELIVERABLES,
        {"first": 10, "after": first["deliverables"]["pageInfo"]["endCursor"]},
        token=owner.token,
    )
    assert [e["node"]["title"] for e in first["deliverables"]["edges"]] == ["o-beta", "a-beta"]
    assert first["deliverables"]["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["title"] for e in rest["deliverables"]["edges"]] == [
        "w-waiting",
        "w-final",
        "w-beta",
    ]


async def test_a_bad_list_filter_names_the_field(gql: GraphQLClient, owner: Account) -> None:
    body = await gql.execute(
        DELIVERABLES,
        {"first": 10, "filter": {"projectId": "nope"}},
        token=owner.token,
        expect_errors=True,
    )
    assert body["data"] is None
    assert [(e["message"], e["extensions"]) for e in body["errors"]] == [
        (
            "filter.projectId is not a valid id",
            {"code": "INVALID_ID", "field": "filter.projectId"},
        )
    ]


async def test_lookups(gql: GraphQLClient, owner: Account) -> None:
    # given a file waiting for its upload and an uploaded one
    project = await make_project(owner)
    waiting = await add_deliverable(project, "waiting", status=DeliverableStatus.AWAITING_UPLOAD)
    ready = await add_deliverable(project, "ready")
    await Deliverable.filter(id=ready.id).update(uploaded_by_id=owner.user.id)
    # when each is looked up, with a malformed and an unknown id besides
    found = await gql.execute(DELIVERABLE, {"id": str(ready.id)}, token=owner.token)
    # then the uploaded one shows who uploaded it
    assert found["deliverable"]["uploadedBy"] == {"name": "Olive Owner"}
    for missing in ("nope", str(uuid.uuid4())):
        assert await gql.execute(DELIVERABLE, {"id": missing}, token=owner.token) == {
            "deliverable": None
        }
    # and a download URL for the waiting one is a conflict, for unknown ids not found
    waiting_url = await gql.execute(DOWNLOAD_URL, {"id": str(waiting.id)}, token=owner.token)
    unknown_url = await gql.execute(DOWNLOAD_URL, {"id": str(uuid.uuid4())}, token=owner.token)
    bad_url = await gql.execute(DOWNLOAD_URL, {"id": "nope"}, token=owner.token)
    assert waiting_url["deliverableDownloadUrl"] == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "This deliverable's file has not been uploaded yet",
    }
    assert unknown_url["deliverableDownloadUrl"] == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Deliverable not found",
    }
    assert bad_url["deliverableDownloadUrl"] == {
        "__typename": "ValidationError",
        "code": "INVALID_ID",
        "message": "id is not a valid id",
        "field": "id",
    }


# --- deleteDeliverable -------------------------------------------------------------------


async def test_delete_is_for_managers_and_recorded(gql: GraphQLClient, owner: Account) -> None:
    # given a file, an admin and a member
    project = await make_project(owner)
    deliverable = await add_deliverable(project, "Beta build")
    admin = await create_user(owner, role=Role.ADMIN, name="Ada Admin")
    member = await create_user(owner, role=Role.MEMBER)
    before = await row_counts(Deliverable)
    # when the member deletes it, then they may not, and nothing changes
    refused = await gql.execute(DELETE_DELIVERABLE, {"id": str(deliverable.id)}, token=member.token)
    assert refused["deleteDeliverable"]["__typename"] == "PermissionDeniedError"
    assert await row_counts(Deliverable) == before
    # when the admin deletes it
    data = await gql.execute(DELETE_DELIVERABLE, {"id": str(deliverable.id)}, token=admin.token)
    # then it is gone from lookups and a second delete finds nothing
    assert data["deleteDeliverable"] == {
        "__typename": "Deliverable",
        "id": str(deliverable.id),
        "title": "Beta build",
    }
    assert await gql.execute(DELIVERABLE, {"id": str(deliverable.id)}, token=owner.token) == {
        "deliverable": None
    }
    again = await gql.execute(DELETE_DELIVERABLE, {"id": str(deliverable.id)}, token=admin.token)
    assert again["deleteDeliverable"]["__typename"] == "NotFoundError"
    # and the timeline records who deleted it
    timeline = await gql.execute(
        TIMELINE, {"filter": {"clientId": str(project.client_id)}}, token=owner.token
    )
    assert timeline["timeline"]["edges"][0]["node"] == {
        "entityType": "deliverable",
        "entityId": str(deliverable.id),
        "verb": "deleted",
        "summary": "Deliverable Beta build deleted",
        "actor": {"name": "Ada Admin"},
    }
    row = await Deliverable.get(id=deliverable.id)
    event = await ActivityEvent.get(entity_id=deliverable.id, verb="deleted")
    assert event.changes == {
        "deleted_at": {"before": None, "after": row.deleted_at.isoformat()}  # type: ignore[union-attr]
    }


# --- batching for Project.deliverables ----------------------------------------------------


async def test_project_deliverables_load_in_a_fixed_number_of_queries(
    db: Backend, owner: Account
) -> None:
    # given six projects of one client with three files each, only the first one's advance paid
    client = await create_client(owner, name="Acme")
    projects = [await make_project(owner, client) for _ in range(6)]
    for project in projects:
        for n, kind in enumerate(
            (DeliverableKind.BETA, DeliverableKind.BETA, DeliverableKind.FINAL)
        ):
            await add_deliverable(project, f"{project.id}-{n}", kind)
        advance_paid = project is projects[0]
        for kind, paid in ((MilestoneKind.ADVANCE, advance_paid), (MilestoneKind.BALANCE, False)):
            await Milestone.create(
                agency_id=owner.agency_id,
                project_id=project.id,
                client_id=client.id,
                title=kind.value,
                kind=kind,
                amount_minor=100,
                currency="USD",
                status=MilestoneStatus.PAID if paid else MilestoneStatus.APPROVED,
                payment_status=(
                    MilestonePaymentStatus.PAID if paid else MilestonePaymentStatus.UNPAID
                ),
                paid_at=datetime.now(UTC) - timedelta(days=1) if paid else None,
            )
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    await db.drain()  # the invitation email's job must not run inside the count
    context = Context(settings=db.settings, request=None, actor=viewer.actor)
    info: Any = SimpleNamespace(context=context)

    # when every project's deliverables and their locks are resolved, as a list of projects does
    with count_queries() as counter:
        lists = await asyncio.gather(*(project_deliverables(info, p.id) for p in projects))
        locks = await asyncio.gather(
            *(d.locked(info) for files in lists for d in files)  # type: ignore[misc]
        )
    # then it took one query for the files and one for the payment state
    assert counter.count == 2, counter.queries
    # and each project holds its own files, newest first, locked by its own payments
    assert [[d.title for d in files] for files in lists] == [
        [f"{p.id}-2", f"{p.id}-1", f"{p.id}-0"] for p in projects
    ]
    assert [lock.value if lock else None for lock in locks] == (
        ["BALANCE_UNPAID", None, None] + ["ADVANCE_UNPAID"] * 15
    )
