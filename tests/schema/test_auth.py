"""Accounts through the API: signUp, login, bearer tokens, inviteMember and acceptInvitation."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from itsdangerous import TimestampSigner

from settle.app import create_app
from settle.core import clock
from settle.core.auth import TokenSigner
from settle.core.settings import Settings, get_settings
from settle.models.agency import Agency, Invitation, Role, User
from settle.models.client import Client
from settle.services import auth as auth_service
from tests.conftest import TEST_SECRET, Backend
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient

SIGN_UP = """
mutation SignUp($input: SignUpInput!) {
  signUp(input: $input) {
    __typename
    ... on AuthPayload { token user { id email name role } }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

LOGIN = """
mutation Login($input: LoginInput!) {
  login(input: $input) {
    __typename
    ... on AuthPayload { token user { id email name role } }
    ... on Error { code message }
  }
}
"""

ME = """
query Me {
  me { email agency { id name } }
}
"""

CLIENTS = """
query Clients {
  clients(first: 10) { totalCount }
}
"""

CREATE_CLIENT = """
mutation CreateClient($input: CreateClientInput!) {
  createClient(input: $input) {
    __typename
    ... on Client { id name }
    ... on Error { code message }
  }
}
"""

INVITE_MEMBER = """
mutation InviteMember($input: InviteMemberInput!) {
  inviteMember(input: $input) {
    __typename
    ... on Invitation { id email role expiresAt }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

ACCEPT_INVITATION = """
mutation AcceptInvitation($input: AcceptInvitationInput!) {
  acceptInvitation(input: $input) {
    __typename
    ... on AuthPayload { token user { id email name role client { id name } } }
    ... on Error { code message }
    ... on ValidationError { field }
  }
}
"""

SIGN_UP_INPUT = {
    "agencyName": "Acme Design",
    "name": "Ana Owner",
    "email": "ana@example.com",
    "password": "correct horse",
}

INVALID_TOKEN = {
    "__typename": "ValidationError",
    "code": "INVALID_TOKEN",
    "message": "This invitation is invalid or has expired",
    "field": "token",
}


async def sign_up(gql: GraphQLClient, **overrides: str) -> dict[str, Any]:
    data = await gql.execute(SIGN_UP, {"input": {**SIGN_UP_INPUT, **overrides}})
    result: dict[str, Any] = data["signUp"]
    return result


async def invite(gql: GraphQLClient, account: Account, **values: Any) -> dict[str, Any]:
    data = await gql.execute(INVITE_MEMBER, {"input": values}, token=account.token)
    result: dict[str, Any] = data["inviteMember"]
    return result


def emailed_token(invited: dict[str, Any]) -> str:
    """The token the invitation email carries (the API never shows it to the inviter)."""
    return auth_service.invitation_token(get_settings(), uuid.UUID(invited["id"]))


async def accept(gql: GraphQLClient, **values: Any) -> dict[str, Any]:
    data = await gql.execute(ACCEPT_INVITATION, {"input": values})
    result: dict[str, Any] = data["acceptInvitation"]
    return result


def unauthenticated_body(message: str) -> dict[str, Any]:
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": "UNAUTHENTICATED"}}],
        "status_code": 401,
    }


# --- signUp ----------------------------------------------------------------------------


async def test_sign_up_creates_the_agency_and_its_owner(gql: GraphQLClient) -> None:
    # when
    result = await sign_up(gql)

    # then
    user = await User.get(email="ana@example.com")
    agency = await Agency.get(id=user.agency_id)
    assert result == {
        "__typename": "AuthPayload",
        "token": result["token"],
        "user": {
            "id": str(user.id),
            "email": "ana@example.com",
            "name": "Ana Owner",
            "role": "OWNER",
        },
    }
    assert agency.name == "Acme Design"
    assert user.role is Role.OWNER
    assert user.client_id is None
    assert await Agency.all().count() == 1
    assert await User.all().count() == 1
    # the token logs the new owner in
    me = await gql.execute(ME, token=result["token"])
    assert me == {
        "me": {"email": "ana@example.com", "agency": {"id": str(agency.id), "name": "Acme Design"}}
    }


async def test_sign_up_normalises_the_email(gql: GraphQLClient) -> None:
    # when
    result = await sign_up(gql, email="  Ana@Example.COM ")

    # then
    assert result["user"]["email"] == "ana@example.com"
    assert await User.filter(email="ana@example.com").count() == 1


async def test_sign_up_with_a_taken_email_is_a_conflict(gql: GraphQLClient) -> None:
    # given
    await sign_up(gql)

    # when: the same address, differently cased, for another agency
    result = await sign_up(gql, agencyName="Second Shop", email="ANA@example.com")

    # then
    assert result == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "An account with this email already exists",
    }
    assert await Agency.all().values_list("name", flat=True) == ["Acme Design"]
    assert await User.all().count() == 1


@pytest.mark.parametrize(
    ("overrides", "field", "code", "message"),
    [
        (
            {"email": "not-an-email"},
            "email",
            "INVALID_EMAIL",
            "Invalid email address: An email address must have an @-sign.",
        ),
        ({"email": "   "}, "email", "REQUIRED", "email must not be empty"),
        ({"name": ""}, "name", "REQUIRED", "name must not be empty"),
        ({"name": "   "}, "name", "REQUIRED", "name must not be empty"),
        ({"name": "x" * 201}, "name", "TOO_LONG", "name must be at most 200 characters"),
        ({"agencyName": ""}, "agencyName", "REQUIRED", "agencyName must not be empty"),
        (
            {"password": "short12"},
            "password",
            "TOO_SHORT",
            "Password must be at least 8 characters",
        ),
        ({"password": " " * 8}, "password", "REQUIRED", "Password must not be only spaces"),
        (
            {"password": "password"},
            "password",
            "COMMON_PASSWORD",
            "This password is one of the most common ones; choose one that is harder to guess",
        ),
        (
            {"password": "12345678"},
            "password",
            "COMMON_PASSWORD",
            "This password is one of the most common ones; choose one that is harder to guess",
        ),
    ],
)
async def test_sign_up_with_bad_input_names_the_field_and_writes_nothing(
    gql: GraphQLClient, overrides: dict[str, str], field: str, code: str, message: str
) -> None:
    # when
    result = await sign_up(gql, **overrides)

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": code,
        "message": message,
        "field": field,
    }
    assert await Agency.all().count() == 0
    assert await User.all().count() == 0


SIGN_UP_WITH_AGENCY = """
mutation SignUp($input: SignUpInput!) {
  signUp(input: $input) {
    ... on AuthPayload { user { email agency { name } client { id } } }
  }
}
"""


async def test_the_payload_user_resolves_its_agency_without_a_bearer_token(
    gql: GraphQLClient,
) -> None:
    # given: no Authorization header; the payload is read as the user it was issued for

    # when
    data = await gql.execute(SIGN_UP_WITH_AGENCY, {"input": SIGN_UP_INPUT})

    # then
    assert data == {
        "signUp": {
            "user": {"email": "ana@example.com", "agency": {"name": "Acme Design"}, "client": None}
        }
    }


# --- login -----------------------------------------------------------------------------


async def test_login_returns_a_token_that_works_for_me(gql: GraphQLClient) -> None:
    # given
    signed_up = await sign_up(gql)
    user = await User.get(email="ana@example.com")
    assert user.last_login_at is None

    # when
    data = await gql.execute(
        LOGIN, {"input": {"email": "Ana@Example.com", "password": "correct horse"}}
    )

    # then
    result = data["login"]
    assert result == {
        "__typename": "AuthPayload",
        "token": result["token"],
        "user": signed_up["user"],
    }
    me = await gql.execute(ME, token=result["token"])
    assert me == {
        "me": {
            "email": "ana@example.com",
            "agency": {"id": str(user.agency_id), "name": "Acme Design"},
        }
    }
    await user.refresh_from_db()
    assert user.last_login_at is not None


async def test_the_password_is_stored_as_an_argon2id_hash(gql: GraphQLClient) -> None:
    # when
    await sign_up(gql)

    # then
    stored = await User.get(email="ana@example.com").values_list("password_hash", flat=True)
    assert isinstance(stored, str)
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored


async def test_wrong_password_and_unknown_email_give_the_same_error(
    gql: GraphQLClient,
) -> None:
    # given
    await sign_up(gql)

    # when
    wrong_password = await gql.execute(
        LOGIN, {"input": {"email": "ana@example.com", "password": "wrong horse"}}
    )
    unknown_email = await gql.execute(
        LOGIN, {"input": {"email": "nobody@example.com", "password": "correct horse"}}
    )
    blank = await gql.execute(LOGIN, {"input": {"email": "", "password": ""}})

    # then
    expected = {
        "__typename": "AuthenticationError",
        "code": "UNAUTHENTICATED",
        "message": "Invalid email or password",
    }
    assert wrong_password["login"] == expected
    assert unknown_email["login"] == expected
    assert blank["login"] == expected
    user = await User.get(email="ana@example.com")
    assert user.last_login_at is None


async def test_a_deactivated_user_cannot_log_in(gql: GraphQLClient) -> None:
    # given
    await sign_up(gql)
    await User.filter(email="ana@example.com").update(is_active=False)

    # when
    data = await gql.execute(
        LOGIN, {"input": {"email": "ana@example.com", "password": "correct horse"}}
    )

    # then
    assert data["login"] == {
        "__typename": "AuthenticationError",
        "code": "UNAUTHENTICATED",
        "message": "Invalid email or password",
    }


# --- bearer tokens ---------------------------------------------------------------------


async def test_no_token_me_is_null(gql: GraphQLClient) -> None:
    # when
    data = await gql.execute(ME)

    # then
    assert data == {"me": None}


async def test_no_token_clients_is_a_top_level_unauthenticated_error(gql: GraphQLClient) -> None:
    # when
    body = await gql.execute(CLIENTS, expect_errors=True)

    # then
    assert body["data"] is None
    assert [error["extensions"] for error in body["errors"]] == [{"code": "UNAUTHENTICATED"}]
    assert body["errors"][0]["message"] == "Authentication required"
    assert body["errors"][0]["path"] == ["clients"]


async def test_no_token_create_client_is_refused_and_writes_nothing(gql: GraphQLClient) -> None:
    # when
    body = await gql.execute(CREATE_CLIENT, {"input": {"name": "Ghost"}}, expect_errors=True)

    # then
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert await Client.all().count() == 0


def reissued(account: Account, key: str, ttl_seconds: int) -> str:
    """A token for the account's session, signed now with ``key`` for ``ttl_seconds``."""
    claims = TokenSigner(get_settings().signing_key(), 3600).verify(account.token)
    return TokenSigner(key, ttl_seconds).issue(account.user.id, claims.session_id)


def _another_key_token(settings: Settings, account: Account) -> str:
    return reissued(account, "a-different-secret-key", settings.access_token_ttl_seconds)


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda settings, account: "not-a-token", "Invalid access token"),
        (lambda settings, account: account.token[:-3] + "AAA", "Invalid access token"),
        (lambda settings, account: account.token + "x", "Invalid access token"),
        (_another_key_token, "Invalid access token"),
    ],
    ids=["garbage", "bad-signature", "trailing-junk", "another-key"],
)
async def test_a_bad_token_is_rejected_before_anything_runs(
    gql: GraphQLClient,
    settings: Settings,
    owner: Account,
    make_token: Any,
    message: str,
) -> None:
    # given
    token = make_token(settings, owner)

    # when
    body = await gql.execute(
        CREATE_CLIENT, {"input": {"name": "Never Made"}}, token=token, expect_errors=True
    )

    # then
    assert body == unauthenticated_body(message)
    assert await Client.all().count() == 0


