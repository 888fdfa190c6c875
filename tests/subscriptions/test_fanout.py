"""One bus connection per process, fanned out in memory: many subscribers, few connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from settle.models.client import Client
from settle.models.payment import Payment
from settle.subscriptions.bus import RedisBus, get_bus
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_invoice, issue_invoice
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.services import REDIS_URL
from tests.fixtures.websocket import serve
from tests.subscriptions.test_payment import (
    RECORD_OFFLINE_PAYMENT,
    Subscriber,
    fence,
    until_subscribed,
)


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
        }
        heard = await asyncio.gather(*(subscriber.next() for subscriber in subscribers))
        assert heard == [expected] * 300
        marker = await fence(owner, client_id=client.id, invoice_ids=[invoice.id])
        heard = await asyncio.gather(*(subscriber.next() for subscriber in subscribers))
        assert heard == [marker] * 300


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
