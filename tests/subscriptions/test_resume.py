"""Resuming from a cursor over a real websocket: what was missed, in order, then live, once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from gql.transport.exceptions import TransportQueryError

from settle.core import clock
from settle.core.outbox import emit_event, transaction
from settle.models.agency import Role
from settle.models.client import Client
from settle.models.outbox import OutboxMessage
from settle.subscriptions import channels, stream
from settle.subscriptions.bus import EventBus, StreamEntry, cursor_key, get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_client, create_project, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import Subscription, serve
from tests.subscriptions.test_activity import CREATE_CLIENT

PAYMENTS = """
subscription Payments($after: String, $invoiceId: ID) {
  paymentStatusChanged(after: $after, invoiceId: $invoiceId) { paymentId status cursor }
}
"""

ACTIVITY = """
subscription Activity($after: String) {
  activityAdded(after: $after) { verb summary clientId cursor }
}
"""

MILESTONES = """
subscription Milestones($projectId: ID!, $after: String) {
  milestoneStatusChanged(projectId: $projectId, after: $after) { milestoneId status cursor }
}
"""

INVOICES = """
subscription Invoices($clientId: ID!, $after: String) {
  invoiceStatusChanged(clientId: $clientId, after: $after) { invoiceId status cursor }
}
"""


@pytest.fixture
async def ws_url(db: Backend) -> AsyncIterator[str]:
    async with serve(db.settings.model_copy(update={"rate_limits_enabled": False})) as url:
        yield url


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


def payment(account: Account, client_id: uuid.UUID, invoice_id: uuid.UUID) -> dict[str, Any]:
    """A payment change of the account's agency, as services.payment announces it."""
    return {
        "paymentId": str(uuid.uuid4()),
        "agencyId": str(account.agency_id),
        "clientId": str(client_id),
        "projectId": None,
        "invoiceIds": [str(invoice_id)],
        "milestoneIds": [],
        "status": "pending",
        "provider": "sandbox",
        "amountMinor": 1,
        "amountRefundedMinor": 0,
        "currency": "INR",
        "changedAt": clock.now().isoformat(),
    }


async def announce(account: Account, message: dict[str, Any]) -> str:
    """Commit ``message`` through the outbox, as a service does; returns its payment id."""
    async with transaction():
        await emit_event(channels.payments(account.agency_id), message)
    return str(message["paymentId"])


async def until_listening(account: Account, count: int = 1) -> None:
    channel = channels.payments(account.agency_id)

    async def listening() -> bool:
        return await get_bus().subscriber_count(channel) == count

    await wait_for(listening)


async def heard(subscription: Subscription, count: int) -> list[dict[str, Any]]:
    return [await subscription.next() for _ in range(count)]


def ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["paymentId"] for event in events]


def in_order(events: list[dict[str, Any]]) -> bool:
    places = [tuple(int(part) for part in event["cursor"].split("-")) for event in events]
    return places == sorted(places) and len(set(places)) == len(places)


async def test_a_client_back_with_its_cursor_hears_what_it_missed_in_order_then_live(
    db: Backend, ws_url: str, owner: Account, client: Client
) -> None:
    invoice, other_invoice = uuid.uuid4(), uuid.uuid4()
    # given a subscriber of one invoice's payments that heard one change, then went away
    async with Subscription(
        ws_url,
        PAYMENTS,
        "paymentStatusChanged",
        token=owner.token,
        variables={"invoiceId": str(invoice)},
    ) as first:
        await until_listening(owner)
        seen = await announce(owner, payment(owner, client.id, invoice))
        last = await first.next()
        assert last["paymentId"] == seen
    await until_listening(owner, 0)

    # when changes of that invoice and of another are committed while it is away
    missed = []
    for n in range(6):
        target = invoice if n % 2 == 0 else other_invoice
        paid = await announce(owner, payment(owner, client.id, target))
        if target == invoice:
            missed.append(paid)

    # and it subscribes again with the last cursor it heard
    async with Subscription(
        ws_url,
        PAYMENTS,
        "paymentStatusChanged",
        token=owner.token,
        variables={"invoiceId": str(invoice), "after": last["cursor"]},
    ) as again:
        # then it hears the missed changes of its invoice, in order
        replayed = await heard(again, len(missed))
        assert ids(replayed) == missed

        # and then live ones, each once: the next event after a live one is the next live
        await until_listening(owner)
        live = [await announce(owner, payment(owner, client.id, invoice)) for _ in range(2)]
        assert ids(await heard(again, 2)) == live
        fence = await announce(owner, payment(owner, client.id, invoice))
        assert (await again.next())["paymentId"] == fence

    # and every cursor it was given is later than the one before
    assert in_order([last, *replayed])
    # and each change went out through the outbox once
    assert await OutboxMessage.filter(published_at__isnull=True).count() == 0