async def test_an_expired_token_is_rejected_before_anything_runs(
    gql: GraphQLClient,
    http: httpx.AsyncClient,
    settings: Settings,
    owner: Account,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: a token signed with the app's key, and the clock itsdangerous reads
    # (TimestampSigner.get_timestamp, int(time.time()) in 2.x) past its lifetime
    token = owner.token
    assert (await gql.execute(ME, token=token))["me"]["email"] == owner.user.email
    later = int(time.time()) + settings.access_token_ttl_seconds + 2
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)

    # when
    body = await gql.execute(
        CREATE_CLIENT, {"input": {"name": "Never Made"}}, token=token, expect_errors=True
    )

    # then
    assert body == unauthenticated_body("Access token expired")
    assert await Client.all().count() == 0


async def test_a_token_for_a_one_second_signer_expires(
    db: Backend, owner: Account, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the app configured with a one-second token lifetime
    short = db.settings.model_copy(update={"access_token_ttl_seconds": 1})
    token = reissued(owner, short.signing_key(), 1)
    transport = httpx.ASGITransport(app=create_app(short, manage_runtime=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        gql = GraphQLClient(http)
        assert (await gql.execute(ME, token=token))["me"]["email"] == owner.user.email

        # when: two seconds pass for itsdangerous
        later = int(time.time()) + 2
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
        body = await gql.execute(
            CREATE_CLIENT, {"input": {"name": "Never Made"}}, token=token, expect_errors=True
        )

    # then
    assert body == unauthenticated_body("Access token expired")
    assert await Client.all().count() == 0


async def test_a_deactivated_users_token_is_rejected(gql: GraphQLClient, owner: Account) -> None:
    # given
    await User.filter(id=owner.user.id).update(is_active=False)

    # when
    body = await gql.execute(
        CREATE_CLIENT, {"input": {"name": "Never Made"}}, token=owner.token, expect_errors=True
    )

    # then
    assert body == unauthenticated_body("Invalid access token")
    assert await Client.all().count() == 0


async def test_a_token_of_a_deleted_user_is_rejected(
    gql: GraphQLClient, settings: Settings, owner: Account
) -> None:
    # given: a well-signed token for a user id that does not exist
    token = TokenSigner(TEST_SECRET, settings.access_token_ttl_seconds).issue(
        uuid.uuid4(), uuid.uuid4()
    )

    # when
    body = await gql.execute(ME, token=token, expect_errors=True)

    # then
    assert body == unauthenticated_body("Invalid access token")


async def test_a_good_token_runs_the_mutation(gql: GraphQLClient, owner: Account) -> None:
    # when
    data = await gql.execute(CREATE_CLIENT, {"input": {"name": "Real Client"}}, token=owner.token)

    # then
    client = await Client.get(name="Real Client")
    assert data == {
        "createClient": {"__typename": "Client", "id": str(client.id), "name": "Real Client"}
    }
    assert client.agency_id == owner.agency_id


# --- inviteMember ----------------------------------------------------------------------


async def test_an_owner_invites_a_member(
    gql: GraphQLClient, settings: Settings, owner: Account
) -> None:
    # given
    frozen = clock.now().replace(microsecond=0)
    clock.set_clock(lambda: frozen)
    try:
        # when
        result = await invite(gql, owner, email="Mia@Example.com", role="MEMBER", name="Mia")
    finally:
        clock.set_clock(None)

    # then
    invitation = await Invitation.get(email="mia@example.com")
    expires_at = frozen + timedelta(seconds=settings.invitation_ttl_seconds)
    assert result == {
        "__typename": "Invitation",
        "id": str(invitation.id),
        "email": "mia@example.com",
        "role": "MEMBER",
        "expiresAt": expires_at.isoformat(),
    }
    assert invitation.agency_id == owner.agency_id
    assert invitation.invited_by_id == owner.user.id
    assert invitation.role is Role.MEMBER
    assert invitation.name == "Mia"
    assert invitation.client_id is None
    assert invitation.expires_at == expires_at
    assert invitation.accepted_at is None
    assert invitation.revoked_at is None


async def test_an_admin_invites_a_member(gql: GraphQLClient, owner: Account) -> None:
    # given
    admin = await create_user(owner, role=Role.ADMIN)

    # when
    result = await invite(gql, admin, email="mia@example.com", role="MEMBER")

    # then
    assert result["__typename"] == "Invitation"
    invitation = await Invitation.get(email="mia@example.com")
    assert invitation.invited_by_id == admin.user.id


@pytest.mark.parametrize("role", [Role.MEMBER, Role.CLIENT_LEAD, Role.CLIENT_VIEWER])
async def test_only_managers_invite(gql: GraphQLClient, owner: Account, role: Role) -> None:
    # given
    client = await create_client(owner) if role.is_client else None
    account = await create_user(owner, role=role, client=client)
    before = await Invitation.all().count()

    # when
    result = await invite(gql, account, email="mia@example.com", role="MEMBER")

    # then
    assert result == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "You are not allowed to do this",
    }
    assert await Invitation.all().count() == before


async def test_an_admin_cannot_invite_an_owner(gql: GraphQLClient, owner: Account) -> None:
    # given
    admin = await create_user(owner, role=Role.ADMIN)

    # when
    result = await invite(gql, admin, email="boss@example.com", role="OWNER")

    # then
    assert result == {
        "__typename": "PermissionDeniedError",
        "code": "PERMISSION_DENIED",
        "message": "Only an owner can invite another owner",
    }
    assert not await Invitation.filter(email="boss@example.com").exists()


async def test_an_owner_can_invite_an_owner(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await invite(gql, owner, email="boss@example.com", role="OWNER")

    # then
    assert result["__typename"] == "Invitation"
    assert result["role"] == "OWNER"


@pytest.mark.parametrize("role", ["CLIENT_LEAD", "CLIENT_VIEWER"])
async def test_a_client_role_requires_a_client(
    gql: GraphQLClient, owner: Account, role: str
) -> None:
    # when
    result = await invite(gql, owner, email="cleo@example.com", role=role)

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "REQUIRED",
        "message": "Client users must belong to a client",
        "field": "clientId",
    }
    assert await Invitation.all().count() == 0


async def test_a_member_role_takes_no_client(gql: GraphQLClient, owner: Account) -> None:
    # given
    client = await create_client(owner)

    # when
    result = await invite(
        gql, owner, email="mia@example.com", role="MEMBER", clientId=str(client.id)
    )

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "VALIDATION_ERROR",
        "message": "Only client users belong to a client",
        "field": "clientId",
    }
    assert await Invitation.all().count() == 0


async def test_a_client_of_another_agency_is_not_found(
    gql: GraphQLClient, owner: Account, rival: Account
) -> None:
    # given
    foreign = await create_client(rival, name="Rival Client")

    # when
    result = await invite(
        gql, owner, email="cleo@example.com", role="CLIENT_LEAD", clientId=str(foreign.id)
    )

    # then
    assert result == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Client not found",
    }
    assert await Invitation.all().count() == 0


