"""auth.send_invitation: the invitation email reaches a real SMTP server, or an .eml file."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from settle.core.outbox import transaction
from settle.core.settings import Settings, configure_settings, get_settings
from settle.models.agency import Invitation, Role
from settle.notifications.email import EmailDeliveryError
from settle.services import auth as auth_service
from settle.tasks.auth import send_invitation
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.smtp import Mailbox, body, files, free_port, parse, use_smtp

INVITE_MEMBER = """
mutation InviteMember($input: InviteMemberInput!) {
  inviteMember(input: $input) {
    __typename
    ... on Invitation { id email role }
  }
}
"""

ACCEPT_INVITATION = """
mutation AcceptInvitation($input: AcceptInvitationInput!) {
  acceptInvitation(input: $input) {
    __typename
    ... on AuthPayload { user { email name role client { name } } }
    ... on Error { code }
  }
}
"""

SUBJECT = "Olive Owner invited you to join Northwind Studio on Settle"
ACCEPT_LINK = re.compile(r"http://settle\.test/invitations/accept\?token=([A-Za-z0-9_-]+)")


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(db: Backend, mailbox: Mailbox) -> Iterator[Mailbox]:
    """A real SMTP server on a free port, configured for the test and unset afterwards."""
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        yield mailbox
    finally:
        configure_settings(previous)
        controller.stop()


async def invite_quietly(db: Backend, owner: Account, address: str) -> Invitation:
    """An invitation whose own email job has already run (to an .eml file)."""
    async with transaction():
        invited = await auth_service.invite_member(
            db.settings, owner.actor, email=address, role=Role.MEMBER, name="Mia"
        )
    await db.drain()
    return invited.invitation


async def test_the_invitation_email_reaches_smtp_with_a_working_link(
    db: Backend, smtp: Mailbox, gql: GraphQLClient, owner: Account
) -> None:
    # given
    client = await create_client(owner, name="Globex")
    data = await gql.execute(
        INVITE_MEMBER,
        {"input": {"email": "cleo@example.com", "role": "CLIENT_LEAD", "clientId": str(client.id)}},
        token=owner.token,
    )
    assert data["inviteMember"]["__typename"] == "Invitation"

    # when
    await db.drain()

    # then
    assert [e.rcpt_tos for e in smtp.envelopes] == [["cleo@example.com"]]
    assert smtp.envelopes[0].mail_from == "no-reply@settle.invalid"
    [message] = smtp.messages()
    assert message["To"] == "cleo@example.com"
    assert message["From"] == "Settle <no-reply@settle.invalid>"
    assert message["Subject"] == SUBJECT
    text = body(message, "plain")
    assert "Your role: Client lead" in text
    links = ACCEPT_LINK.findall(text)
    assert len(links) == 1
    assert (
        ACCEPT_LINK.findall(body(message, "html")) == links * 3
    )  # button, fallback href and its text

    # and the emailed token joins the agency
    joined = await gql.execute(
        ACCEPT_INVITATION,
        {"input": {"token": links[0], "password": "correct horse", "name": "Cleo"}},
    )
    assert joined == {
        "acceptInvitation": {
            "__typename": "AuthPayload",
            "user": {
                "email": "cleo@example.com",
                "name": "Cleo",
                "role": "CLIENT_LEAD",
                "client": {"name": "Globex"},
            },
        }
    }


async def test_without_smtp_the_email_is_written_as_an_eml_file(
    db: Backend, settings: Settings, gql: GraphQLClient, owner: Account
) -> None:
    # given
    assert get_settings().smtp_host is None
    mail_dir: Path = settings.var_dir / "mail"
    before = files(mail_dir, "*.eml")

    # when
    data = await gql.execute(
        INVITE_MEMBER, {"input": {"email": "mia@example.com", "role": "MEMBER"}}, token=owner.token
    )
    await db.drain()

    # then
    written = files(mail_dir, "*.eml") - before
    assert len(written) == 1
    message = parse(written.pop().read_bytes())
    assert message["To"] == "mia@example.com"
    assert message["Subject"] == SUBJECT
    [token] = ACCEPT_LINK.findall(body(message, "plain"))
    invitation_id = uuid.UUID(data["inviteMember"]["id"])
    assert token == auth_service.invitation_token(settings, invitation_id)
    assert files(mail_dir, ".*.tmp") == set()


async def test_an_accepted_invitation_is_not_emailed(
    db: Backend, owner: Account, mailbox: Mailbox
) -> None:
    # given: an invitation accepted before its email job runs (again)
    invitation = await invite_quietly(db, owner, "mia@example.com")
    token = auth_service.invitation_token(db.settings, invitation.id)
    async with transaction():
        await auth_service.accept_invitation(
            db.settings, token=token, name="Mia", password="correct horse"
        )
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)

    # when
    try:
        await asyncio.to_thread(send_invitation.fn, str(invitation.id))
    finally:
        configure_settings(previous)
        controller.stop()

    # then
    assert mailbox.envelopes == []


async def test_a_451_reply_makes_the_actor_raise_for_a_retry(db: Backend, owner: Account) -> None:
    # given
    invitation = await invite_quietly(db, owner, "mia@example.com")
    busy = Mailbox(data_reply="451 4.3.0 Try again later")
    controller = Controller(busy, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)

    # when
    try:
        with pytest.raises(EmailDeliveryError) as caught:
            await asyncio.to_thread(send_invitation.fn, str(invitation.id))
    finally:
        configure_settings(previous)
        controller.stop()

    # then
    assert caught.value.temporary is True
    assert caught.value.smtp_code == 451
    assert busy.envelopes == []
    assert send_invitation.actor_name == "auth.send_invitation"
    assert send_invitation.options["max_retries"] == 8


async def test_an_unreachable_smtp_server_makes_the_actor_raise_for_a_retry(
    db: Backend, owner: Account
) -> None:
    # given: nothing listens on the port
    invitation = await invite_quietly(db, owner, "mia@example.com")
    previous = use_smtp(free_port())

    # when
    try:
        with pytest.raises(EmailDeliveryError) as caught:
            await asyncio.to_thread(send_invitation.fn, str(invitation.id))
    finally:
        configure_settings(previous)

    # then
    assert caught.value.temporary is True


async def test_a_permanent_refusal_is_logged_not_retried(
    db: Backend, owner: Account, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    invitation = await invite_quietly(db, owner, "mia@example.com")
    refusing = Mailbox(data_reply="550 5.7.1 Message rejected")
    controller = Controller(refusing, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)

    # when
    try:
        with caplog.at_level(logging.ERROR, logger="settle.tasks.auth"):
            await asyncio.to_thread(send_invitation.fn, str(invitation.id))
    finally:
        configure_settings(previous)
        controller.stop()

    # then: the actor returned normally, and said why nothing was sent
    records = [r for r in caplog.records if r.getMessage() == "invitation.email_rejected"]
    assert len(records) == 1
    assert records[0].__dict__["invitation_id"] == str(invitation.id)
    assert records[0].__dict__["smtp_code"] == 550
