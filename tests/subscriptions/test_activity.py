"""activityAdded over a real websocket: a real server, a real client, events from other requests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
import websockets
from gql.transport.exceptions import (
    TransportConnectionFailed,
    TransportQueryError,
    TransportServerError,
)

from settle.core import clock
from settle.models.activity import ActivityEvent
from settle.models.agency import Role
from settle.services.activity import to_message
from settle.subscriptions import channels
from settle.subscriptions.bus import MemoryBus, RedisBus, get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import LEGACY_WS, TRANSPORT_WS, Subscription

ACTIVITY_ADDED = """
subscription ActivityAdded($clientId: ID) {
  activityAdded(clientId: $clientId) {
    entityType
    verb
    summary
    clientId
    changes { field after }
  }
}
"""

CREATE_CLIENT = """
mutation CreateClient($input: CreateClientInput!) {
  createClient(input: $input) {
    __typename
    ... on Client { id }
  }
}
"""

UPDATE_CLIENT = """
mutation UpdateClient($id: ID!, $input: UpdateClientInput!) {
  updateClient(id: $id, input: $input) {
    __typename
  }
}
"""

ADD_NOTE = """
mutation AddNote($input: AddNoteInput!) {
  addNote(input: $input) {
    __typename
  }
}
"""


class Subscriber(Subscription):
    """One websocket connection with one activityAdded subscription running."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        client_id: str | None = None,
        subprotocol: str = TRANSPORT_WS,
    ) -> None:
        super().__init__(
            url,
            ACTIVITY_ADDED,
            "activityAdded",
            token=token,
            variables={"clientId": client_id},
            subprotocol=subprotocol,
        )


async def until_subscribed(account: Account, count: int = 1) -> None:
    """Wait until the server has subscribed on the account's agency channel."""
    channel = channels.activity(account.agency_id)

    async def subscribed() -> bool:
        return await get_bus().subscriber_count(channel) == count

    await wait_for(subscribed)


async def fence(account: Account, client_id: uuid.UUID | None = None) -> dict[str, Any]:
    """Publish a marker event on the agency's channel; returns it as a subscriber sees it.

    A subscriber whose next event is the marker received nothing else before it.
    """
    marker = ActivityEvent(
        id=uuid.uuid4(),
        agency_id=account.agency_id,
        client_id=client_id,
        entity_type="client",
        entity_id=uuid.uuid4(),
        verb="fenced",
        summary=f"fence {uuid.uuid4().hex}",
        changes={},
        created_at=clock.now(),
    )
    await get_bus().publish(channels.activity(account.agency_id), to_message(marker, None))
    return {
        "entityType": "client",
        "verb": "fenced",
        "summary": marker.summary,
        "clientId": str(client_id) if client_id else None,
        "changes": [],
    }


async def create_client_over_http(gql: GraphQLClient, account: Account, **values: Any) -> str:
    data = await gql.execute(CREATE_CLIENT, {"input": values}, token=account.token)
    assert data["createClient"]["__typename"] == "Client"
    client_id: str = data["createClient"]["id"]
    return client_id


