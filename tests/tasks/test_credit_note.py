"""Credit note actors: an issued credit note gets its PDF rendered once, through the broker."""

from __future__ import annotations

import asyncio

from settle.core.outbox import transaction
from settle.models.activity import ActivityEvent
from settle.models.invoice import CreditNote
from settle.services import credit_note as credit_note_service
from settle.tasks.broker import actor_names
from settle.tasks.credit_note import render_pdf
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client, create_invoice, issue_invoice


async def test_issuing_sends_the_render_job_and_a_redelivery_keeps_the_first_pdf(
    db: Backend, owner: Account
) -> None:
    # given an issued invoice
    client = await create_client(owner, name="Acme", currency="USD")
    invoice = await issue_invoice(owner, await create_invoice(owner, client))

    # when a credit note is issued on it and the worker runs what was sent
    async with transaction():
        note = await credit_note_service.issue_credit_note(owner.actor, invoice.id, "10.00", "Late")
    await db.drain()

    # then its PDF was rendered by the credit_note.render_pdf actor
    rendered = await CreditNote.get(id=note.id)
    assert rendered.pdf_key == f"credit-notes/{owner.agency_id}/{note.id}/credit-note.pdf"
    assert rendered.pdf_rendered_at is not None

    # when the job is delivered again
    await asyncio.to_thread(render_pdf.fn, str(note.id))

    # then the first PDF stays, with one timeline event
    again = await CreditNote.get(id=note.id)
    assert (again.pdf_key, again.pdf_rendered_at) == (rendered.pdf_key, rendered.pdf_rendered_at)
    assert await ActivityEvent.filter(entity_id=note.id, verb="pdf_rendered").count() == 1


def test_the_actor_is_declared_with_retries_under_its_job_name() -> None:
    # given / when / then
    assert (render_pdf.actor_name, render_pdf.options.get("max_retries")) == (
        credit_note_service.RENDER_PDF_JOB,
        10,
    )
    assert credit_note_service.RENDER_PDF_JOB in actor_names()
