"""The invitation page: ``GET /invitations/accept?token=`` (the emailed link) and its form."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx
import pytest
from aiosmtpd.controller import Controller

from settle.core import clock
from settle.core.errors import AuthenticationError
from settle.core.outbox import transaction
from settle.core.settings import configure_settings, get_settings
from settle.models.agency import Invitation, Role, User
from settle.services import auth as auth_service
from tests.conftest import Backend
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.smtp import Mailbox, body, free_port, use_smtp
from tests.tasks.test_auth import INVITE_MEMBER

ACCEPT_LINK = re.compile(r"http://settle\.test/invitations/accept\?token=[A-Za-z0-9_-]+")
INVALID = "This invitation is invalid or has expired"


class Page(HTMLParser):
    """What a test reads of a page: its text, its form's action and its fields."""

    def __init__(self, markup: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.form: dict[str, str] | None = None
        self.fields: list[tuple[str, str, str]] = []
        self._skip = 0
        self.feed(markup)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag in ("style", "title"):
            self._skip += 1
        elif tag == "form":
            self.form = values
        elif tag == "input":
            self.fields.append((values["name"], values["type"], values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip and data.strip():
            self.text.append(" ".join(data.split()))


@pytest.fixture
def smtp(db: Backend) -> Iterator[Mailbox]:
    """A real SMTP server that invitation emails go to during the test."""
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    previous = use_smtp(controller.port)
    try:
        yield mailbox
    finally:
        configure_settings(previous)
        controller.stop()


async def invited_by_email(gql: GraphQLClient, owner: Account, db: Backend, smtp: Mailbox) -> str:
    """Invite mia@example.com as a member named Mia; the link her email carries."""
    data = await gql.execute(
        INVITE_MEMBER,
        {"input": {"email": "mia@example.com", "role": "MEMBER", "name": "Mia"}},
        token=owner.token,
    )
    assert data["inviteMember"]["__typename"] == "Invitation"
    await db.drain()
    [message] = smtp.messages()
    [link] = set(ACCEPT_LINK.findall(body(message, "plain")))
    return link


def form_of(link: str, **changes: str) -> dict[str, str]:
    token = urlsplit(link).query.removeprefix("token=")
    return {
        "token": token,
        "name": "Mia Member",
        "password": "correct horse",
        "password_confirm": "correct horse",
        **changes,
    }


async def test_the_emailed_link_opens_a_form_that_joins_the_agency(
    db: Backend, http: httpx.AsyncClient, gql: GraphQLClient, owner: Account, smtp: Mailbox
) -> None:
    # given the link of a real invitation email
    link = await invited_by_email(gql, owner, db, smtp)
    token = form_of(link)["token"]

    # when the invitee opens it
    opened = await http.get(link)

    # then a form asks for a name (Mia, as invited) and a password, and posts the token back
    assert opened.status_code == 200
    assert opened.headers["cache-control"] == "no-store"
    assert opened.headers["referrer-policy"] == "no-referrer"
    page = Page(opened.text)
    assert page.text[:2] == [
        "Join Northwind Studio on Settle",
        "Olive Owner invited mia@example.com to join as Member.",
    ]
    assert page.form == {"method": "post", "action": "/invitations/accept"}
    assert page.fields == [
        ("token", "hidden", token),
        ("name", "text", "Mia"),
        ("password", "password", ""),
        ("password_confirm", "password", ""),
    ]

    # when the form is submitted
    joined = await http.post("/invitations/accept", data=form_of(link))

    # then she has joined, and logs in with the password she chose
    assert joined.status_code == 200
    assert Page(joined.text).text == [
        "Welcome to Northwind Studio",
        "You have joined as Member. Log in as mia@example.com with the password you chose.",
    ]
    user = await User.get(email="mia@example.com")
    assert (user.agency_id, user.name, user.role) == (owner.agency_id, "Mia Member", Role.MEMBER)
    logged_in = await auth_service.login(
        db.settings, email="mia@example.com", password="correct horse"
    )
    assert logged_in.user.id == user.id
    assert (await Invitation.get(email="mia@example.com")).accepted_at is not None

    # and the link works once
    again = await http.get(link)
    assert (again.status_code, Page(again.text).text[1]) == (404, f"{INVALID}.")
    assert Page(again.text).form is None


@pytest.mark.parametrize(
    "token",
    ["", "not-a-token", "Zm9yZ2VkLXRva2VuLXRoYXQtaXMtbG9uZy1lbm91Z2gtdG8tbG9vay1yZWFs"],
)
async def test_a_bad_token_shows_an_error_and_changes_nothing(
    db: Backend,
    http: httpx.AsyncClient,
    gql: GraphQLClient,
    owner: Account,
    smtp: Mailbox,
    token: str,
) -> None:
    # given an open invitation, and a token that is not its own
    link = await invited_by_email(gql, owner, db, smtp)
    before = await row_counts(User, Invitation)

    # when the page is opened and the form posted with the bad token
    opened = await http.get("/invitations/accept", params={"token": token})
    posted = await http.post("/invitations/accept", data=form_of(link, token=token))

    # then both say the invitation is not valid, offer no form, and nothing changed
    for answer in (opened, posted):
        page = Page(answer.text)
        assert (answer.status_code, page.text, page.form) == (
            404 if answer is opened else 400,
            ["Invitation not valid", f"{INVALID}.", "Ask whoever invited you to send a new one."],
            None,
        )
    assert await row_counts(User, Invitation) == before
    assert (await Invitation.get(email="mia@example.com")).accepted_at is None


async def test_an_expired_invitation_cannot_be_accepted(
    db: Backend, http: httpx.AsyncClient, gql: GraphQLClient, owner: Account, smtp: Mailbox
) -> None:
    # given the link of an invitation that has since expired
    link = await invited_by_email(gql, owner, db, smtp)
    await Invitation.filter(email="mia@example.com").update(
        expires_at=clock.now() - timedelta(minutes=1)
    )
    before = await row_counts(User, Invitation)

    # when it is opened and the form posted
    opened = await http.get(link)
    posted = await http.post("/invitations/accept", data=form_of(link))

    # then both refuse, and nobody joined
    assert [(a.status_code, Page(a.text).text[1]) for a in (opened, posted)] == [
        (404, f"{INVALID}."),
        (400, f"{INVALID}."),
    ]
    assert await row_counts(User, Invitation) == before


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"password": "short", "password_confirm": "short"},
            "Password must be at least 8 characters",
        ),
        ({"password_confirm": "correct horsf"}, "The two passwords do not match"),
        ({"name": "  "}, "Enter your name"),
    ],
)
async def test_a_bad_form_shows_its_error_keeps_the_name_and_changes_nothing(
    db: Backend,
    http: httpx.AsyncClient,
    gql: GraphQLClient,
    owner: Account,
    smtp: Mailbox,
    changes: dict[str, str],
    error: str,
) -> None:
    # given the link of an open invitation, with no name given when it was sent
    link = await invited_by_email(gql, owner, db, smtp)
    await Invitation.filter(email="mia@example.com").update(name="")
    before = await row_counts(User, Invitation)

    # when the form is posted with a bad field
    posted = await http.post("/invitations/accept", data=form_of(link, **changes))

    # then the form comes back with the error and the name typed, but no password
    assert posted.status_code == 400
    page = Page(posted.text)
    assert page.text[:3] == [
        "Join Northwind Studio on Settle",
        "Olive Owner invited mia@example.com to join as Member.",
        error,
    ]
    assert page.fields == [
        ("token", "hidden", form_of(link)["token"]),
        ("name", "text", form_of(link, **changes)["name"]),
        ("password", "password", ""),
        ("password_confirm", "password", ""),
    ]
    # and nothing changed: the invitation is still open
    assert await row_counts(User, Invitation) == before
    assert (await Invitation.get(email="mia@example.com")).accepted_at is None
    with pytest.raises(AuthenticationError):
        await auth_service.login(db.settings, email="mia@example.com", password="correct horse")