async def test_a_subscriber_receives_the_client_another_request_creates(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: on PostgreSQL the event travels through Redis, as across replicas
    assert isinstance(get_bus(), RedisBus if db.name == "postgres" else MemoryBus)
    async with Subscriber(ws_url, token=owner.token) as subscriber:
        assert subscriber.transport.subprotocol == TRANSPORT_WS
        await until_subscribed(owner)

        # when: a separate HTTP request creates a client
        client_id = await create_client_over_http(
            gql, owner, name="Acme Ltd", email="billing@acme.test", currency="INR"
        )

        # then: the subscriber receives exactly that event
        assert await subscriber.next() == {
            "entityType": "client",
            "verb": "created",
            "summary": "Client Acme Ltd created",
            "clientId": client_id,
            "changes": [
                {"field": "currency", "after": "INR"},
                {"field": "email", "after": "billing@acme.test"},
                {"field": "name", "after": "Acme Ltd"},
            ],
        }
        marker = await fence(owner)
        assert await subscriber.next() == marker


async def test_the_legacy_graphql_ws_protocol_delivers_events_too(
    ws_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given
    async with Subscriber(ws_url, token=owner.token, subprotocol=LEGACY_WS) as subscriber:
        assert subscriber.transport.subprotocol == LEGACY_WS
        await until_subscribed(owner)

        # when
        client_id = await create_client_over_http(gql, owner, name="Legacy Co")

        # then
        event = await subscriber.next()
        assert (event["verb"], event["summary"], event["clientId"]) == (
            "created",
            "Client Legacy Co created",
            client_id,
        )
        marker = await fence(owner)
        assert await subscriber.next() == marker


async def test_another_agency_hears_nothing_of_it(
    ws_url: str, gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given: both agencies' owners subscribed
    async with (
        Subscriber(ws_url, token=owner.token) as ours,
        Subscriber(ws_url, token=rival.token) as theirs,
    ):
        await until_subscribed(owner)
        await until_subscribed(rival)

        # when: the owner creates a client
        client_id = await create_client_over_http(gql, owner, name="Private Client")

        # then: the owner hears of it; the rival's next event is the rival's own marker
        assert (await ours.next())["clientId"] == client_id
        marker = await fence(rival)
        assert await theirs.next() == marker


async def test_a_subscription_for_one_client_hears_only_that_client(
    ws_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: a subscription to one existing client
    watched = await create_client(owner, name="Watched")
    async with Subscriber(ws_url, token=owner.token, client_id=str(watched.id)) as subscriber:
        await until_subscribed(owner)

        # when: another client is created, then the watched one is renamed
        await create_client_over_http(gql, owner, name="Unwatched")
        renamed = await gql.execute(
            UPDATE_CLIENT,
            {"id": str(watched.id), "input": {"name": "Watched Ltd"}},
            token=owner.token,
        )
        assert renamed == {"updateClient": {"__typename": "Client"}}

        # then: only the rename arrives
        assert await subscriber.next() == {
            "entityType": "client",
            "verb": "updated",
            "summary": "Client Watched Ltd updated",
            "clientId": str(watched.id),
            "changes": [{"field": "name", "after": "Watched Ltd"}],
        }
        marker = await fence(owner, watched.id)
        assert await subscriber.next() == marker


async def test_a_client_user_hears_only_public_events_of_their_own_client(
    ws_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: a viewer of one client, subscribed without a client filter
    theirs = await create_client(owner, name="Viewer's Client")
    other = await create_client(owner, name="Someone Else")
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=theirs)
    async with Subscriber(ws_url, token=viewer.token) as subscriber:
        await until_subscribed(owner)

        # when: an internal note on their client, a change to another client, then
        # a change to their client
        noted = await gql.execute(
            ADD_NOTE,
            {"input": {"clientId": str(theirs.id), "body": "Slow payer"}},
            token=owner.token,
        )
        assert noted == {"addNote": {"__typename": "Note"}}
        for client, phone in ((other, "+1 555 0100"), (theirs, "+1 555 0199")):
            updated = await gql.execute(
                UPDATE_CLIENT, {"id": str(client.id), "input": {"phone": phone}}, token=owner.token
            )
            assert updated == {"updateClient": {"__typename": "Client"}}

        # then: only their client's change arrives
        event = await subscriber.next()
        assert (event["clientId"], event["verb"]) == (str(theirs.id), "updated")
        marker = await fence(owner, theirs.id)
        assert await subscriber.next() == marker


async def test_closing_the_socket_ends_the_subscription(ws_url: str, owner: Account) -> None:
    # given
    async with Subscriber(ws_url, token=owner.token):
        await until_subscribed(owner)

    # when the client has gone / then: the server left the channel
    await until_subscribed(owner, count=0)


async def test_a_bad_token_closes_the_socket_before_anything_runs(
    ws_url: str, owner: Account
) -> None:
    # when
    with pytest.raises(TransportConnectionFailed) as failed:
        async with Subscriber(ws_url, token="not-a-token"):
            pytest.fail("the connection was accepted")

    # then: closed with graphql-transport-ws's "Forbidden"
    closed = failed.value.__cause__
    assert isinstance(closed, websockets.ConnectionClosed)
    assert closed.rcvd is not None
    assert closed.rcvd.code == 4403
    assert await get_bus().subscriber_count(channels.activity(owner.agency_id)) == 0


async def test_a_subscribe_sent_with_a_bad_token_never_runs(ws_url: str, owner: Account) -> None:
    # given: a raw client that does not wait for the acknowledgement
    async with websockets.connect(ws_url, subprotocols=[TRANSPORT_WS]) as socket:
        # when: a bad token in connection_init, and a subscription right behind it
        await socket.send('{"type": "connection_init", "payload": {"token": "forged"}}')
        await socket.send(
            '{"id": "1", "type": "subscribe", "payload": {"query": "subscription '
            '{ activityAdded { verb } }"}}'
        )

        # then: the socket is closed with 4403 and no message came back
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), timeout=5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4403
    assert await get_bus().subscriber_count(channels.activity(owner.agency_id)) == 0


async def test_a_bad_token_is_refused_on_the_legacy_protocol_too(ws_url: str) -> None:
    # when / then: graphql-ws answers connection_error instead of an acknowledgement
    with pytest.raises(TransportServerError, match="'code': 'UNAUTHENTICATED'"):
        async with Subscriber(ws_url, token="not-a-token", subprotocol=LEGACY_WS):
            pytest.fail("the connection was accepted")


async def test_a_subscription_without_a_token_is_unauthenticated(ws_url: str) -> None:
    # given: an anonymous socket may connect
    async with Subscriber(ws_url, token=None) as subscriber:
        # when / then: its subscription fails with UNAUTHENTICATED
        with pytest.raises(TransportQueryError) as failed:
            await subscriber.next()
    assert failed.value.errors == [
        {
            "message": "Authentication required",
            "extensions": {"code": "UNAUTHENTICATED"},
        }
    ]
