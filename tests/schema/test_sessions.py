"""Sessions end: logout, changePassword, removeMember and the members they leave."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import Settings
from settle.models.activity import ActivityEvent
from settle.models.agency import Invitation, Role, User, UserSession
from settle.services import auth as auth_service
from tests.conftest import Backend
from tests.fixtures.db import drain_jobs
from tests.fixtures.factories import Account, create_agency, create_client, create_user
from tests.fixtures.graphql import GraphQLClient, count_queries
from tests.schema.test_auth import (
    ACCEPT_INVITATION,
    INVITE_MEMBER,
    LOGIN,
    ME,
    emailed_token,
    unauthenticated_body,
)

LOGOUT = """
mutation Logout {
  logout {
    __typename
    ... on LogoutPayload { ok }
    ... on Error { code message }
  }
}
"""

CHANGE_PASSWORD = """
mutation ChangePassword($input: ChangePasswordInput!) {
  changePassword(input: $input) {
    __typename
    ... on AuthPayload { token user { email } }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

REMOVE_MEMBER = """
mutation RemoveMember($userId: ID!) {
  removeMember(userId: $userId) {
    __typename
    ... on User { id email role }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

MEMBERS = """
query Members($first: Int, $after: String) {
  members(first: $first, after: $after) {
    totalCount
    edges { node { email role } }
    pageInfo { hasNextPage }
  }
}
"""

PASSWORD = "correct horse"  # every factory-made account's


async def login(gql: GraphQLClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    data = await gql.execute(LOGIN, {"input": {"email": email, "password": password}})
    result: dict[str, Any] = data["login"]
    return result


async def logged_in(gql: GraphQLClient, account: Account) -> str:
    """A second session of the account (another device); its token."""
    result = await login(gql, account.user.email)
    token: str = result["token"]
    return token


async def me(gql: GraphQLClient, token: str) -> dict[str, Any]:
    """The answer to ``me`` with ``token``: the data, or the whole body when refused."""
    body = await gql.execute(ME, token=token, expect_errors=True)
    if body["status_code"] == 200 and "errors" not in body:
        data: dict[str, Any] = body["data"]
        return data
    return body


def signed_in_as(account: Account) -> dict[str, Any]:
    return {
        "me": {
            "email": account.user.email,
            "agency": {"id": str(account.agency_id), "name": "Northwind Studio"},
        }
    }


async def change_password(gql: GraphQLClient, token: str, current: str, new: str) -> dict[str, Any]:
    data = await gql.execute(
        CHANGE_PASSWORD,
        {"input": {"currentPassword": current, "newPassword": new}},
        token=token,
    )
    result: dict[str, Any] = data["changePassword"]
    return result


async def remove(gql: GraphQLClient, account: Account, user_id: uuid.UUID | str) -> dict[str, Any]:
    data = await gql.execute(REMOVE_MEMBER, {"userId": str(user_id)}, token=account.token)
    result: dict[str, Any] = data["removeMember"]
    return result


async def member_emails(gql: GraphQLClient, account: Account) -> list[str]:
    data = await gql.execute(MEMBERS, {"first": 100}, token=account.token)
    return [edge["node"]["email"] for edge in data["members"]["edges"]]


INVALID = unauthenticated_body("Invalid access token")


# --- logout ------------------------------------------------------------------------------


async def test_logout_ends_the_session_of_its_token_only(
    gql: GraphQLClient, owner: Account
) -> None:
    # given: the owner signed in on two devices
    laptop = owner.token
    phone = await logged_in(gql, owner)

    # when: the laptop logs out
    result = await gql.execute(LOGOUT, token=laptop)

    # then: the laptop's token is refused, the phone's still works
    assert result == {"logout": {"__typename": "LogoutPayload", "ok": True}}
    assert await me(gql, laptop) == INVALID
    assert await me(gql, phone) == signed_in_as(owner)
    sessions = await UserSession.filter(user_id=owner.user.id).order_by("created_at")
    assert [session.ended_at is not None for session in sessions] == [True, False]


async def test_logout_twice_is_refused_the_second_time(gql: GraphQLClient, owner: Account) -> None:
    # given
    await gql.execute(LOGOUT, token=owner.token)

    # when
    body = await gql.execute(LOGOUT, token=owner.token, expect_errors=True)

    # then
    assert body == INVALID


async def test_logout_without_a_token_is_unauthenticated(gql: GraphQLClient) -> None:
    # when
    body = await gql.execute(LOGOUT, expect_errors=True)

    # then
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}


async def test_expired_sessions_go_when_their_user_signs_in_again(
    gql: GraphQLClient, owner: Account
) -> None:
    # given: a session of the owner that expired long ago, beside the live one
    expired = await UserSession.create(
        user_id=owner.user.id, expires_at=clock.now() - timedelta(days=1)
    )

    # when
    await logged_in(gql, owner)

    # then: the expired row is gone; the live ones stay
    assert not await UserSession.filter(id=expired.id).exists()
    assert await UserSession.filter(user_id=owner.user.id).count() == 2


# --- changePassword ----------------------------------------------------------------------


async def test_changing_the_password_ends_every_other_session(
    gql: GraphQLClient, owner: Account
) -> None:
    # given: two sessions
    laptop = owner.token
    phone = await logged_in(gql, owner)

    # when: the laptop changes the password
    result = await change_password(gql, laptop, PASSWORD, "a brand new secret")

    # then: a fresh token for the caller; both old tokens are refused
    assert result == {
        "__typename": "AuthPayload",
        "token": result["token"],
        "user": {"email": owner.user.email},
    }
    assert await me(gql, result["token"]) == signed_in_as(owner)
    assert await me(gql, laptop) == INVALID
    assert await me(gql, phone) == INVALID
    # and only the new password logs in
    assert (await login(gql, owner.user.email))["code"] == "UNAUTHENTICATED"
    assert (await login(gql, owner.user.email, "a brand new secret"))["__typename"] == "AuthPayload"
    event = await ActivityEvent.get(entity_id=owner.user.id, verb="password_changed")
    assert event.actor_id == owner.user.id
    assert event.internal is True


async def test_a_wrong_current_password_is_a_typed_error_and_changes_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # given
    phone = await logged_in(gql, owner)
    before = await User.get(id=owner.user.id)

    # when
    result = await change_password(gql, owner.token, "not the password", "a brand new secret")

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "WRONG_PASSWORD",
        "message": "The current password is not correct",
        "field": "currentPassword",
    }
    assert (await User.get(id=owner.user.id)).password_hash == before.password_hash
    assert await me(gql, owner.token) == signed_in_as(owner)
    assert await me(gql, phone) == signed_in_as(owner)


async def test_a_too_short_new_password_names_the_field(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await change_password(gql, owner.token, PASSWORD, "short")

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "TOO_SHORT",
        "message": "Password must be at least 8 characters",
        "field": "newPassword",
    }
    assert await me(gql, owner.token) == signed_in_as(owner)


async def test_guesses_at_the_current_password_count_as_logins(
    gql: GraphQLClient, owner: Account
) -> None:
    # given: ten wrong guesses through changePassword (the login limit per email)
    for _ in range(10):
        guess = await change_password(gql, owner.token, "a wrong guess", "a brand new secret")
        assert guess["code"] == "WRONG_PASSWORD"

    # when: the right password comes next, and then a login
    body = await gql.execute(
        CHANGE_PASSWORD,
        {"input": {"currentPassword": PASSWORD, "newPassword": "a brand new secret"}},
        token=owner.token,
        expect_errors=True,
    )
    login_body = await gql.execute(
        LOGIN, {"input": {"email": owner.user.email, "password": PASSWORD}}, expect_errors=True
    )

    # then: both are refused for now, and the password is unchanged
    for answer, field in ((body, "changePassword"), (login_body, "login")):
        assert answer["status_code"] == 429
        assert answer["data"][field]["__typename"] == "RateLimitedError"
    assert await me(gql, owner.token) == signed_in_as(owner)


# --- removeMember ------------------------------------------------------------------------


async def test_an_owner_removes_a_member(gql: GraphQLClient, owner: Account) -> None:
    # given: a member signed in
    member = await create_user(owner, role=Role.MEMBER, name="Mia Member")
    assert await me(gql, member.token) == signed_in_as(member)

    # when
    result = await remove(gql, owner, member.user.id)

    # then: their token is refused, they cannot log in, and they are no longer listed
    assert result == {
        "__typename": "User",
        "id": str(member.user.id),
        "email": member.user.email,
        "role": "MEMBER",
    }
    assert await me(gql, member.token) == INVALID
    assert (await login(gql, member.user.email))["code"] == "UNAUTHENTICATED"
    assert await member_emails(gql, owner) == [owner.user.email]
    assert await UserSession.filter(user_id=member.user.id, ended_at__isnull=True).count() == 0
    # and the timeline says who removed whom
    event = await ActivityEvent.get(entity_id=member.user.id, verb="removed")
    assert event.actor_id == owner.user.id
    assert event.entity_type == "user"
    assert event.summary == f"Olive Owner removed Mia Member ({member.user.email}, member)"
    assert event.changes == {"is_active": {"before": True, "after": False}}


@pytest.mark.parametrize(
    ("remover", "removed"),
    [
        (Role.ADMIN, Role.ADMIN),
        (Role.ADMIN, Role.MEMBER),
        (Role.ADMIN, Role.CLIENT_LEAD),
        (Role.OWNER, Role.OWNER),
        (Role.OWNER, Role.CLIENT_VIEWER),
    ],
)
async def test_managers_remove_who_the_rules_allow(
    gql: GraphQLClient, owner: Account, remover: Role, removed: Role
) -> None:
    # given
    client = await create_client(owner, name="Acme")
    actor = owner if remover is Role.OWNER else await create_user(owner, role=remover)
    target = await create_user(owner, role=removed, client=client if removed.is_client else None)

    # when
    result = await remove(gql, actor, target.user.id)

    # then
    assert (result["__typename"], result["id"]) == ("User", str(target.user.id))
    assert await me(gql, target.token) == INVALID


@pytest.mark.parametrize(
    ("remover", "removed", "message"),
    [
        (Role.MEMBER, Role.MEMBER, "You are not allowed to do this"),
        (Role.CLIENT_LEAD, Role.MEMBER, "You are not allowed to do this"),
        (Role.CLIENT_VIEWER, Role.CLIENT_LEAD, "You are not allowed to do this"),
        (Role.ADMIN, Role.OWNER, "Only an owner can remove an owner"),
    ],
)
async def test_others_may_not_remove(
    gql: GraphQLClient, owner: Account, remover: Role, removed: Role, message: str
) -> None:
    # given
    client = await create_client(owner, name="Acme")
    actor = await create_user(owner, role=remover, client=client if remover.is_client else None)
    target = (
        owner
        if removed is Role.OWNER
        else await create_user(owner, role=removed, client=client if removed.is_client else None)
    )

    # when
    result = await remove(gql, actor, target.user.id)

    # then: refused, and the target is untouched
    assert result == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": message,
    }
    assert await me(gql, target.token) == signed_in_as(target)
    assert not await ActivityEvent.filter(verb="removed").exists()


async def test_nobody_removes_themselves(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await remove(gql, owner, owner.user.id)

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "CANNOT_REMOVE_SELF",
        "message": "You cannot remove yourself from the agency",
        "field": "userId",
    }
    assert await me(gql, owner.token) == signed_in_as(owner)


@pytest.mark.parametrize("who", ["rival", "unknown", "removed"])
async def test_a_user_outside_the_agency_is_not_found(
    gql: GraphQLClient, owner: Account, rival: Account, who: str
) -> None:
    # given
    if who == "rival":
        user_id = rival.user.id
    elif who == "unknown":
        user_id = uuid.uuid4()
    else:
        member = await create_user(owner, role=Role.MEMBER)
        await remove(gql, owner, member.user.id)
        user_id = member.user.id

    # when
    result = await remove(gql, owner, user_id)

    # then
    assert result == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "User not found",
    }
    assert await me(gql, rival.token) == {
        "me": {
            "email": rival.user.email,
            "agency": {"id": str(rival.agency_id), "name": "Rival Works"},
        }
    }


async def test_two_owners_removing_each_other_at_once_leave_one(
    db: Backend, settings: Settings, owner: Account
) -> None:
    if db.name != "postgres":
        pytest.skip("races are proven against PostgreSQL")
    # given: two owners
    other = await create_user(owner, role=Role.OWNER)

    async def removing(actor: Account, target: Account) -> Any:
        try:
            async with transaction():
                return await auth_service.remove_member(actor.actor, target.user.id)
        except auth_service.LastOwnerError as exc:
            return exc.code

    # when: each removes the other at the same moment
    results = await asyncio.gather(removing(owner, other), removing(other, owner))

    # then: one removal went through, the other found no owner would be left
    assert sorted(type(result).__name__ for result in results) == ["User", "str"]
    assert "LAST_OWNER" in results
    assert (
        await User.filter(agency_id=owner.agency_id, role=Role.OWNER, is_active=True).count() == 1
    )


async def test_a_removed_member_invited_again_returns_as_the_same_user(
    gql: GraphQLClient, owner: Account
) -> None:
    # given: a removed member
    member = await create_user(owner, role=Role.MEMBER, name="Mia")
    await remove(gql, owner, member.user.id)

    # when: invited again, as an admin this time, and accepting
    invited = (
        await gql.execute(
            INVITE_MEMBER,
            {"input": {"email": member.user.email, "role": "ADMIN"}},
            token=owner.token,
        )
    )["inviteMember"]
    joined = (
        await gql.execute(
            ACCEPT_INVITATION,
            {"input": {"token": emailed_token(invited), "password": "welcome back", "name": "Mia"}},
        )
    )["acceptInvitation"]

    # then: the same user, active again with the new role and password
    assert joined["user"] == {
        "id": str(member.user.id),
        "email": member.user.email,
        "name": "Mia",
        "role": "ADMIN",
        "client": None,
    }
    assert await me(gql, joined["token"]) == signed_in_as(member)
    assert await me(gql, member.token) == INVALID
    assert sorted(await member_emails(gql, owner)) == sorted([owner.user.email, member.user.email])


# --- members -----------------------------------------------------------------------------


async def test_members_lists_the_agencys_users_oldest_first(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given
    admin = await create_user(owner, role=Role.ADMIN)
    member = await create_user(owner, role=Role.MEMBER)

    # when
    data = await gql.execute(MEMBERS, {"first": 2}, token=member.token)

    # then
    assert data == {
        "members": {
            "totalCount": 3,
            "edges": [
                {"node": {"email": owner.user.email, "role": "OWNER"}},
                {"node": {"email": admin.user.email, "role": "ADMIN"}},
            ],
            "pageInfo": {"hasNextPage": True},
        }
    }


async def test_client_users_may_not_list_members(gql: GraphQLClient, owner: Account) -> None:
    # given
    client = await create_client(owner, name="Acme")
    lead = await create_user(owner, role=Role.CLIENT_LEAD, client=client)

    # when
    body = await gql.execute(MEMBERS, token=lead.token, expect_errors=True)

    # then
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "PERMISSION_DENIED"}


# --- inviteMember keeps other agencies' accounts to itself -------------------------------


async def invite_over_api(gql: GraphQLClient, owner: Account, email: str) -> dict[str, Any]:
    data = await gql.execute(
        INVITE_MEMBER, {"input": {"email": email, "role": "MEMBER"}}, token=owner.token
    )
    result: dict[str, Any] = data["inviteMember"]
    return result


async def statements_of_invite(settings: Settings, owner: Account, email: str) -> list[str]:
    """The SQL an invitation runs, without its parameters (jobs sent earlier done first)."""
    await drain_jobs()
    async with transaction():
        with count_queries() as queries:
            await auth_service.invite_member(settings, owner.actor, email=email, role=Role.MEMBER)
    return [query.split(": [", 1)[0] for query in queries.queries]


async def test_inviting_an_address_of_another_agency_looks_like_inviting_a_new_one(
    gql: GraphQLClient, settings: Settings, owner: Account
) -> None:
    # given: an address with an account in another agency, and one with none
    elsewhere = await create_agency(agency_name="Elsewhere", email="taken@example.com")

    # when: the owner invites both
    taken = await invite_over_api(gql, owner, "taken@example.com")
    fresh = await invite_over_api(gql, owner, "fresh@example.com")

    # then: the same answer, after the same work
    def shape(answer: dict[str, Any]) -> dict[str, Any]:
        return {
            key: value for key, value in answer.items() if key not in ("id", "email", "expiresAt")
        }

    assert shape(taken) == shape(fresh)
    assert (taken["__typename"], taken["email"]) == ("Invitation", "taken@example.com")
    assert await Invitation.filter(agency_id=owner.agency_id).count() == 2
    # and only the address's owner, accepting, learns the address is taken
    refused = (
        await gql.execute(
            ACCEPT_INVITATION,
            {"input": {"token": emailed_token(taken), "password": "a password", "name": "T"}},
        )
    )["acceptInvitation"]
    assert refused == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "An account with this email already exists",
    }
    # and the same statements ran for both (a new invitation to each, measured on its own)
    assert await statements_of_invite(
        settings, owner, "taken@example.com"
    ) == await statements_of_invite(settings, owner, "fresh@example.com")
    assert (await User.get(email="taken@example.com")).agency_id == elsewhere.agency_id


async def test_the_invitation_token_is_not_in_the_answer(gql: GraphQLClient) -> None:
    # when
    body = await gql.execute(
        'mutation { inviteMember(input: {email: "x@example.com", role: MEMBER}) '
        "{ ... on Invitation { token } } }",
        expect_errors=True,
    )

    # then: the field does not exist; the token reaches only the invitee's inbox
    assert body["data"] is None
    assert body["errors"][0]["message"] == (
        "Cannot query field 'token' on type 'Invitation'. Did you mean 'role'?"
    )
