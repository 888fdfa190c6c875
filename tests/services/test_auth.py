"""The account service: races on PostgreSQL, secrets kept out of storage, invitation rules."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from tortoise import Tortoise

from settle.core import clock
from settle.core.errors import AppError, ConflictError, ValidationError
from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Invitation, Role, User
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.services import auth as auth_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_client
from tests.fixtures.graphql import GraphQLClient

ACCEPT_INVITATION = """
mutation AcceptInvitation($input: AcceptInvitationInput!) {
  acceptInvitation(input: $input) {
    __typename
    ... on AuthPayload { user { email role } }
    ... on Error { code }
  }
}
"""

RACERS = 4


def require_postgres(db: Backend) -> None:
    if db.name != "postgres":
        pytest.skip("races are proven against PostgreSQL")


async def invite(
    settings: Settings, account: Account, email: str, role: Role = Role.MEMBER, **kw: Any
) -> auth_service.InvitationResult:
    async with transaction():
        return await auth_service.invite_member(
            settings, account.actor, email=email, role=role, **kw
        )


async def accept_in_transaction(settings: Settings, token: str, name: str) -> Any:
    """One acceptance as a request makes it; returns the result or the domain error."""
    try:
        async with transaction():
            return await auth_service.accept_invitation(
                settings, token=token, name=name, password="correct horse"
            )
    except AppError as exc:
        return exc


async def test_concurrent_acceptances_through_the_service_create_one_user(
    db: Backend, settings: Settings, owner: Account
) -> None:
    # given
    require_postgres(db)
    invited = await invite(settings, owner, "mia@example.com")

    # when
    results = await asyncio.gather(
        *(accept_in_transaction(settings, invited.token, f"Mia {i}") for i in range(RACERS))
    )

    # then
    winners = [r for r in results if isinstance(r, auth_service.AuthResult)]
    losers = [r for r in results if isinstance(r, AppError)]
    assert len(winners) == 1
    assert len(losers) == RACERS - 1
    assert all(isinstance(e, ValidationError) and e.code == "INVALID_TOKEN" for e in losers)
    assert await User.filter(email="mia@example.com").count() == 1
    joined = await ActivityEvent.filter(entity_type="user", verb="joined").count()
    assert joined == 1


async def test_concurrent_acceptances_through_the_api_create_one_user(
    db: Backend, settings: Settings, gql: GraphQLClient, owner: Account
) -> None:
    # given
    require_postgres(db)
    invited = await invite(settings, owner, "mia@example.com", role=Role.ADMIN)
    variables = {"input": {"token": invited.token, "password": "correct horse", "name": "Mia"}}

    # when
    results = await asyncio.gather(
        *(gql.execute(ACCEPT_INVITATION, variables) for _ in range(RACERS))
    )

    # then
    outcomes = sorted(r["acceptInvitation"]["__typename"] for r in results)
    assert outcomes == ["AuthPayload"] + ["ValidationError"] * (RACERS - 1)
    codes = {r["acceptInvitation"].get("code") for r in results} - {None}
    assert codes == {"INVALID_TOKEN"}
    assert await User.filter(email="mia@example.com").count() == 1


async def test_concurrent_sign_ups_with_one_email_create_one_agency(db: Backend) -> None:
    # given
    require_postgres(db)

    async def attempt(i: int) -> Any:
        try:
            async with transaction():
                return await auth_service.sign_up(
                    db.settings,
                    agency_name=f"Shop {i}",
                    name="Ana",
                    email="ana@example.com",
                    password="correct horse",
                )
        except AppError as exc:
            return exc

    # when
    results = await asyncio.gather(*(attempt(i) for i in range(RACERS)))

    # then
    assert sum(isinstance(r, auth_service.AuthResult) for r in results) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == RACERS - 1
    assert await User.filter(email="ana@example.com").count() == 1
    assert await Agency.all().count() == 1


async def _every_stored_value() -> str:
    """Every row of every table, as text."""
    conn = Tortoise.get_connection("default")
    dumps: list[str] = []
    for model in Tortoise.apps["settle"].values():
        rows = await conn.execute_query_dict(f'SELECT * FROM "{model._meta.db_table}"')
        dumps.append(repr(rows))
    return "\n".join(dumps)


async def test_the_invitation_token_is_not_stored_in_plain_text(
    db: Backend, settings: Settings, owner: Account
) -> None:
    # given
    client = await create_client(owner)

    # when
    member = await invite(settings, owner, "mia@example.com")
    client_user = await invite(
        settings, owner, "cleo@example.com", role=Role.CLIENT_LEAD, client_id=client.id
    )
    await db.drain()

    # then: the row holds only a hash, and the job carries only the invitation id
    for invited in (member, client_user):
        row = await Invitation.get(id=invited.invitation.id)
        assert row.token_hash != invited.token
        assert invited.token not in row.token_hash
        jobs = await OutboxMessage.filter(kind=OutboxKind.JOB, topic="auth.send_invitation")
        assert {"args": [str(invited.invitation.id)], "kwargs": {}} in [j.payload for j in jobs]
    stored = await _every_stored_value()
    assert "mia@example.com" in stored  # the dump does reach the invitation rows
    assert member.token not in stored
    assert client_user.token not in stored


async def test_invitation_tokens_differ_per_invitation(settings: Settings, owner: Account) -> None:
    # when
    first = await invite(settings, owner, "mia@example.com")
    second = await invite(settings, owner, "max@example.com")

    # then
    assert first.token != second.token
    assert auth_service.invitation_token(settings, first.invitation.id) == first.token


async def test_a_reinvite_revokes_only_the_same_agencys_open_invitation(
    settings: Settings, owner: Account, rival: Account
) -> None:
    # given: both agencies invite the same person
    ours = await invite(settings, owner, "mia@example.com")
    theirs = await invite(settings, rival, "mia@example.com")

    # when
    again = await invite(settings, owner, "mia@example.com", role=Role.ADMIN)

    # then
    revoked = await Invitation.get(id=ours.invitation.id)
    assert revoked.revoked_at is not None
    assert (await Invitation.get(id=theirs.invitation.id)).revoked_at is None
    assert (await Invitation.get(id=again.invitation.id)).revoked_at is None
    assert await Invitation.filter(email="mia@example.com", revoked_at__isnull=True).count() == 2


async def test_accepting_after_the_email_joined_elsewhere_is_a_conflict(
    settings: Settings, owner: Account, rival: Account
) -> None:
    # given: two agencies invited one address, and the first invitation was accepted
    ours = await invite(settings, owner, "mia@example.com")
    theirs = await invite(settings, rival, "mia@example.com")
    assert isinstance(
        await accept_in_transaction(settings, ours.token, "Mia"), auth_service.AuthResult
    )

    # when
    result = await accept_in_transaction(settings, theirs.token, "Mia")

    # then: refused, and the refused invitation is still unused (the claim rolled back)
    assert isinstance(result, ConflictError)
    assert (await Invitation.get(id=theirs.invitation.id)).accepted_at is None
    users = await User.filter(email="mia@example.com").values_list("agency_id", flat=True)
    assert users == [owner.agency_id]


async def test_invite_and_accept_record_activity(settings: Settings, owner: Account) -> None:
    # when
    invited = await invite(settings, owner, "mia@example.com", name="Mia")
    joined = await accept_in_transaction(settings, invited.token, "Mia")

    # then
    events = await ActivityEvent.filter(agency_id=owner.agency_id).order_by("created_at")
    assert [(e.entity_type, e.verb, e.summary) for e in events] == [
        ("agency", "created", "Olive Owner created the agency Northwind Studio"),
        ("invitation", "created", "Olive Owner invited mia@example.com as member"),
        ("user", "joined", "Mia joined as member"),
    ]
    assert events[1].actor_id == owner.user.id
    assert events[2].actor_id == joined.user.id


async def test_invitation_for_delivery_skips_closed_invitations(
    settings: Settings, owner: Account
) -> None:
    # given
    accepted = await invite(settings, owner, "mia@example.com")
    await accept_in_transaction(settings, accepted.token, "Mia")
    revoked = await invite(settings, owner, "max@example.com")
    open_ = await invite(settings, owner, "max@example.com")

    # then
    assert await auth_service.invitation_for_delivery(accepted.invitation.id) is None
    assert await auth_service.invitation_for_delivery(revoked.invitation.id) is None
    assert await auth_service.invitation_for_delivery(uuid.uuid4()) is None
    found = await auth_service.invitation_for_delivery(open_.invitation.id)
    assert found is not None
    invitation, agency, inviter = found
    assert invitation.id == open_.invitation.id
    assert agency.name == "Northwind Studio"
    assert inviter is not None
    assert inviter.id == owner.user.id
    # and once it has expired, a late retry sends nothing
    later = clock.now() + timedelta(seconds=settings.invitation_ttl_seconds + 1)
    clock.set_clock(lambda: later)
    try:
        assert await auth_service.invitation_for_delivery(open_.invitation.id) is None
    finally:
        clock.set_clock(None)


async def test_an_invitation_revoked_while_it_is_being_accepted_is_not_used(
    db: Backend, settings: Settings, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: an admin invitation, re-sent as a member invitation at the moment the
    # invitee's acceptance has read it (while the password is being hashed)
    require_postgres(db)
    invited = await invite(settings, owner, "mia@example.com", role=Role.ADMIN)
    real_hash = auth_service._hash
    reinvited: list[auth_service.InvitationResult] = []

    async def hash_during_reinvite(password: str) -> str:
        # A fresh context: the re-invite is another request with its own transaction.
        task = asyncio.create_task(
            invite(settings, owner, "mia@example.com", role=Role.MEMBER),
            context=contextvars.Context(),
        )
        reinvited.append(await task)
        return await real_hash(password)

    monkeypatch.setattr(auth_service, "_hash", hash_during_reinvite)

    # when
    result = await accept_in_transaction(settings, invited.token, "Mia")

    # then: the revoked admin invitation did not make an admin
    assert isinstance(result, ValidationError)
    assert result.code == "INVALID_TOKEN"
    assert not await User.filter(email="mia@example.com").exists()
    assert (await Invitation.get(id=invited.invitation.id)).accepted_at is None
    monkeypatch.setattr(auth_service, "_hash", real_hash)
    joined = await accept_in_transaction(settings, reinvited[0].token, "Mia")
    assert isinstance(joined, auth_service.AuthResult)
    assert joined.user.role is Role.MEMBER


async def test_argon2_work_runs_off_the_event_loop_thread(
    settings: Settings, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the hash and verify functions the service calls, recording their thread
    loop_thread = threading.get_ident()
    seen: list[int] = []

    def recording(fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            seen.append(threading.get_ident())
            return fn(*args)

        return wrapper

    monkeypatch.setattr(auth_service, "hash_password", recording(auth_service.hash_password))
    monkeypatch.setattr(auth_service, "verify_password", recording(auth_service.verify_password))
    invited = await invite(settings, owner, "mia@example.com")

    # when: a sign-up, a login and an acceptance, each of which runs argon2
    async with transaction():
        await auth_service.sign_up(
            settings, agency_name="Shop", name="Ana", email="ana@example.com", password="pw-123456"
        )
    async with transaction():
        await auth_service.login(settings, email="ana@example.com", password="pw-123456")
    await accept_in_transaction(settings, invited.token, "Mia")

    # then: none of it held up the event loop
    assert len(seen) == 3
    assert loop_thread not in seen