async def test_a_malformed_client_id_names_the_field(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await invite(gql, owner, email="cleo@example.com", role="CLIENT_LEAD", clientId="x")

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "INVALID_ID",
        "message": "clientId is not a valid id",
        "field": "clientId",
    }
    assert await Invitation.all().count() == 0


async def test_inviting_an_invalid_email_names_the_field(
    gql: GraphQLClient, owner: Account
) -> None:
    # when
    result = await invite(gql, owner, email="not-an-email", role="MEMBER")

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": "INVALID_EMAIL",
        "message": "Invalid email address: An email address must have an @-sign.",
        "field": "email",
    }
    assert await Invitation.all().count() == 0


async def test_inviting_an_existing_user_is_a_conflict(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await invite(gql, owner, email=owner.user.email, role="MEMBER")

    # then
    assert result == {
        "__typename": "ConflictError",
        "code": "CONFLICT",
        "message": "This person is already a member of the agency",
    }
    assert await Invitation.all().count() == 0


async def test_inviting_without_a_token_is_unauthenticated(gql: GraphQLClient) -> None:
    # when
    body = await gql.execute(
        INVITE_MEMBER, {"input": {"email": "mia@example.com", "role": "MEMBER"}}, expect_errors=True
    )

    # then
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {"code": "UNAUTHENTICATED"}
    assert await Invitation.all().count() == 0


# --- acceptInvitation ------------------------------------------------------------------


async def test_accepting_an_invitation_joins_the_agency(gql: GraphQLClient, owner: Account) -> None:
    # given
    invited = await invite(gql, owner, email="mia@example.com", role="ADMIN", name="Mia")

    # when
    result = await accept(gql, token=emailed_token(invited), password="mia's password")

    # then
    user = await User.get(email="mia@example.com")
    assert result == {
        "__typename": "AuthPayload",
        "token": result["token"],
        "user": {
            "id": str(user.id),
            "email": "mia@example.com",
            "name": "Mia",
            "role": "ADMIN",
            "client": None,
        },
    }
    assert user.agency_id == owner.agency_id
    assert user.role is Role.ADMIN
    assert user.client_id is None
    assert user.password_hash.startswith("$argon2id$")
    invitation = await Invitation.get(id=invited["id"])
    assert invitation.accepted_at is not None
    me = await gql.execute(ME, token=result["token"])
    assert me == {
        "me": {
            "email": "mia@example.com",
            "agency": {"id": str(owner.agency_id), "name": "Northwind Studio"},
        }
    }
    login = await gql.execute(
        LOGIN, {"input": {"email": "mia@example.com", "password": "mia's password"}}
    )
    assert login["login"]["__typename"] == "AuthPayload"


async def test_a_client_user_joins_bound_to_the_client(gql: GraphQLClient, owner: Account) -> None:
    # given
    client = await create_client(owner, name="Globex")
    invited = await invite(
        gql, owner, email="cleo@example.com", role="CLIENT_VIEWER", clientId=str(client.id)
    )

    # when
    result = await accept(gql, token=emailed_token(invited), password="cleo password", name="Cleo")

    # then
    user = await User.get(email="cleo@example.com")
    assert result["user"] == {
        "id": str(user.id),
        "email": "cleo@example.com",
        "name": "Cleo",
        "role": "CLIENT_VIEWER",
        "client": {"id": str(client.id), "name": "Globex"},
    }
    assert user.client_id == client.id
    assert user.agency_id == owner.agency_id


async def test_an_invitation_token_works_once(gql: GraphQLClient, owner: Account) -> None:
    # given
    invited = await invite(gql, owner, email="mia@example.com", role="MEMBER", name="Mia")
    first = await accept(gql, token=emailed_token(invited), password="mia's password")
    assert first["__typename"] == "AuthPayload"

    # when
    second = await accept(gql, token=emailed_token(invited), password="another password")

    # then
    assert second == INVALID_TOKEN
    assert await User.filter(email="mia@example.com").count() == 1


async def test_an_unknown_token_is_invalid(gql: GraphQLClient, owner: Account) -> None:
    # when
    result = await accept(gql, token="made-up", password="mia's password", name="Mia")

    # then
    assert result == INVALID_TOKEN
    assert await User.all().count() == 1


async def test_an_expired_invitation_is_invalid(
    gql: GraphQLClient, settings: Settings, owner: Account
) -> None:
    # given
    invited = await invite(gql, owner, email="mia@example.com", role="MEMBER", name="Mia")
    later = clock.now() + timedelta(seconds=settings.invitation_ttl_seconds + 1)

    # when
    clock.set_clock(lambda: later)
    try:
        result = await accept(gql, token=emailed_token(invited), password="mia's password")
    finally:
        clock.set_clock(None)

    # then
    assert result == INVALID_TOKEN
    assert not await User.filter(email="mia@example.com").exists()
    invitation = await Invitation.get(id=invited["id"])
    assert invitation.accepted_at is None


async def test_an_invitation_still_works_just_before_it_expires(
    gql: GraphQLClient, settings: Settings, owner: Account
) -> None:
    # given
    invited = await invite(gql, owner, email="mia@example.com", role="MEMBER", name="Mia")
    almost = clock.now() + timedelta(seconds=settings.invitation_ttl_seconds - 60)

    # when
    clock.set_clock(lambda: almost)
    try:
        result = await accept(gql, token=emailed_token(invited), password="mia's password")
    finally:
        clock.set_clock(None)

    # then
    assert result["__typename"] == "AuthPayload"


async def test_a_reinvite_revokes_the_earlier_invitation(
    gql: GraphQLClient, owner: Account
) -> None:
    # given
    earlier = await invite(gql, owner, email="mia@example.com", role="MEMBER", name="Mia")

    # when
    later = await invite(gql, owner, email="mia@example.com", role="ADMIN", name="Mia")

    # then
    refused = await accept(gql, token=emailed_token(earlier), password="mia's password")
    assert refused == INVALID_TOKEN
    revoked = await Invitation.get(id=earlier["id"])
    assert revoked.revoked_at is not None
    joined = await accept(gql, token=emailed_token(later), password="mia's password")
    assert joined["user"]["role"] == "ADMIN"


@pytest.mark.parametrize(
    ("values", "field", "code", "message"),
    [
        (
            {"password": "short", "name": "Mia"},
            "password",
            "TOO_SHORT",
            "Password must be at least 8 characters",
        ),
        ({"password": "long enough", "name": "   "}, "name", "REQUIRED", "name must not be empty"),
        (
            {"password": " " * 8, "name": "Mia"},
            "password",
            "REQUIRED",
            "Password must not be only spaces",
        ),
        (
            {"password": "password", "name": "Mia"},
            "password",
            "COMMON_PASSWORD",
            "This password is one of the most common ones; choose one that is harder to guess",
        ),
        (
            {"password": "12345678", "name": "Mia"},
            "password",
            "COMMON_PASSWORD",
            "This password is one of the most common ones; choose one that is harder to guess",
        ),
    ],
)
async def test_bad_input_on_accept_leaves_the_invitation_open(
    gql: GraphQLClient,
    owner: Account,
    values: dict[str, str],
    field: str,
    code: str,
    message: str,
) -> None:
    # given: an invitation without a name, so the name must come with the acceptance
    invited = await invite(gql, owner, email="mia@example.com", role="MEMBER")

    # when
    result = await accept(gql, token=emailed_token(invited), **values)

    # then
    assert result == {
        "__typename": "ValidationError",
        "code": code,
        "message": message,
        "field": field,
    }
    assert not await User.filter(email="mia@example.com").exists()
    assert (await Invitation.get(id=invited["id"])).accepted_at is None
    retried = await accept(gql, token=emailed_token(invited), password="mia's password", name="Mia")
    assert retried["__typename"] == "AuthPayload"
