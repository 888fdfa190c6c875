"""Files through the real ASGI app: signed upload and download URLs, payment locks, the log.

Each test declares files through GraphQL, PUTs the bytes to the signed URL,
and downloads them as the users of an agency and its client would.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from settle.core import clock
from settle.core.settings import configure_settings, get_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.deliverable import Deliverable, DeliverableDownload, DeliverableStatus
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.project import Project
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient

CREATE_UPLOAD = """
mutation CreateDeliverableUpload($input: CreateDeliverableUploadInput!) {
  createDeliverableUpload(input: $input) {
    __typename
    ... on DeliverableUpload {
      uploadUrl
      expiresAt
      deliverable { id title kind status filename contentType sizeBytes checksum downloadCount }
    }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

DOWNLOAD_URL = """
query DeliverableDownloadUrl($id: ID!) {
  deliverableDownloadUrl(id: $id) {
    __typename
    ... on DownloadUrl { url expiresAt }
    ... on Error { code message }
  }
}
"""

DELIVERABLES = """
query Deliverables($filter: DeliverableFilter) {
  deliverables(first: 10, filter: $filter) {
    totalCount
    edges { node { title kind downloadCount accessExpiresAt locked } }
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

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
BETA_BYTES = b"beta build " * 1000
FINAL_BYTES = os.urandom(200_000)


@dataclass
class Clock:
    now: datetime


@pytest.fixture
def frozen() -> Iterator[Clock]:
    current = Clock(NOW)
    clock.set_clock(lambda: current.now)
    yield current
    clock.set_clock(None)


@pytest.fixture(autouse=True)
def files_dir(db: Backend, tmp_path: Path) -> Iterator[Path]:
    """Each test's files in its own directory, so "nothing kept" can be checked exactly."""
    root = tmp_path / "files"
    configure_settings(db.settings.model_copy(update={"storage_dir": root}))
    yield root
    configure_settings(db.settings)


def stored_files(root: Path) -> dict[str, bytes]:
    """Every file under the storage root (temporary ones included) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@dataclass
class Setup:
    project: Project
    client: Client
    advance: Milestone
    balance: Milestone
    member: Account
    viewer: Account


async def setup_project(owner: Account) -> Setup:
    """A project with an unpaid 40% advance and balance, a member and a client viewer."""
    client = await create_client(owner, name="Acme", currency="USD")
    project = await Project.create(
        agency_id=owner.agency_id,
        client_id=client.id,
        name="Website",
        currency="USD",
        advance_percent=40,
    )
    advance, balance = [
        await Milestone.create(
            agency_id=owner.agency_id,
            project_id=project.id,
            client_id=client.id,
            title=title,
            kind=kind,
            amount_minor=amount,
            currency="USD",
            status=MilestoneStatus.APPROVED,
        )
        for title, kind, amount in (
            ("Advance (40%)", MilestoneKind.ADVANCE, 400_00),
            ("Balance", MilestoneKind.BALANCE, 600_00),
        )
    ]
    member = await create_user(owner, role=Role.MEMBER, name="Mia Member")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")
    return Setup(project, client, advance, balance, member, viewer)


async def pay(milestone: Milestone, paid_at: datetime) -> None:
    await Milestone.filter(id=milestone.id).update(
        status=MilestoneStatus.PAID,
        payment_status=MilestonePaymentStatus.PAID,
        amount_paid_minor=milestone.amount_minor,
        paid_at=paid_at,
    )


async def declare(
    gql: GraphQLClient, account: Account, project: Project, **values: Any
) -> dict[str, Any]:
    variables = {
        "projectId": str(project.id),
        "title": "Beta build",
        "kind": "BETA",
        "filename": "beta.txt",
        "contentType": "text/plain",
        "sizeBytes": len(BETA_BYTES),
        **values,
    }
    data = await gql.execute(CREATE_UPLOAD, {"input": variables}, token=account.token)
    result: dict[str, Any] = data["createDeliverableUpload"]
    return result


async def upload_file(
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    account: Account,
    project: Project,
    body: bytes,
    **values: Any,
) -> str:
    """Declare a file, PUT it, and return its id."""
    created = await declare(gql, account, project, sizeBytes=len(body), **values)
    content_type = values.get("contentType", "text/plain")
    response = await http.put(
        created["uploadUrl"], content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    deliverable_id: str = created["deliverable"]["id"]
    return deliverable_id


async def download_url(gql: GraphQLClient, account: Account, deliverable_id: str) -> dict[str, Any]:
    data = await gql.execute(DOWNLOAD_URL, {"id": deliverable_id}, token=account.token)
    result: dict[str, Any] = data["deliverableDownloadUrl"]
    return result


def locked(code: str) -> dict[str, str]:
    messages = {
        "ADVANCE_UNPAID": "This file opens once the advance is paid",
        "BALANCE_UNPAID": "Final files open once every milestone is paid",
        "ACCESS_EXPIRED": "Access to this project's files has ended",
    }
    return {"__typename": "AccessLockedError", "code": code, "message": messages[code]}


async def stream(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """A request body sent in chunks, without a Content-Length (as a proxy might)."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


# --- uploading -------------------------------------------------------------------------


async def test_upload_stores_the_file_and_marks_it_ready(
    frozen: Clock, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a file declared by a member
    setup = await setup_project(owner)
    created = await declare(gql, setup.member, setup.project)
    deliverable_id = created["deliverable"]["id"]
    assert created["__typename"] == "DeliverableUpload"
    assert created["expiresAt"] == "2026-05-04T09:45:00+00:00"
    assert created["deliverable"] == {
        "id": deliverable_id,
        "title": "Beta build",
        "kind": "BETA",
        "status": "AWAITING_UPLOAD",
        "filename": "beta.txt",
        "contentType": "text/plain",
        "sizeBytes": len(BETA_BYTES),
        "checksum": None,
        "downloadCount": 0,
    }
    # when the bytes are PUT to the upload URL, in chunks, with the declared type
    frozen.now = NOW + timedelta(minutes=3)
    response = await http.put(
        created["uploadUrl"],
        content=stream(BETA_BYTES),
        headers={"Content-Type": "text/plain; charset=utf-8"},
    )
    # then the file is ready, with its SHA-256
    checksum = hashlib.sha256(BETA_BYTES).hexdigest()
    assert (response.status_code, response.json()) == (
        200,
        {
            "id": deliverable_id,
            "status": "ready",
            "sizeBytes": len(BETA_BYTES),
            "checksum": checksum,
        },
    )
    row = await Deliverable.get(id=deliverable_id)
    assert (row.status, row.checksum_sha256, row.uploaded_at, row.uploaded_by_id) == (
        DeliverableStatus.READY,
        checksum,
        NOW + timedelta(minutes=3),
        setup.member.user.id,
    )
    # and storage holds exactly those bytes, under the row's key and nothing else
    assert stored_files(files_dir) == {row.storage_key: BETA_BYTES}
    # and the timeline says who uploaded what
    event = await ActivityEvent.get(entity_id=row.id, verb="uploaded")
    assert (event.actor_id, event.client_id, event.summary) == (
        setup.member.user.id,
        setup.client.id,
        "Mia Member uploaded beta.txt for Beta build",
    )
    assert event.changes == {
        "checksum_sha256": {"before": None, "after": checksum},
        "status": {"before": "awaiting_upload", "after": "ready"},
        "uploaded_at": {"before": None, "after": "2026-05-04T09:33:00+00:00"},
        "uploaded_by_id": {"before": None, "after": str(setup.member.user.id)},
    }

    # when the same URL is used again, with other bytes of the same size
    again = await http.put(
        created["uploadUrl"],
        content=b"x" * len(BETA_BYTES),
        headers={"Content-Type": "text/plain"},
    )
    # then it is refused as a conflict and the stored file is untouched
    assert (again.status_code, again.json()["code"]) == (409, "CONFLICT")
    assert stored_files(files_dir) == {row.storage_key: BETA_BYTES}
    assert await ActivityEvent.filter(entity_id=row.id, verb="uploaded").count() == 1


async def test_racing_uploads_of_one_url_store_one_file(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a declared file
    setup = await setup_project(owner)
    created = await declare(gql, owner, setup.project)
    bodies = [BETA_BYTES, BETA_BYTES.upper()]

    # when two uploads to its URL run at once, with different bytes
    responses = await asyncio.gather(
        *(
            http.put(
                created["uploadUrl"],
                content=stream(body, 1000),
                headers={"Content-Type": "text/plain"},
            )
            for body in bodies
        )
    )
    # then one is taken and the other refused
    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = bodies[[r.status_code for r in responses].index(200)]
    # and the row, the stored bytes and the timeline all describe the winner, once
    row = await Deliverable.get(id=created["deliverable"]["id"])
    assert row.checksum_sha256 == hashlib.sha256(winner).hexdigest()
    assert stored_files(files_dir) == {row.storage_key: winner}
    assert await ActivityEvent.filter(entity_id=row.id, verb="uploaded").count() == 1


WRONG_UPLOADS: dict[str, tuple[Any, dict[str, str], int, str]] = {
    "one byte more": (BETA_BYTES + b"!", {"Content-Type": "text/plain"}, 400, "SIZE_MISMATCH"),
    "one byte less": (BETA_BYTES[:-1], {"Content-Type": "text/plain"}, 400, "SIZE_MISMATCH"),
    "more, streamed": (
        lambda: stream(BETA_BYTES + b"!" * 5000),
        {"Content-Type": "text/plain"},
        400,
        "SIZE_MISMATCH",
    ),
    "less, streamed": (
        lambda: stream(BETA_BYTES[:-1]),
        {"Content-Type": "text/plain"},
        400,
        "SIZE_MISMATCH",
    ),
    "empty": (b"", {"Content-Type": "text/plain"}, 400, "SIZE_MISMATCH"),
    "another type": (BETA_BYTES, {"Content-Type": "application/pdf"}, 415, "CONTENT_TYPE_MISMATCH"),
    "no type": (BETA_BYTES, {}, 415, "CONTENT_TYPE_MISMATCH"),
}


@pytest.mark.parametrize("case", list(WRONG_UPLOADS), ids=list(WRONG_UPLOADS))
async def test_a_wrong_body_leaves_nothing(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path, case: str
) -> None:
    # given a declared text file
    setup = await setup_project(owner)
    created = await declare(gql, owner, setup.project)
    body, headers, status, code = WRONG_UPLOADS[case]
    # when a body of the wrong size or type is PUT
    response = await http.put(
        created["uploadUrl"], content=body() if callable(body) else body, headers=headers
    )
    # then it is refused with the reason
    assert (response.status_code, response.json()["code"]) == (status, code)
    # and nothing is stored, not even a partial file, and the row still waits
    assert stored_files(files_dir) == {}
    row = await Deliverable.get(id=created["deliverable"]["id"])
    assert (row.status, row.checksum_sha256, row.uploaded_at) == (
        DeliverableStatus.AWAITING_UPLOAD,
        None,
        None,
    )
    assert not await ActivityEvent.filter(entity_id=row.id, verb="uploaded").exists()
    # and the right file can still be sent to the same URL
    retry = await http.put(
        created["uploadUrl"], content=BETA_BYTES, headers={"Content-Type": "text/plain"}
    )
    assert retry.status_code == 200
    assert stored_files(files_dir) == {row.storage_key: BETA_BYTES}


async def test_an_upload_to_a_deleted_deliverable_keeps_nothing(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given a declared file that the owner deletes before it is sent
    setup = await setup_project(owner)
    created = await declare(gql, owner, setup.project)
    deleted = await gql.execute(
        DELETE_DELIVERABLE, {"id": created["deliverable"]["id"]}, token=owner.token
    )
    assert deleted["deleteDeliverable"]["__typename"] == "Deliverable"
    # when the file is PUT to its URL
    response = await http.put(
        created["uploadUrl"], content=BETA_BYTES, headers={"Content-Type": "text/plain"}
    )
    # then there is nothing to upload to, and nothing is stored
    assert (response.status_code, response.json()) == (
        404,
        {"code": "NOT_FOUND", "message": "Deliverable not found"},
    )
    assert stored_files(files_dir) == {}


# --- access as the project is paid --------------------------------------------------


async def test_files_open_to_the_client_as_the_project_is_paid(
    frozen: Clock, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a project with an unpaid advance and balance, and a beta and a final file
    setup = await setup_project(owner)
    beta = await upload_file(gql, http, setup.member, setup.project, BETA_BYTES)
    final = await upload_file(
        gql,
        http,
        setup.member,
        setup.project,
        FINAL_BYTES,
        title="Final build",
        kind="FINAL",
        filename="final.zip",
        contentType="application/zip",
    )
    viewer = setup.viewer

    async def listing(account: Account) -> list[dict[str, Any]]:
        data = await gql.execute(
            DELIVERABLES, {"filter": {"projectId": str(setup.project.id)}}, token=account.token
        )
        return [edge["node"] for edge in data["deliverables"]["edges"]]

    async def fetch(account: Account, deliverable_id: str) -> bytes:
        signed = await download_url(gql, account, deliverable_id)
        assert signed["__typename"] == "DownloadUrl", signed
        assert signed["expiresAt"] == (clock.now() + timedelta(minutes=15)).isoformat()
        response = await http.get(signed["url"])
        assert response.status_code == 200, response.text
        return response.content

    # when the advance is unpaid
    # then the client can open neither file, and is told to pay the advance
    assert await download_url(gql, viewer, beta) == locked("ADVANCE_UNPAID")
    assert await download_url(gql, viewer, final) == locked("ADVANCE_UNPAID")
    assert await listing(viewer) == [
        {
            "title": "Final build",
            "kind": "FINAL",
            "downloadCount": 0,
            "accessExpiresAt": None,
            "locked": "ADVANCE_UNPAID",
        },
        {
            "title": "Beta build",
            "kind": "BETA",
            "downloadCount": 0,
            "accessExpiresAt": None,
            "locked": "ADVANCE_UNPAID",
        },
    ]
    # while the agency opens both
    assert await fetch(setup.member, beta) == BETA_BYTES
    assert await fetch(owner, final) == FINAL_BYTES
    assert [node["locked"] for node in await listing(setup.member)] == [None, None]

    # when the advance is paid
    await pay(setup.advance, NOW - timedelta(days=1))
    # then the beta opens to the client and the final file waits for the balance
    assert await fetch(viewer, beta) == BETA_BYTES
    assert await download_url(gql, viewer, final) == locked("BALANCE_UNPAID")
    assert [node["locked"] for node in await listing(viewer)] == ["BALANCE_UNPAID", None]

    # when the balance is paid too
    paid_at = NOW - timedelta(hours=2)
    await pay(setup.balance, paid_at)
    # then both open, and access ends a year after the final files unlocked
    assert await fetch(viewer, final) == FINAL_BYTES
    assert await fetch(viewer, beta) == BETA_BYTES
    ends = (paid_at + timedelta(days=365)).isoformat()
    assert await listing(viewer) == [
        {
            "title": "Final build",
            "kind": "FINAL",
            "downloadCount": 2,
            "accessExpiresAt": ends,
            "locked": None,
        },
        {
            "title": "Beta build",
            "kind": "BETA",
            "downloadCount": 3,
            "accessExpiresAt": ends,
            "locked": None,
        },
    ]

    # when 366 days have passed
    frozen.now = NOW + timedelta(days=366)
    # then the client's access has ended, for both files; the agency's has not
    assert await download_url(gql, viewer, beta) == locked("ACCESS_EXPIRED")
    assert await download_url(gql, viewer, final) == locked("ACCESS_EXPIRED")
    assert [node["locked"] for node in await listing(viewer)] == ["ACCESS_EXPIRED"] * 2
    assert await fetch(owner, final) == FINAL_BYTES

    # and every download was logged with who made it, and counted
    downloads = (
        await DeliverableDownload.all()
        .order_by("created_at")
        .values_list("deliverable_id", "user_id", "created_at")
    )
    assert [(str(d), u) for d, u, _ in downloads] == [
        (beta, setup.member.user.id),
        (final, owner.user.id),
        (beta, viewer.user.id),
        (final, viewer.user.id),
        (beta, viewer.user.id),
        (final, owner.user.id),
    ]
    counts = dict(await Deliverable.all().values_list("title", "download_count"))
    assert counts == {"Beta build": 3, "Final build": 3}


async def test_access_is_checked_again_when_the_url_is_used(
    frozen: Clock, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a fully paid project whose client holds a fresh download URL
    setup = await setup_project(owner)
    beta = await upload_file(gql, http, owner, setup.project, BETA_BYTES)
    await pay(setup.advance, NOW - timedelta(days=365))
    await pay(setup.balance, NOW - timedelta(days=365) + timedelta(minutes=5))
    signed = await download_url(gql, setup.viewer, beta)
    assert signed["__typename"] == "DownloadUrl"
    # when the access period ends before the (still valid) URL is used
    frozen.now = NOW + timedelta(minutes=6)
    response = await http.get(signed["url"])
    # then the download is refused with the reason, and nothing is counted
    assert (response.status_code, response.json()) == (
        403,
        {"code": "ACCESS_EXPIRED", "message": "Access to this project's files has ended"},
    )
    assert (await Deliverable.get(id=beta)).download_count == 0
    assert await DeliverableDownload.all().count() == 0


# --- the URLs themselves ------------------------------------------------------------


def _tamper(url: str) -> str:
    """The URL with one character of its token's payload changed."""
    prefix, token = url.rsplit("/", 1)
    payload, signature = token.rsplit(".", 1)
    flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
    return f"{prefix}/{flipped}.{signature}"


async def test_tampered_and_misused_urls_are_forbidden(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an uploaded file with a download URL, and a declared file with an upload URL
    setup = await setup_project(owner)
    ready = await upload_file(gql, http, owner, setup.project, BETA_BYTES)
    signed = (await download_url(gql, owner, ready))["url"]
    waiting = await declare(gql, owner, setup.project, title="Second")
    before = stored_files(files_dir)
    forbidden = {"code": "INVALID_SIGNATURE", "message": "Invalid signature"}

    # when either URL is altered, or one is used for the other's purpose
    attempts = [
        await http.put(
            _tamper(waiting["uploadUrl"]),
            content=BETA_BYTES,
            headers={"Content-Type": "text/plain"},
        ),
        await http.get(_tamper(signed)),
        await http.get(signed.replace("/files/download/", "/files/upload/")),
        await http.put(
            signed.replace("/files/download/", "/files/upload/"),
            content=BETA_BYTES,
            headers={"Content-Type": "text/plain"},
        ),
        await http.get(waiting["uploadUrl"].replace("/files/upload/", "/files/download/")),
        await http.get("/files/download/not-a-token"),
    ]
    # then each is forbidden (a GET of an upload URL is not a route at all)
    assert [(r.status_code, r.json() if r.status_code == 403 else None) for r in attempts] == [
        (403, forbidden),
        (403, forbidden),
        (405, None),
        (403, forbidden),
        (403, forbidden),
        (403, forbidden),
    ]
    # and nothing was stored, downloaded or counted
    assert stored_files(files_dir) == before
    assert (await Deliverable.get(id=waiting["deliverable"]["id"])).status == (
        DeliverableStatus.AWAITING_UPLOAD
    )
    assert (await Deliverable.get(id=ready)).download_count == 0
    assert await DeliverableDownload.all().count() == 0


async def test_expired_urls_are_forbidden(
    frozen: Clock, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an uploaded file with a download URL, and a declared file with an upload URL
    setup = await setup_project(owner)
    ready = await upload_file(gql, http, owner, setup.project, BETA_BYTES)
    signed = (await download_url(gql, owner, ready))["url"]
    waiting = await declare(gql, owner, setup.project, title="Second")
    before = stored_files(files_dir)
    # when 15 minutes have passed
    frozen.now = NOW + timedelta(minutes=15)
    put = await http.put(
        waiting["uploadUrl"], content=BETA_BYTES, headers={"Content-Type": "text/plain"}
    )
    get = await http.get(signed)
    # then both URLs are forbidden as expired, and nothing was stored or counted
    expired = {"code": "URL_EXPIRED", "message": "This link has expired"}
    assert [(put.status_code, put.json()), (get.status_code, get.json())] == [
        (403, expired),
        (403, expired),
    ]
    assert stored_files(files_dir) == before
    assert (await Deliverable.get(id=ready)).download_count == 0
    assert await DeliverableDownload.all().count() == 0


async def test_url_lifetimes_follow_settings(
    frozen: Clock, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given URLs configured to last one minute
    configure_settings(
        get_settings().model_copy(
            update={"upload_url_ttl_seconds": 60, "download_url_ttl_seconds": 60}
        )
    )
    setup = await setup_project(owner)
    # when an upload and a download URL are made
    created = await declare(gql, owner, setup.project)
    ready = await upload_file(gql, http, owner, setup.project, BETA_BYTES, title="Other")
    signed = await download_url(gql, owner, ready)
    # then each expires a minute from now
    assert created["expiresAt"] == signed["expiresAt"] == "2026-05-04T09:31:00+00:00"


# --- serving the file ----------------------------------------------------------------


async def test_a_download_carries_the_name_and_type(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a PDF whose name is not plain ASCII
    setup = await setup_project(owner)
    body = b"%PDF-1.7 " + os.urandom(70_000)
    ready = await upload_file(
        gql,
        http,
        owner,
        setup.project,
        body,
        filename='Résumé "final".pdf',
        contentType="application/pdf",
    )
    signed = (await download_url(gql, owner, ready))["url"]
    # when its download URL is asked for its headers only
    head = await http.head(signed)
    # then they describe the file, and nothing is counted
    expected = {
        "content-type": "application/pdf",
        "content-length": str(len(body)),
        "content-disposition": (
            'attachment; filename="R_sum_ _final_.pdf"; '
            "filename*=UTF-8''R%C3%A9sum%C3%A9%20%22final%22.pdf"
        ),
        "x-content-type-options": "nosniff",
        "cache-control": "private, no-store",
        "etag": f'"{hashlib.sha256(body).hexdigest()}"',
    }
    assert head.status_code == 200
    assert {key: head.headers.get(key) for key in expected} == expected
    assert (await Deliverable.get(id=ready)).download_count == 0
    # when it is downloaded
    response = await http.get(signed)
    # then the same headers come with exactly the bytes, and it is counted
    assert response.status_code == 200
    assert {key: response.headers.get(key) for key in expected} == expected
    assert response.content == body
    assert (await Deliverable.get(id=ready)).download_count == 1


async def test_concurrent_downloads_are_each_logged_and_counted(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given a paid project's final file and a download URL of the client's
    setup = await setup_project(owner)
    await pay(setup.advance, datetime.now(UTC))
    await pay(setup.balance, datetime.now(UTC))
    final = await upload_file(
        gql, http, owner, setup.project, FINAL_BYTES, kind="FINAL", filename="final.bin"
    )
    signed = (await download_url(gql, setup.viewer, final))["url"]
    # when it is downloaded ten times at once
    responses = await asyncio.gather(*(http.get(signed) for _ in range(10)))
    # then every download got the whole file, and every one was logged and counted
    assert [(r.status_code, r.content == FINAL_BYTES) for r in responses] == [(200, True)] * 10
    assert (await Deliverable.get(id=final)).download_count == 10
    assert (
        await DeliverableDownload.filter(deliverable_id=final, user_id=setup.viewer.user.id).count()
        == 10
    )


async def test_a_deleted_file_is_removed_and_its_urls_stop_working(
    gql: GraphQLClient, http: httpx.AsyncClient, owner: Account, files_dir: Path
) -> None:
    # given an uploaded file and a download URL for it
    setup = await setup_project(owner)
    ready = await upload_file(gql, http, owner, setup.project, BETA_BYTES)
    signed = (await download_url(gql, owner, ready))["url"]
    assert len(stored_files(files_dir)) == 1
    # when the owner deletes it
    deleted = await gql.execute(DELETE_DELIVERABLE, {"id": ready}, token=owner.token)
    # then it is soft-deleted, its file is gone from storage, and the URL finds nothing
    assert deleted == {"deleteDeliverable": {"__typename": "Deliverable", "id": ready}}
    assert (await Deliverable.get(id=ready)).deleted_at is not None
    assert stored_files(files_dir) == {}
    response = await http.get(signed)
    assert (response.status_code, response.json()["code"]) == (404, "NOT_FOUND")
