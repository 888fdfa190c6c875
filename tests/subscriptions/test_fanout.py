"""One bus connection per process, fanned out in memory: many subscribers, few connections."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
import websockets

from settle.models.client import Client
from settle.models.payment import Payment
from settle.subscriptions import channels
from settle.subscriptions.bus import RedisBus, get_bus
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_invoice, issue_invoice
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.services import REDIS_URL
from tests.fixtures.websocket import TRANSPORT_WS, Subscription, serve
from tests.subscriptions.test_payment import (
    PAYMENT_STATUS_CHANGED,
    RECORD_OFFLINE_PAYMENT,
    Subscriber,
    fence,
    until_subscribed,
)


def unique(answers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The distinct answers, in the order first heard."""
    seen: list[dict[str, Any]] = []
    for answer in answers:
        if answer not in seen:
            seen.append(answer)
    return seen


def redis_db() -> int:
    return int(urlsplit(REDIS_URL).path.strip("/") or 0)


async def redis_clients(*, pubsub_only: bool = False) -> list[dict[str, str]]:
    """The connections to the test's Redis database, from CLIENT LIST."""
    admin = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        clients: list[dict[str, Any]] = await admin.client_list()
        me = await admin.client_id()
    finally:
        await admin.aclose()
    ours = [c for c in clients if int(c["db"]) == redis_db() and int(c["id"]) != me]
    if pubsub_only:
        ours = [c for c in ours if "P" in c["flags"]]
    return ours


@pytest.fixture
async def ws_url(db: Backend) -> AsyncIterator[str]:
    """The app served for real, with no per-IP socket limit: every test socket is local."""
    async with serve(db.settings.model_copy(update={"rate_limits_enabled": False})) as url:
        yield url


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


async def test_three_hundred_subscribers_all_hear_one_payment(
    db: Backend, ws_url: str, gql: GraphQLClient, owner: Account, client: Client
) -> None:
    # given 300 websockets (more than the Redis client's pool of 100), each subscribed
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    async with AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(
                Subscriber(ws_url, token=owner.token, invoiceId=str(invoice.id))
            )
            for _ in range(300)
        ]
        await until_subscribed(owner, 300)

        # when one payment is recorded
        data = await gql.execute(
            RECORD_OFFLINE_PAYMENT, {"invoiceId": str(invoice.id)}, token=owner.token
        )
        assert data["recordOfflinePayment"]["__typename"] == "Payment"

        # then every subscriber hears it, once
        payment = await Payment.get(invoice_id=invoice.id)
        expected = {
            "paymentId": str(payment.id),
            "status": "SUCCEEDED",
            "provider": "OFFLINE",
            "amount": {"amount": "100.00", "currency": "INR", "minorUnits": 10_000},
            "amountRefunded": {"amount": "0.00"},
            "projectId": None,
            "invoiceIds": [str(invoice.id)],
            "milestoneIds": [],
        }
        heard = await asyncio.gather(*(subscriber.next() for subscriber in subscribers))
        # (compared as the distinct answers: a diff of 300 near-equal dicts takes minutes)
        assert (len(heard), unique(heard)) == (300, [expected])
        marker = await fence(owner, client_id=client.id, invoice_ids=[invoice.id])
        heard = await asyncio.gather(*(subscriber.next() for subscriber in subscribers))
        assert (len(heard), unique(heard)) == (300, [marker])


async def test_redis_connections_do_not_grow_with_subscribers(
    db: Backend, ws_url: str, owner: Account
) -> None:
    if db.name != "postgres":
        pytest.skip("the embedded backend has no Redis")
    assert isinstance(get_bus(), RedisBus)
    async with AsyncExitStack() as stack:
        # given 10 subscribers
        for _ in range(10):
            await stack.enter_async_context(Subscriber(ws_url, token=owner.token))
        await until_subscribed(owner, 10)
        with_ten = await redis_clients()

        # when 290 more subscribe
        for _ in range(290):
            await stack.enter_async_context(Subscriber(ws_url, token=owner.token))
        await until_subscribed(owner, 300)

        # then the process still holds one pub/sub connection, and no more connections
        assert len(await redis_clients(pubsub_only=True)) == 1
        assert len(await redis_clients()) <= len(with_ten)


@pytest.fixture
async def tight_ws_url(db: Backend) -> AsyncIterator[str]:
    """The app served with small socket send buffers: a socket nobody reads backs up soon."""
    settings = db.settings.model_copy(update={"rate_limits_enabled": False})
    async with serve(settings, send_buffer=4096) as url:
        yield url


async def unread_socket(url: str, token: str) -> websockets.ClientConnection:
    """A graphql-transport-ws socket subscribed to payments that then stops reading."""
    address = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window, set before connecting.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((address.hostname, address.port))
    sock.setblocking(False)
    connection = await websockets.connect(
        url,
        sock=sock,
        subprotocols=[websockets.Subprotocol(TRANSPORT_WS)],
        max_queue=1,
        ping_interval=None,
    )
    await connection.send(json.dumps({"type": "connection_init", "payload": {"token": token}}))
    assert json.loads(await connection.recv()) == {"type": "connection_ack", "payload": None}
    await connection.send(
        json.dumps(
            {"id": "slow", "type": "subscribe", "payload": {"query": PAYMENT_STATUS_CHANGED}}
        )
    )
    return connection


async def test_a_subscriber_that_stops_reading_is_ended_and_the_others_keep_up(
    db: Backend, tight_ws_url: str, owner: Account, client: Client
) -> None:
    # given subscriptions that may fall 4 events behind: one on a socket that stops
    # reading, one on a socket that reads
    bus = get_bus()
    kept, bus.fanout.queue_size = bus.fanout.queue_size, 4  # type: ignore[attr-defined]
    try:
        slow = await unread_socket(tight_ws_url, owner.token)
        async with Subscription(
            tight_ws_url, PAYMENT_STATUS_CHANGED, "paymentStatusChanged", token=owner.token
        ) as fast:
            await until_subscribed(owner, 2)

            # when payments are announced, each heard by the reading subscriber, until
            # the other one is ended
            deadline = asyncio.get_running_loop().time() + 15
            while await bus.subscriber_count(channels.payments(owner.agency_id)) == 2:
                assert asyncio.get_running_loop().time() < deadline, "never ended"
                marker = await fence(owner, client_id=client.id)
                assert await fast.next() == marker

            # then the reading subscriber goes on hearing each event at once
            for _ in range(3):
                marker = await fence(owner, client_id=client.id)
                assert await fast.next(timeout=2) == marker

            # and the other socket, read again, has its subscription ended with the typed
            # error, and stays open
            ending: dict[str, Any] | None = None
            while ending is None:
                frame = json.loads(await asyncio.wait_for(slow.recv(), 10))
                if frame["type"] != "next" or "errors" in frame["payload"]:
                    ending = frame
            assert ending == {
                "id": "slow",
                "type": "next",
                "payload": {
                    "data": None,
                    "errors": [
                        {
                            "message": "This subscription fell more than 4 events behind and "
                            "was ended; subscribe again (and refetch what you show).",
                            "extensions": {"code": "SUBSCRIBER_TOO_SLOW"},
                        }
                    ],
                },
            }
            assert json.loads(await asyncio.wait_for(slow.recv(), 10)) == {
                "id": "slow",
                "type": "complete",
            }
            await slow.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(slow.recv(), 10)) == {"type": "pong"}
            await slow.close()
    finally:
        bus.fanout.queue_size = kept  # type: ignore[attr-defined]
