"""exportProgress over a real websocket: an export's state now, its progress, its outcome."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from gql.transport.exceptions import TransportQueryError

from settle.core.outbox import relay_later, transaction
from settle.core.relay import relay_pending
from settle.core.settings import configure_settings, get_settings
from settle.core.storage import get_storage
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.export import ExportEntity
from settle.services import export as export_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.files import StallingStorage
from tests.fixtures.websocket import Subscription

EXPORT_PROGRESS = """
subscription ExportProgress($id: ID!) {
  exportProgress(id: $id) { id status rows totalRows url }
}
"""


async def test_progress_then_the_outcome_then_the_end(
    db: Backend, ws_url: str, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given five clients read two at a time, and an export of them whose job waits
    configure_settings(
        get_settings().model_copy(
            update={"export_page_size": 2, "export_progress_interval_seconds": 0}
        )
    )
    for i in range(5):
        await Client.create(agency_id=owner.agency_id, name=f"Client {i}", currency="USD")
    with relay_later():
        async with transaction():
            export = await export_service.create_export(
                owner.actor, ExportEntity.CLIENTS, ["id"], export_service.ExportFilter()
            )
    gated = StallingStorage(get_storage(), after=3)  # the header, then two pages
    monkeypatch.setattr(export_service, "get_storage", lambda: gated)
    try:
        async with Subscription(
            ws_url,
            EXPORT_PROGRESS,
            "exportProgress",
            token=owner.token,
            variables={"id": str(export.id)},
        ) as sub:
            # when the owner subscribes, it hears the export as it is: pending
            first = await sub.next()
            assert first == {
                "id": str(export.id),
                "status": "PENDING",
                "rows": 0,
                "totalRows": 5,
                "url": None,
            }

            # when the job is sent and the run stops after its second page
            await relay_pending(older_than=timedelta(0))
            seen = [await sub.next()]
            while seen[-1]["rows"] < 2:
                seen.append(await sub.next())

            # then the owner heard it running, with the first page's progress
            assert {event["status"] for event in seen} == {"RUNNING"}
            assert seen[-1]["rows"] == 2

            # when the run goes on to the end
            gated.resume.set()
            rest = [await sub.next()]
            while rest[-1]["status"] != "COMPLETED":
                rest.append(await sub.next())

            # then rows only grew, and the last event is the completed export with its link
            figures = [event["rows"] for event in seen + rest]
            assert figures == sorted(figures)
            assert rest[-1]["rows"] == 5
            assert rest[-1]["url"].startswith("http://settle.test/files/exports/")
            # and the subscription ends by itself
            await asyncio.wait_for(sub._running, 5)  # type: ignore[arg-type]
    finally:
        gated.resume.set()
        await db.drain()
        configure_settings(db.settings)


async def test_a_finished_export_is_told_once_and_ends(
    db: Backend, ws_url: str, owner: Account
) -> None:
    # given a completed export
    await create_client(owner, name="Acme")
    async with transaction():
        export = await export_service.create_export(
            owner.actor, ExportEntity.CLIENTS, None, export_service.ExportFilter()
        )
    await db.drain()

    # when the owner subscribes to it
    async with Subscription(
        ws_url,
        EXPORT_PROGRESS,
        "exportProgress",
        token=owner.token,
        variables={"id": str(export.id)},
    ) as sub:
        event = await sub.next()
        # then it hears it completed, and the subscription ends
        assert (event["status"], event["rows"]) == ("COMPLETED", 1)
        await asyncio.wait_for(sub._running, 5)  # type: ignore[arg-type]


async def test_an_export_the_caller_may_not_see_is_not_found(
    db: Backend, ws_url: str, owner: Account, rival: Account
) -> None:
    # given the owner's export, and a client viewer of the owner's agency
    acme = await create_client(owner, name="Acme")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=acme)
    async with transaction():
        export = await export_service.create_export(
            owner.actor, ExportEntity.CLIENTS, None, export_service.ExportFilter()
        )
    await db.drain()

    # when the rival, and the viewer, subscribe to it
    for account in (rival, viewer):
        async with Subscription(
            ws_url,
            EXPORT_PROGRESS,
            "exportProgress",
            token=account.token,
            variables={"id": str(export.id)},
        ) as sub:
            # then each is refused as the export query answers: not found
            with pytest.raises(TransportQueryError) as raised:
                await sub.next()
        assert raised.value.errors == [
            {"message": "Export not found", "extensions": {"code": "NOT_FOUND"}}
        ]


async def test_each_watcher_hears_a_link_signed_for_themselves(
    db: Backend, ws_url: str, owner: Account
) -> None:
    # given two admins of the agency watching one pending export with the same operation
    await create_client(owner, name="Acme")
    ada = await create_user(owner, role=Role.ADMIN)
    bea = await create_user(owner, role=Role.ADMIN)
    with relay_later():
        async with transaction():
            export = await export_service.create_export(
                owner.actor, ExportEntity.CLIENTS, ["id"], export_service.ExportFilter()
            )
    watchers = {
        user.user.id: Subscription(
            ws_url,
            EXPORT_PROGRESS,
            "exportProgress",
            token=user.token,
            variables={"id": str(export.id)},
        )
        for user in (ada, bea)
    }
    async with watchers[ada.user.id] as first, watchers[bea.user.id] as second:
        for sub in (first, second):
            assert (await sub.next())["status"] == "PENDING"

        # when the export runs to the end
        await relay_pending(older_than=timedelta(0))
        await db.drain()

        # then each hears the completed export with a link that names them, not the other
        for user_id, sub in ((ada.user.id, first), (bea.user.id, second)):
            event = await sub.next()
            while event["status"] != "COMPLETED":
                event = await sub.next()
            token = event["url"].rsplit("/", 1)[1]
            assert export_service._signer().verify(token)["u"] == str(user_id)
