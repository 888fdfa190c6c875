"""The importProgress subscription over a real websocket: the import's state now, then its
batches as they commit, a few times a second at most, until it has finished."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from gql.transport.exceptions import TransportQueryError

from settle.core.settings import configure_settings, get_settings
from settle.models.agency import Role
from settle.models.outbox import OutboxMessage
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.csv_import import csv_text, imported, start, uploaded
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription

pytestmark = pytest.mark.usefixtures("files_dir")

IMPORT_PROGRESS = """
subscription ImportProgress($id: ID!) {
  importProgress(id: $id) {
    importId status processed total created updated skipped failed
  }
}
"""

SEVEN_CLIENTS = csv_text([["name"], *[[f"Client {n}"] for n in range(1, 8)]]).encode()


def progress(
    import_id: str, status: str, processed: int, total: int | None, **counts: int
) -> dict[str, Any]:
    return {
        "importId": import_id,
        "status": status,
        "processed": processed,
        "total": total,
        "created": counts.get("created", 0),
        "updated": counts.get("updated", 0),
        "skipped": counts.get("skipped", 0),
        "failed": counts.get("failed", 0),
    }


@pytest.fixture
def batches(db: Backend) -> Iterator[None]:
    """Two rows a batch, every batch announced."""
    current = get_settings()
    configure_settings(
        current.model_copy(update={"import_batch_size": 2, "import_progress_interval_seconds": 0})
    )
    yield
    configure_settings(current)


def watch(url: str, account: Account, import_id: str) -> Subscription:
    return Subscription(
        url, IMPORT_PROGRESS, "importProgress", token=account.token, variables={"id": import_id}
    )


async def until_subscribed(account: Account) -> None:
    channel = channels.imports(account.agency_id)

    async def subscribed() -> bool:
        return await get_bus().subscriber_count(channel) >= 1

    await wait_for(subscribed)


async def test_the_progress_of_an_import_is_pushed_until_it_completes(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    batches: None,
) -> None:
    # given an uploaded file of seven clients
    import_id = await uploaded(gql, http, owner, SEVEN_CLIENTS)

    async with watch(ws_url, owner, import_id) as sub:
        # then the subscriber is told the import's state at once
        assert await sub.next() == progress(import_id, "UPLOADED", 0, None)
        await until_subscribed(owner)

        # when the import is started and its job runs, two rows a batch
        await start(gql, owner, import_id)
        await db.drain()

        # then each step is pushed in order, up to the completed import
        events = [await sub.next()]
        while events[-1]["status"] != "COMPLETED":
            events.append(await sub.next())
    assert events == [
        progress(import_id, "QUEUED", 0, 7),
        progress(import_id, "RUNNING", 2, 7, created=2),
        progress(import_id, "RUNNING", 4, 7, created=4),
        progress(import_id, "RUNNING", 6, 7, created=6),
        progress(import_id, "COMPLETED", 7, 7, created=7),
    ]


async def test_the_subscription_ends_after_the_finished_state(
    db: Backend, ws_url: str, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given an import that has completed
    done = await imported(db, gql, http, owner, SEVEN_CLIENTS)
    assert done["status"] == "COMPLETED"
    import_id = (
        await gql.execute("{ imports(first: 1) { edges { node { id } } } }", token=owner.token)
    )["imports"]["edges"][0]["node"]["id"]

    # when the owner subscribes to it
    async with watch(ws_url, owner, import_id) as sub:
        # then it is told the final state, and the subscription completes
        assert await sub.next() == progress(import_id, "COMPLETED", 7, 7, created=7)
        with pytest.raises(pytest.fail.Exception, match="completed without an event"):
            await sub.next()


async def test_progress_is_announced_at_most_once_per_interval(
    db: Backend, gql: GraphQLClient, http: httpx.AsyncClient, owner: Account
) -> None:
    # given batches of one row and an interval far longer than the import takes
    configure_settings(
        get_settings().model_copy(
            update={"import_batch_size": 1, "import_progress_interval_seconds": 3600}
        )
    )
    # when ten rows are imported
    body = csv_text([["name"], *[[f"Client {n}"] for n in range(10)]]).encode()
    result = await imported(db, gql, http, owner, body)
    assert (result["status"], result["created"]) == ("COMPLETED", 10)

    # then progress was announced three times: queued, the first batch, and the end
    announced = await OutboxMessage.filter(topic=channels.imports(owner.agency_id)).order_by("id")
    assert [(m.payload["status"], m.payload["processed"]) for m in announced] == [
        ("queued", 0),
        ("running", 1),
        ("completed", 10),
    ]


async def test_only_the_agencys_staff_watch_an_import(
    db: Backend,
    ws_url: str,
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    owner: Account,
    rival: Account,
) -> None:
    # given the owner's uploaded import, a client lead of the owner's agency and the rival
    import_id = await uploaded(gql, http, owner, SEVEN_CLIENTS)
    client = await create_client(owner, name="Acme")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    member = await create_user(owner, role=Role.MEMBER)

    # when the lead and the rival subscribe to it, and to an id that is not an import
    refusals = []
    for account, target in ((lead, import_id), (rival, import_id), (owner, "not-an-id")):
        async with watch(ws_url, account, target) as refused:
            with pytest.raises(TransportQueryError) as raised:
                await refused.next()
        refusals.append(raised.value.errors)

    # then each is refused as the import query would answer: not found
    not_found = [{"message": "Import not found", "extensions": {"code": "NOT_FOUND"}}]
    assert refusals == [not_found] * 3
    # and a member of the agency may watch it
    async with watch(ws_url, member, import_id) as sub:
        assert await sub.next() == progress(import_id, "UPLOADED", 0, None)
