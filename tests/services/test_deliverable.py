"""The deliverable service: the access rule, what an upload may declare, and the download log."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from settle.core import clock
from settle.core.errors import NotFoundError, PermissionDeniedError, ValidationError
from settle.core.outbox import transaction
from settle.core.settings import configure_settings, get_settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.deliverable import (
    Deliverable,
    DeliverableDownload,
    DeliverableKind,
    DeliverableStatus,
)
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.project import Project
from settle.services import deliverable as deliverable_service
from settle.services.deliverable import Access, LockReason
from settle.services.milestone import payment_state
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user

NOW = datetime(2026, 5, 4, 9, 30, tzinfo=UTC)
ADVANCE_PAID = NOW - timedelta(days=10)
BALANCE_PAID = NOW - timedelta(days=5)
A = MilestoneKind.ADVANCE
B = MilestoneKind.BALANCE
S = MilestoneKind.STANDARD


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


async def client_of(project: Project) -> Client:
    return await Client.get(id=project.client_id)


async def make_project(account: Account) -> Project:
    client = await create_client(account, name="Acme", currency="USD")
    return await Project.create(
        agency_id=account.agency_id, client_id=client.id, name="Website", currency="USD"
    )


async def add_milestone(
    project: Project, kind: MilestoneKind, paid_at: datetime | None = None
) -> Milestone:
    """A milestone written straight to the table, paid (at ``paid_at``) or not."""
    return await Milestone.create(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=kind.value.title(),
        kind=kind,
        amount_minor=50_000,
        currency=project.currency,
        status=MilestoneStatus.PAID if paid_at else MilestoneStatus.APPROVED,
        payment_status=MilestonePaymentStatus.PAID if paid_at else MilestonePaymentStatus.UNPAID,
        amount_paid_minor=50_000 if paid_at else 0,
        paid_at=paid_at,
    )


async def add_deliverable(project: Project, kind: DeliverableKind) -> Deliverable:
    row = Deliverable(
        agency_id=project.agency_id,
        project_id=project.id,
        client_id=project.client_id,
        title=f"{kind.value} build",
        kind=kind,
        status=DeliverableStatus.READY,
        filename=f"{kind.value}.zip",
        content_type="application/zip",
        size_bytes=3,
    )
    row.storage_key = f"deliverables/{project.agency_id}/{project.id}/{row.id}"
    await row.save()
    return row


def upload_values(**overrides: Any) -> dict[str, Any]:
    return {
        "title": "Beta build",
        "kind": DeliverableKind.BETA,
        "filename": "beta.zip",
        "content_type": "application/zip",
        "size_bytes": 1024,
        **overrides,
    }


async def row_counts() -> dict[str, int]:
    return {
        "deliverables": await Deliverable.all().count(),
        "events": await ActivityEvent.filter(entity_type="deliverable").count(),
    }


# --- the access rule ------------------------------------------------------------

# milestones (kind, paid at), then what a client user gets for a beta and a final
# file (None = open), and when client access ends
ACCESS_CASES: dict[str, tuple[list[tuple[MilestoneKind, datetime | None]], Any, Any, Any]] = {
    "no milestones": ([], None, LockReason.BALANCE_UNPAID, None),
    "advance unpaid": (
        [(A, None), (B, None)],
        LockReason.ADVANCE_UNPAID,
        LockReason.ADVANCE_UNPAID,
        None,
    ),
    "advance paid": ([(A, ADVANCE_PAID), (B, None)], None, LockReason.BALANCE_UNPAID, None),
    "all paid": (
        [(A, ADVANCE_PAID), (B, BALANCE_PAID)],
        None,
        None,
        BALANCE_PAID + timedelta(days=365),
    ),
    "no advance, unpaid": ([(S, None)], None, LockReason.BALANCE_UNPAID, None),
    "no advance, paid": ([(S, ADVANCE_PAID)], None, None, ADVANCE_PAID + timedelta(days=365)),
}


@pytest.mark.parametrize("case", list(ACCESS_CASES), ids=list(ACCESS_CASES))
async def test_access_by_payment_state(frozen: Clock, owner: Account, case: str) -> None:
    # given a project whose milestones are paid as the case says, with a beta and a final file
    milestones, beta_lock, final_lock, expires_at = ACCESS_CASES[case]
    project = await make_project(owner)
    for kind, paid_at in milestones:
        await add_milestone(project, kind, paid_at)
    beta = await add_deliverable(project, DeliverableKind.BETA)
    final = await add_deliverable(project, DeliverableKind.FINAL)
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=await client_of(project))
    member = await create_user(owner, role=Role.MEMBER)
    state = (await payment_state([project.id]))[project.id]

    # when access is asked for each file, by the client and by agency members
    def access(account: Account, deliverable: Deliverable) -> Access:
        return deliverable_service.access_for(account.actor, deliverable, state)

    # then the client gets exactly the case's answer
    assert access(viewer, beta) == Access(beta_lock is None, beta_lock, expires_at)
    assert access(viewer, final) == Access(final_lock is None, final_lock, expires_at)
    # and agency members always get in, seeing the same expiry
    for account in (owner, member):
        for deliverable in (beta, final):
            assert access(account, deliverable) == Access(True, None, expires_at)


async def test_access_ends_after_the_access_period(frozen: Clock, owner: Account) -> None:
    # given a fully paid project, its final file, and a client lead
    project = await make_project(owner)
    await add_milestone(project, A, ADVANCE_PAID)
    await add_milestone(project, B, BALANCE_PAID)
    files = [
        await add_deliverable(project, DeliverableKind.BETA),
        await add_deliverable(project, DeliverableKind.FINAL),
    ]
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=await client_of(project))
    state = (await payment_state([project.id]))[project.id]
    ends = BALANCE_PAID + timedelta(days=365)

    # when the clock reaches one second before the end, then files are open
    frozen.now = ends - timedelta(seconds=1)
    for deliverable in files:
        assert deliverable_service.access_for(lead.actor, deliverable, state).allowed
    # when it reaches the end, then both beta and final files are closed to the client
    frozen.now = ends
    for deliverable in files:
        assert deliverable_service.access_for(lead.actor, deliverable, state) == Access(
            False, LockReason.ACCESS_EXPIRED, ends
        )
        # but not to the agency
        assert deliverable_service.access_for(owner.actor, deliverable, state).allowed
    # when the period is configured to 30 days instead, then it ended long ago
    configure_settings(get_settings().model_copy(update={"deliverable_access_days": 30}))
    frozen.now = BALANCE_PAID + timedelta(days=29)
    assert deliverable_service.access_for(lead.actor, files[1], state).expires_at == (
        BALANCE_PAID + timedelta(days=30)
    )
    assert deliverable_service.access_for(lead.actor, files[1], state).allowed
    frozen.now = BALANCE_PAID + timedelta(days=30)
    assert deliverable_service.access_for(lead.actor, files[1], state).reason == (
        LockReason.ACCESS_EXPIRED
    )


async def test_a_refunded_milestone_closes_the_final_files(frozen: Clock, owner: Account) -> None:
    # given a fully paid project whose balance is then refunded in full
    project = await make_project(owner)
    await add_milestone(project, A, ADVANCE_PAID)
    balance = await add_milestone(project, B, BALANCE_PAID)
    final = await add_deliverable(project, DeliverableKind.FINAL)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=await client_of(project))
    await Milestone.filter(id=balance.id).update(
        status=MilestoneStatus.APPROVED,
        payment_status=MilestonePaymentStatus.REFUNDED,
        paid_at=None,
    )
    # when the client asks for the final file
    state = (await payment_state([project.id]))[project.id]
    # then it is locked again, as unpaid
    assert deliverable_service.access_for(lead.actor, final, state) == Access(
        False, LockReason.BALANCE_UNPAID, None
    )


# --- declaring an upload -----------------------------------------------------------

INVALID_UPLOADS: dict[str, tuple[dict[str, Any], str, str]] = {
    "blank title": ({"title": "  "}, "title", "REQUIRED"),
    "long title": ({"title": "t" * 201}, "title", "TOO_LONG"),
    "bad kind": ({"kind": "draft"}, "kind", "VALIDATION_ERROR"),
    "blank filename": ({"filename": ""}, "filename", "REQUIRED"),
    "path filename": ({"filename": "../../etc/passwd"}, "filename", "INVALID_FILENAME"),
    "windows path": ({"filename": "C:\\fakepath\\a.zip"}, "filename", "INVALID_FILENAME"),
    "dot-dot filename": ({"filename": ".."}, "filename", "INVALID_FILENAME"),
    "control char": ({"filename": "a\x00.zip"}, "filename", "INVALID_CHARACTERS"),
    "not a media type": ({"content_type": "zip"}, "contentType", "INVALID_CONTENT_TYPE"),
    "octet-stream": (
        {"content_type": "application/octet-stream"},
        "contentType",
        "CONTENT_TYPE_NOT_ALLOWED",
    ),
    "svg": ({"content_type": "image/svg+xml"}, "contentType", "CONTENT_TYPE_NOT_ALLOWED"),
    "html": ({"content_type": "text/html"}, "contentType", "CONTENT_TYPE_NOT_ALLOWED"),
    "empty file": ({"size_bytes": 0}, "sizeBytes", "OUT_OF_RANGE"),
    "negative size": ({"size_bytes": -5}, "sizeBytes", "OUT_OF_RANGE"),
    "over the limit": ({"size_bytes": 500 * 1024 * 1024 + 1}, "sizeBytes", "TOO_LARGE"),
}


@pytest.mark.parametrize("case", list(INVALID_UPLOADS), ids=list(INVALID_UPLOADS))
async def test_an_invalid_upload_names_the_field_and_writes_nothing(
    owner: Account, case: str
) -> None:
    # given a project
    project = await make_project(owner)
    before = await row_counts()
    overrides, field, code = INVALID_UPLOADS[case]
    # when an upload is declared with one bad field
    with pytest.raises(ValidationError) as caught:
        async with transaction():
            await deliverable_service.create_upload(
                owner.actor, project.id, upload_values(**overrides)
            )
    # then the error names that field, with its code, and nothing was written
    assert (caught.value.field, caught.value.code) == (field, code)
    assert await row_counts() == before


async def test_the_limit_and_allow_list_come_from_settings(owner: Account) -> None:
    # given a deployment limiting files to 1000 bytes and allowing octet-stream
    project = await make_project(owner)
    configure_settings(
        get_settings().model_copy(
            update={
                "deliverable_max_bytes": 1000,
                "deliverable_content_types": ("application/octet-stream",),
            }
        )
    )
    # when files of 1000 and 1001 bytes are declared
    async with transaction():
        upload = await deliverable_service.create_upload(
            owner.actor,
            project.id,
            upload_values(size_bytes=1000, content_type="Application/Octet-Stream; x=1"),
        )
    with pytest.raises(ValidationError) as caught:
        async with transaction():
            await deliverable_service.create_upload(
                owner.actor,
                project.id,
                upload_values(size_bytes=1001, content_type="application/octet-stream"),
            )
    # then the first is accepted (its type normalised), the second is too large
    assert (upload.deliverable.size_bytes, upload.deliverable.content_type) == (
        1000,
        "application/octet-stream",
    )
    assert (caught.value.field, caught.value.code, caught.value.message) == (
        "sizeBytes",
        "TOO_LARGE",
        "sizeBytes must be at most 1000",
    )
    # and a type allowed by default is not allowed any more
    with pytest.raises(ValidationError) as refused:
        async with transaction():
            await deliverable_service.create_upload(owner.actor, project.id, upload_values())
    assert refused.value.message == (
        "contentType application/zip is not allowed; allowed: application/octet-stream"
    )


async def test_create_upload_writes_the_row_and_the_timeline(frozen: Clock, owner: Account) -> None:
    # given a project with a milestone
    project = await make_project(owner)
    milestone = await add_milestone(project, A)
    # when a member declares a final file of that milestone
    member = await create_user(owner, role=Role.MEMBER, name="Mia Member")
    async with transaction():
        upload = await deliverable_service.create_upload(
            member.actor,
            project.id,
            upload_values(
                title=" Final cut ",
                kind="final",
                filename="Final cut.mp4",
                content_type="video/MP4",
                size_bytes=2048,
            ),
            milestone_id=milestone.id,
        )
    # then the row waits for its file under a key of its own
    row = await Deliverable.get(id=upload.deliverable.id)
    assert (
        row.agency_id,
        row.project_id,
        row.client_id,
        row.milestone_id,
        row.title,
        row.kind,
        row.status,
        row.filename,
        row.content_type,
        row.size_bytes,
        row.checksum_sha256,
        row.uploaded_at,
        row.download_count,
        row.storage_key,
    ) == (
        owner.agency_id,
        project.id,
        project.client_id,
        milestone.id,
        "Final cut",
        DeliverableKind.FINAL,
        DeliverableStatus.AWAITING_UPLOAD,
        "Final cut.mp4",
        "video/mp4",
        2048,
        None,
        None,
        0,
        f"deliverables/{owner.agency_id}/{project.id}/{row.id}",
    )
    # and the upload URL is signed for 15 minutes
    assert upload.upload.expires_at == NOW + timedelta(minutes=15)
    assert upload.upload.url.startswith("http://settle.test/files/upload/")
    # and the timeline records the declaration, by the member
    event = await ActivityEvent.get(entity_id=row.id)
    assert (event.verb, event.actor_id, event.client_id, event.summary) == (
        "created",
        member.user.id,
        project.client_id,
        "Deliverable Final cut added to Website, awaiting upload",
    )
    assert event.changes == {
        "content_type": {"before": None, "after": "video/mp4"},
        "filename": {"before": None, "after": "Final cut.mp4"},
        "kind": {"before": None, "after": "final"},
        "milestone_id": {"before": None, "after": str(milestone.id)},
        "project_id": {"before": None, "after": str(project.id)},
        "size_bytes": {"before": None, "after": 2048},
        "status": {"before": None, "after": "awaiting_upload"},
        "title": {"before": None, "after": "Final cut"},
    }


async def test_the_milestone_must_be_of_the_project(owner: Account, rival: Account) -> None:
    # given two projects of the owner, and a project of a rival agency
    project = await make_project(owner)
    other = await make_project(owner)
    theirs = await make_project(rival)
    before = await row_counts()
    # when an upload names the other project's milestone, then it is refused by field
    with pytest.raises(ValidationError) as caught:
        async with transaction():
            await deliverable_service.create_upload(
                owner.actor,
                project.id,
                upload_values(),
                milestone_id=(await add_milestone(other, A)).id,
            )
    assert (caught.value.field, caught.value.code) == ("milestoneId", "MISMATCH")
    # when it names the rival's milestone, then that milestone does not exist
    with pytest.raises(NotFoundError) as missing:
        async with transaction():
            await deliverable_service.create_upload(
                owner.actor,
                project.id,
                upload_values(),
                milestone_id=(await add_milestone(theirs, A)).id,
            )
    assert missing.value.message == "Milestone not found"
    assert await row_counts() == before


async def test_who_may_declare_see_and_delete(owner: Account) -> None:
    # given a project with a file waiting for its upload, a member and a client lead
    project = await make_project(owner)
    member = await create_user(owner, role=Role.MEMBER)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=await client_of(project))
    async with transaction():
        upload = await deliverable_service.create_upload(member.actor, project.id, upload_values())
    waiting = upload.deliverable.id
    # when the client lead declares an upload, then it is refused
    with pytest.raises(PermissionDeniedError):
        async with transaction():
            await deliverable_service.create_upload(lead.actor, project.id, upload_values())
    # and the waiting file is invisible to them until it is uploaded
    with pytest.raises(NotFoundError):
        await deliverable_service.get_deliverable(lead.actor, waiting)
    await Deliverable.filter(id=waiting).update(status=DeliverableStatus.READY)
    assert (await deliverable_service.get_deliverable(lead.actor, waiting)).id == waiting
    # when a member or the client lead deletes it, then they may not
    for account in (member, lead):
        with pytest.raises(PermissionDeniedError):
            async with transaction():
                await deliverable_service.delete_deliverable(account.actor, waiting)
    # when the owner deletes it, then it is gone from every lookup
    async with transaction():
        await deliverable_service.delete_deliverable(owner.actor, waiting)
    for account in (owner, member, lead):
        with pytest.raises(NotFoundError):
            await deliverable_service.get_deliverable(account.actor, waiting)


# --- the download log ----------------------------------------------------------------


async def test_concurrent_downloads_are_all_counted(owner: Account) -> None:
    # given a ready file and two users
    project = await make_project(owner)
    deliverable = await add_deliverable(project, DeliverableKind.BETA)
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=await client_of(project))

    async def download(account: Account) -> None:
        async with transaction():
            await deliverable_service.record_download(
                deliverable_service.Download(deliverable, account.actor)
            )

    # when 12 downloads are recorded at once, each in its own transaction
    await asyncio.gather(*(download(owner if n % 3 == 0 else lead) for n in range(12)))
    # then not one increment is lost, and each download is logged with who made it
    row = await Deliverable.get(id=deliverable.id)
    assert row.download_count == 12
    logged = await DeliverableDownload.filter(deliverable_id=deliverable.id).values_list(
        "user_id", "agency_id"
    )
    assert sorted(logged) == sorted(
        [(owner.user.id, owner.agency_id)] * 4 + [(lead.user.id, owner.agency_id)] * 8
    )