async def test_events_published_during_the_replay_are_heard_once_in_their_place(
    db: Backend, ws_url: str, owner: Account, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    invoice = uuid.uuid4()
    # given a cursor, then five changes after it; the replay reads two entries at a time
    cursor = await get_bus().stream_tail(str(owner.agency_id))
    missed = [await announce(owner, payment(owner, client.id, invoice)) for _ in range(5)]
    monkeypatch.setattr(stream, "REPLAY_PAGE", 2)

    # and a change is committed right before each of the replay's first three reads: it
    # reaches the subscriber live and is in the stream the replay is reading
    bus = get_bus()
    read_stream = bus.read_stream
    during: list[str] = []

    async def read_while_others_publish(
        agency_id: str, after: str, count: int
    ) -> list[StreamEntry]:
        if len(during) < 3:
            during.append(await announce(owner, payment(owner, client.id, invoice)))
        return await read_stream(agency_id, after, count)

    monkeypatch.setattr(bus, "read_stream", read_while_others_publish)

    # when the client subscribes with its cursor
    async with Subscription(
        ws_url,
        PAYMENTS,
        "paymentStatusChanged",
        token=owner.token,
        variables={"invoiceId": str(invoice), "after": cursor},
    ) as subscriber:
        # then it hears all of them in the order they were committed, each once
        events = await heard(subscriber, 8)
        assert ids(events) == missed + during
        assert in_order(events)
        await until_listening(owner)
        fence = await announce(owner, payment(owner, client.id, invoice))
        assert (await subscriber.next())["paymentId"] == fence


async def refusal(url: str, token: str, variables: dict[str, Any]) -> Any:
    async with Subscription(
        url, PAYMENTS, "paymentStatusChanged", token=token, variables=variables
    ) as subscription:
        with pytest.raises(TransportQueryError) as raised:
            await subscription.next()
    return raised.value.errors


EXPIRED = [
    {
        "message": "The events after this cursor are no longer kept (older than the "
        "stream's retention, or lost when Redis restarted); refetch what you show, then "
        "subscribe again without after.",
        "extensions": {"code": "CURSOR_EXPIRED", "field": "after"},
    }
]


async def test_a_cursor_older_than_the_retention_is_refused_with_cursor_expired(
    db: Backend, ws_url: str, owner: Account, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a stream that keeps three entries, and a cursor four changes old
    bus = get_bus()
    monkeypatch.setattr(bus, "max_entries", 3)
    invoice = uuid.uuid4()
    cursor = await bus.stream_tail(str(owner.agency_id))
    for _ in range(4):
        await announce(owner, payment(owner, client.id, invoice))
    kept = await bus.stream_tail(str(owner.agency_id))

    # when a client resumes from it, or from a cursor that was never given out
    expired = await refusal(ws_url, owner.token, {"after": cursor})
    unknown = await refusal(ws_url, owner.token, {"after": "1-0"})

    # then both are told to refetch, and sent nothing
    assert expired == EXPIRED
    assert unknown == EXPIRED

    # and the newest cursor still resumes
    async with Subscription(
        ws_url, PAYMENTS, "paymentStatusChanged", token=owner.token, variables={"after": kept}
    ) as subscriber:
        await until_listening(owner)
        fence = await announce(owner, payment(owner, client.id, invoice))
        assert (await subscriber.next())["paymentId"] == fence


@pytest.mark.parametrize("after", ["abc", "12", "1-2-3", "-1-0", "1" * 30 + "-0", ""])
async def test_a_malformed_cursor_is_refused_with_invalid_cursor(
    db: Backend, ws_url: str, owner: Account, after: str
) -> None:
    # when / then
    assert await refusal(ws_url, owner.token, {"after": after}) == [
        {
            "message": "after is not a cursor of this subscription's events",
            "extensions": {"code": "INVALID_CURSOR", "field": "after"},
        }
    ]


async def test_a_cursor_replays_only_what_its_subscriber_may_see(
    db: Backend, ws_url: str, owner: Account, rival: Account, client: Client
) -> None:
    # given a viewer of one client, a cursor of the agency, and after it changes of the
    # viewer's client, of another client of the agency, and of another agency
    other = await create_client(owner, name="Bolt", currency="INR")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client)
    cursor = await get_bus().stream_tail(str(owner.agency_id))
    rivals = await create_client(rival, name="Rivalco", currency="INR")
    mine = []
    for n in range(4):
        if n % 2 == 0:
            mine.append(await announce(owner, payment(owner, client.id, uuid.uuid4())))
        else:
            await announce(owner, payment(owner, other.id, uuid.uuid4()))
        await announce(rival, payment(rival, rivals.id, uuid.uuid4()))

    # when the viewer resumes from the cursor
    async with Subscription(
        ws_url, PAYMENTS, "paymentStatusChanged", token=viewer.token, variables={"after": cursor}
    ) as subscriber:
        # then it hears its own client's changes only
        assert ids(await heard(subscriber, len(mine))) == mine
        await until_listening(owner)
        fence = await announce(owner, payment(owner, client.id, uuid.uuid4()))
        assert (await subscriber.next())["paymentId"] == fence

    # and the rival, resuming from the owner's cursor, is refused: a cursor is a place
    # in the caller's own agency's stream, never a way into another's
    assert await refusal(ws_url, rival.token, {"after": cursor}) == EXPIRED


async def test_activity_milestone_and_invoice_subscriptions_resume_too(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given a cursor, then a client created over HTTP and changes of a milestone and an
    # invoice of the agency committed through the outbox
    agency = str(owner.agency_id)
    project = (await create_project(owner, client)).id
    cursor = await get_bus().stream_tail(agency)
    data = await gql.execute(CREATE_CLIENT, {"input": {"name": "Bolt"}}, token=owner.token)
    created = data["createClient"]["id"]
    milestone, invoice = uuid.uuid4(), uuid.uuid4()
    now = clock.now().isoformat()
    async with transaction():
        await emit_event(
            channels.milestones(agency),
            {
                "eventId": str(uuid.uuid4()),
                "milestoneId": str(milestone),
                "agencyId": agency,
                "clientId": str(client.id),
                "projectId": str(project),
                "title": "Design",
                "status": "submitted",
                "previousStatus": "in_progress",
                "paymentStatus": "unpaid",
                "amountMinor": 100,
                "amountPaidMinor": 0,
                "currency": "INR",
                "statusChanged": True,
                "changedAt": now,
            },
        )
        await emit_event(
            channels.invoices(agency),
            {
                "invoiceId": str(invoice),
                "agencyId": agency,
                "clientId": str(client.id),
                "projectId": None,
                "number": "INV-1",
                "status": "sent",
                "previousStatus": "draft",
                "totalMinor": 100,
                "dueMinor": 100,
                "currency": "INR",
                "internal": False,
                "changedAt": now,
            },
        )

    # when each subscription resumes from the cursor; then each hears its own event
    cases = [
        (ACTIVITY, "activityAdded", {}, {"verb": "created", "clientId": created}),
        (
            MILESTONES,
            "milestoneStatusChanged",
            {"projectId": str(project)},
            {"milestoneId": str(milestone), "status": "SUBMITTED"},
        ),
        (
            INVOICES,
            "invoiceStatusChanged",
            {"clientId": str(client.id)},
            {"invoiceId": str(invoice), "status": "SENT"},
        ),
    ]
    for query, field, variables, expected in cases:
        async with Subscription(
            ws_url, query, field, token=owner.token, variables={**variables, "after": cursor}
        ) as subscriber:
            event = await subscriber.next()
            assert {key: event[key] for key in expected} == expected, field
            assert cursor_key(event["cursor"]) > cursor_key(cursor)


async def test_a_relay_run_twice_puts_an_event_in_the_stream_once(
    db: Backend, owner: Account, client: Client
) -> None:
    # given an event published by the relay
    bus: EventBus = get_bus()
    agency = str(owner.agency_id)
    cursor = await bus.stream_tail(agency)
    message = payment(owner, client.id, uuid.uuid4())
    await announce(owner, message)
    row = await OutboxMessage.get(topic=channels.payments(agency))

    # when it is published again under the same name (a crash after publishing, before
    # the row was marked), as the catch-up relay would
    await bus.publish(row.topic, row.payload, once=f"outbox.{row.id}")

    # then the stream holds it once
    entries = await bus.read_stream(agency, cursor, 10)
    assert [entry[2]["paymentId"] for entry in entries] == [message["paymentId"]]


async def test_an_event_published_while_a_new_subscription_finds_its_place_is_heard(
    db: Backend, ws_url: str, owner: Account, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a change committed after a new subscription listens, but before it has read
    # the stream's tail (its place to catch up from after a gap)
    invoice = uuid.uuid4()
    bus = get_bus()
    stream_tail = bus.stream_tail
    during: list[str] = []

    async def tail_after_a_change(agency_id: str) -> str:
        during.append(await announce(owner, payment(owner, client.id, invoice)))
        return await stream_tail(agency_id)

    monkeypatch.setattr(bus, "stream_tail", tail_after_a_change)

    # when a client subscribes without a cursor
    async with Subscription(
        ws_url,
        PAYMENTS,
        "paymentStatusChanged",
        token=owner.token,
        variables={"invoiceId": str(invoice)},
    ) as subscriber:
        # then it hears that change, and what follows
        assert (await subscriber.next())["paymentId"] == during[0]
        monkeypatch.setattr(bus, "stream_tail", stream_tail)
        fence = await announce(owner, payment(owner, client.id, invoice))
        assert (await subscriber.next())["paymentId"] == fence
