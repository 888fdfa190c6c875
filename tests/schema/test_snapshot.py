"""One response, one moment: a query operation reads one snapshot on PostgreSQL.

A delivery and its invoice's ``lastSentAt``, a refund and its payment's
``amountRefunded``, are each written in one transaction; a response reads them
with separate statements (the refunds through a DataLoader, in tasks of their
own). Every statement of a query operation must see the same committed state.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from tortoise.transactions import in_transaction

from settle.core import clock
from settle.core.db import read_snapshot
from settle.core.outbox import transaction
from settle.models.agency import Role
from settle.models.invoice import DeliveryStatus, Invoice, InvoiceDelivery, InvoiceStatus
from settle.models.payment import OfflineMethod, Payment, Refund, RefundStatus
from settle.resolvers.loaders import Loaders
from settle.schema.context import Context
from settle.services import payment as payment_service
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import (
    Account,
    create_client,
    create_invoice,
    create_user,
    issue_invoice,
)
from tests.fixtures.graphql import GraphQLClient

READ_BOTH = """
query ReadBoth($invoiceId: ID!, $paymentId: ID!) {
  invoice(id: $invoiceId) { lastSentAt deliveries { status sentAt } }
  payment(id: $paymentId) { amountRefunded { amount } refunds { status } }
}
"""

READ_REFUNDS = """
query ReadRefunds($paymentId: ID!) {
  payment(id: $paymentId) { amountRefunded { amount } refunds { status } }
}
"""

OPEN_INVOICE = """
query OpenInvoice($id: ID!) {
  invoice(id: $id) { status viewedAt }
}
"""

CONCURRENT_QUERIES = 200


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("SQLite reads are not wrapped in a snapshot (one connection per process)")


def pg_url(db: Backend) -> str:
    return db.settings.database_url.replace("postgres://", "postgresql://", 1)


@dataclass(frozen=True)
class Pairs:
    invoice: Invoice
    delivery: InvoiceDelivery
    payment: Payment
    refund: Refund


@pytest.fixture
async def pairs(owner: Account) -> Pairs:
    """An issued invoice with a pending email, paid in cash, with a pending full refund."""
    client = await create_client(owner)
    invoice = await issue_invoice(
        owner,
        await create_invoice(
            owner, client, lines=[{"description": "Build", "quantity": "1", "unit_price": "100.00"}]
        ),
    )
    async with transaction():
        payment = await payment_service.record_offline_payment(
            owner.actor,
            invoice.id,
            amount="100.00",
            method=OfflineMethod.CASH,
            reference="R-1",
            explorer_url=None,
        )
    delivery = await InvoiceDelivery.create(
        agency_id=invoice.agency_id, invoice_id=invoice.id, recipients=["ada@example.com"]
    )
    refund = await Refund.create(
        agency_id=payment.agency_id,
        payment_id=payment.id,
        amount_minor=payment.amount_minor,
        currency=payment.currency,
        reason="Cancelled",
    )
    return Pairs(invoice, delivery, payment, refund)


async def write_moment(pairs: Pairs, *, done: bool) -> None:
    """Each pair together in one transaction: the email sent and the refund settled, or neither."""
    now = clock.now() if done else None
    async with in_transaction():
        await InvoiceDelivery.filter(id=pairs.delivery.id).update(
            status=DeliveryStatus.SENT if done else DeliveryStatus.PENDING, sent_at=now
        )
        await Invoice.filter(id=pairs.invoice.id).update(last_sent_at=now)
        await Refund.filter(id=pairs.refund.id).update(
            status=RefundStatus.SUCCEEDED if done else RefundStatus.PENDING
        )
        await Payment.filter(id=pairs.payment.id).update(
            amount_refunded_minor=pairs.refund.amount_minor if done else 0
        )


def moment_of(data: dict[str, Any]) -> tuple[bool, ...]:
    """Whether each of the five fields shows the written state (True) or the first (False)."""
    (delivery,) = data["invoice"]["deliveries"]
    (refund,) = data["payment"]["refunds"]
    return (
        data["invoice"]["lastSentAt"] is not None,
        delivery["status"] == "SENT",
        delivery["sentAt"] is not None,
        data["payment"]["amountRefunded"]["amount"] != "0.00",
        refund["status"] == "SUCCEEDED",
    )


async def test_concurrent_queries_never_show_a_pair_half_written(
    db: Backend, gql: GraphQLClient, owner: Account, pairs: Pairs
) -> None:
    require_postgres(db)
    # given a writer flipping both pairs together, one transaction at a time, in a loop
    stop = asyncio.Event()
    flips = 0

    async def writer() -> None:
        nonlocal flips
        while not stop.is_set():
            await write_moment(pairs, done=flips % 2 == 0)
            flips += 1

    async def writing_started() -> bool:
        return flips >= 2

    writing = asyncio.create_task(writer())
    try:
        await wait_for(writing_started)
        # when 200 queries read both pairs at once through the app
        variables = {"invoiceId": str(pairs.invoice.id), "paymentId": str(pairs.payment.id)}
        started_at = flips
        responses = await asyncio.gather(
            *(
                gql.execute(READ_BOTH, variables, token=owner.token)
                for _ in range(CONCURRENT_QUERIES)
            )
        )
        flipped_meanwhile = flips - started_at
    finally:
        stop.set()
        await writing
    # then the writer committed while they read
    assert flipped_meanwhile >= 2
    # and every response shows one moment: all five fields before, or all five after
    moments = Counter(moment_of(data) for data in responses)
    assert set(moments) <= {(False,) * 5, (True,) * 5}, moments


async def test_a_dataloader_batch_reads_in_the_operations_snapshot(
    db: Backend, gql: GraphQLClient, owner: Account, pairs: Pairs
) -> None:
    require_postgres(db)
    # given another session holding the refund table, so the refunds batch waits for it
    locker = await asyncpg.connect(pg_url(db))
    watcher = await asyncpg.connect(pg_url(db))
    try:
        locking = locker.transaction()
        await locking.start()
        await locker.execute("LOCK TABLE refund IN ACCESS EXCLUSIVE MODE")
        # when a query reads the payment, then its refunds through the DataLoader
        reading = asyncio.create_task(
            gql.execute(READ_REFUNDS, {"paymentId": str(pairs.payment.id)}, token=owner.token)
        )
        waiting: list[asyncpg.Record] = []

        async def refunds_batch_waits() -> bool:
            waiting[:] = await watcher.fetch(
                "SELECT xact_start, query_start FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                " AND query LIKE '%\"refund\"%'"
            )
            return bool(waiting)

        await wait_for(refunds_batch_waits)
        # and, while the batch waits, the refund settles with its payment in one commit
        await locker.execute(
            "UPDATE refund SET status = 'succeeded' WHERE id = $1", pairs.refund.id
        )
        await locker.execute(
            "UPDATE payment SET amount_refunded_minor = amount_minor WHERE id = $1",
            pairs.payment.id,
        )
        await locking.commit()
        data = await asyncio.wait_for(reading, 30)
    finally:
        await locker.close()
        await watcher.close()
    # then the batch ran inside the operation's transaction, begun before it
    ((xact_start, query_start),) = waiting
    assert xact_start < query_start
    # and it read the moment the payment was read at: neither the refund nor its amount
    assert data == {
        "payment": {"amountRefunded": {"amount": "0.00"}, "refunds": [{"status": "PENDING"}]}
    }
    # while the database has both
    assert (await Refund.get(id=pairs.refund.id)).status == RefundStatus.SUCCEEDED


async def test_queries_that_write_do_not_starve_the_pool(
    db: Backend, gql: GraphQLClient, owner: Account
) -> None:
    require_postgres(db)
    # given a sent invoice and a client user, whose opening it writes (it marks it viewed)
    client = await create_client(owner)
    invoice = await issue_invoice(owner, await create_invoice(owner, client))
    viewer = await create_user(owner, role=Role.CLIENT_VIEWER, client=client, name="Vic Viewer")
    pool_size = db.settings.database_pool_size
    # when three times as many open it at once as the pool has connections
    opened = await asyncio.wait_for(
        asyncio.gather(
            *(
                gql.execute(OPEN_INVOICE, {"id": str(invoice.id)}, token=viewer.token)
                for _ in range(3 * pool_size)
            )
        ),
        timeout=60,
    )
    # then every one is answered (none waits for a connection the others hold)
    assert len(opened) == 3 * pool_size
    # and the invoice is viewed once, as each answer shows
    row = await Invoice.get(id=invoice.id)
    assert row.status == InvoiceStatus.VIEWED
    assert row.viewed_at is not None
    assert {(o["invoice"]["status"], o["invoice"]["viewedAt"]) for o in opened} == {
        ("VIEWED", row.viewed_at.isoformat())
    }


async def test_operations_side_by_side_on_one_websocket_batch_apart(
    db: Backend, owner: Account
) -> None:
    require_postgres(db)
    # given one websocket's context, shared by the operations it runs at once
    context = Context(settings=db.settings, request=None, actor=owner.actor, cache_loaders=False)
    both_inside = asyncio.Barrier(2)

    async def operation() -> tuple[Loaders, Loaders]:
        async with read_snapshot():
            await both_inside.wait()
            return context.loaders, context.loaders

    # when two operations ask for loaders while both hold their snapshots
    (first, first_again), (second, second_again) = await asyncio.gather(operation(), operation())
    # then each gets loaders of its own, which batch its keys in its own snapshot
    assert first is first_again
    assert second is second_again
    assert first is not second