async def test_a_form_that_is_not_a_form_is_refused(db: Backend, http: httpx.AsyncClient) -> None:
    # when the page is posted JSON, or a body over its size limit
    as_json = await http.post("/invitations/accept", json={"token": "x"})
    too_big = await http.post(
        "/invitations/accept",
        content=b"token=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    # then they are refused before anything is looked up
    assert (as_json.status_code, too_big.status_code) == (415, 413)


@pytest.fixture
def frontend_url() -> Iterator[None]:
    previous = get_settings()
    configure_settings(
        previous.model_copy(update={"invitation_url": "https://app.northwind.example/join"})
    )
    yield
    configure_settings(previous)


async def test_invitation_links_can_point_at_a_frontend(
    db: Backend, owner: Account, smtp: Mailbox, frontend_url: None
) -> None:
    # given SETTLE_INVITATION_URL names the agency's own frontend
    # when someone is invited
    async with transaction():
        invited = await auth_service.invite_member(
            db.settings, owner.actor, email="mia@example.com", role=Role.MEMBER
        )
    await db.drain()
    # then the email sends them there with the token
    [message] = smtp.messages()
    link = f"https://app.northwind.example/join?token={invited.token}"
    assert body(message, "plain").count(link) == 1
    assert body(message, "html").count(f'href="{link}"') == 2
