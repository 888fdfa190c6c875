"""An event is executed and encoded once per group of subscribers whose frames cannot differ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import websockets
from graphql import OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from settle.models.agency import Role
from settle.models.client import Client
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.websocket import TRANSPORT_WS, serve
from tests.subscriptions.test_payment import fence, until_subscribed

PAYMENTS = """
subscription { paymentStatusChanged { paymentId status amount { amount currency } } }
"""
PAYMENT_IDS = "subscription { paymentStatusChanged { paymentId } }"


class RawSubscriber:
    """One socket, one subscription with the given operation id; keeps each frame as sent."""

    def __init__(self, url: str, token: str, query: str, operation_id: str) -> None:
        self.url, self.token, self.query, self.operation_id = url, token, query, operation_id
        self.frames: asyncio.Queue[str] = asyncio.Queue()

    async def __aenter__(self) -> RawSubscriber:
        self.socket = await websockets.connect(
            self.url, subprotocols=[websockets.Subprotocol(TRANSPORT_WS)]
        )
        await self.socket.send(
            json.dumps({"type": "connection_init", "payload": {"token": self.token}})
        )
        assert json.loads(await self.socket.recv())["type"] == "connection_ack"
        await self.socket.send(
            json.dumps(
                {"id": self.operation_id, "type": "subscribe", "payload": {"query": self.query}}
            )
        )
        self.reading = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for frame in self.socket:
            assert isinstance(frame, str)
            await self.frames.put(frame)

    async def next(self) -> str:
        return await asyncio.wait_for(self.frames.get(), timeout=10)

    async def __aexit__(self, *exc: object) -> None:
        self.reading.cancel()
        await asyncio.gather(self.reading, return_exceptions=True)
        await self.socket.close()


@pytest.fixture
async def ws_url(db: Backend) -> AsyncIterator[str]:
    async with serve(db.settings.model_copy(update={"rate_limits_enabled": False})) as url:
        yield url


@pytest.fixture
async def client(owner: Account) -> Client:
    return await create_client(owner, name="Acme", currency="INR")


@pytest.fixture
def executions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The document text of every subscription event executed in this process."""
    executed: list[str] = []
    execute = StrawberryGraphQLCoreExecutionContext.execute_operation

    def counting(self: StrawberryGraphQLCoreExecutionContext, serially: Any = None) -> Any:
        if self.operation.operation is OperationType.SUBSCRIPTION:
            assert self.operation.loc is not None
            executed.append(self.operation.loc.source.body)
        return execute(self, serially)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_operation", counting)
    return executed


async def test_one_execution_and_one_encoding_per_group_each_frame_as_before(
    db: Backend, ws_url: str, owner: Account, client: Client, executions: list[str]
) -> None:
    # given three owner sockets with one document, one owner socket with another, a
    # client user of the payment's client and one of another client
    other = await create_client(owner, name="Other", currency="INR")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)
    outsider = await create_user(owner, role=Role.CLIENT_LEAD, client=other)
    admins = [await create_user(owner, role=Role.ADMIN) for _ in range(2)]
    async with AsyncExitStack() as stack:

        async def subscriber(token: str, query: str, operation_id: str) -> RawSubscriber:
            return await stack.enter_async_context(
                RawSubscriber(ws_url, token, query, operation_id)
            )

        owners = [await subscriber(owner.token, PAYMENTS, f"owner-{i}") for i in range(3)]
        narrow = await subscriber(owner.token, PAYMENT_IDS, "narrow")
        lead_socket = await subscriber(lead.token, PAYMENTS, "lead")
        outsider_socket = await subscriber(outsider.token, PAYMENTS, "outsider")
        admin_sockets = [
            await subscriber(admin.token, PAYMENTS, f"admin-{i}") for i, admin in enumerate(admins)
        ]
        await until_subscribed(owner, 8)
        executions.clear()

        # when one payment of the client is announced
        marker = await fence(owner, client_id=client.id)

        # then each socket gets today's frame, its own id in front of the same payload
        payload = {
            "data": {
                "paymentStatusChanged": {
                    "paymentId": marker["paymentId"],
                    "status": "PENDING",
                    "amount": {"amount": "0.01", "currency": "INR"},
                }
            }
        }
        for socket in [*owners, lead_socket, *admin_sockets]:
            message = {"id": socket.operation_id, "type": "next", "payload": payload}
            assert await socket.next() == json.dumps(message, separators=(",", ":"))
        narrowed = {"data": {"paymentStatusChanged": {"paymentId": marker["paymentId"]}}}
        message = {"id": "narrow", "type": "next", "payload": narrowed}
        assert await narrow.next() == json.dumps(message, separators=(",", ":"))

        # and the event was executed once for the owner's three sockets of one document,
        # once for the other document, once for the client user and once for each admin
        # (a result may hold what is signed for its user: it is shared by one user's
        # sockets only), not once per socket
        assert sorted(executions) == sorted([PAYMENTS, PAYMENT_IDS, *[PAYMENTS] * 3])

        # and the other client's user heard nothing of it: its next frame is its own
        # client's payment
        theirs = await fence(owner, client_id=other.id)
        frame = json.loads(await outsider_socket.next())
        assert (
            frame["payload"]["data"]["paymentStatusChanged"]["paymentId"] == (theirs["paymentId"])
        )
