"""An open websocket closes (4403) when its session ends, expires or its user is removed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from settle.core import clock
from settle.core.settings import Settings
from settle.models.agency import Role, User, UserSession
from settle.subscriptions import channels
from settle.subscriptions.bus import get_bus
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.websocket import LEGACY_WS, serve
from tests.schema.test_auth import reissued
from tests.schema.test_sessions import (
    CHANGE_PASSWORD,
    LOGOUT,
    REMOVE_MEMBER,
    logged_in,
)
from tests.subscriptions.test_activity import Subscriber, fence, until_subscribed

# Long enough that only the bus can close a socket within a test's few seconds.
NEVER = 3600.0


@pytest.fixture
async def bus_only_url(db: Backend) -> AsyncIterator[str]:
    """The app served with the periodic session check out of the picture."""
    async with serve(db.settings.model_copy(update={"session_check_seconds": NEVER})) as url:
        yield url


async def until_watching(count: int = 1) -> None:
    """Wait until the server listens for ended sessions on the bus."""

    async def listening() -> bool:
        return await get_bus().subscriber_count(channels.sessions()) == count

    await wait_for(listening)


async def test_a_removed_users_open_subscription_closes_at_once(
    bus_only_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: a member subscribed to the agency's timeline, hearing its events
    member = await create_user(owner, role=Role.MEMBER)
    async with Subscriber(bus_only_url, token=member.token) as subscriber:
        await until_subscribed(owner)
        await until_watching()
        marker = await fence(owner)
        assert await subscriber.next() == marker

        # when: the owner removes them
        started = time.monotonic()
        removed = await gql.execute(
            REMOVE_MEMBER, {"userId": str(member.user.id)}, token=owner.token
        )
        assert removed["removeMember"]["__typename"] == "User"

        # then: their socket is closed with 4403 within seconds, and hears nothing more
        close = await subscriber.closed(timeout=5)
    assert (close.code, close.reason) == (4403, "Session ended")
    assert time.monotonic() - started < 5
    await until_subscribed(owner, count=0)


async def test_logout_closes_the_sockets_of_that_session_only(
    bus_only_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: the owner on two devices, each with a subscription
    phone_token = await logged_in(gql, owner)
    async with (
        Subscriber(bus_only_url, token=owner.token) as laptop,
        Subscriber(bus_only_url, token=phone_token) as phone,
    ):
        await until_subscribed(owner, count=2)
        await until_watching()

        # when: the laptop logs out
        assert (await gql.execute(LOGOUT, token=owner.token))["logout"]["__typename"] == (
            "LogoutPayload"
        )

        # then: the laptop's socket closes; the phone's still hears the agency
        close = await laptop.closed(timeout=5)
        assert (close.code, close.reason) == (4403, "Session ended")
        await until_subscribed(owner, count=1)
        marker = await fence(owner)
        assert await phone.next() == marker


async def test_changing_the_password_closes_every_socket_of_the_user(
    bus_only_url: str, gql: GraphQLClient, owner: Account
) -> None:
    # given: two sessions with a subscription each, one of them on the legacy protocol
    phone_token = await logged_in(gql, owner)
    async with (
        Subscriber(bus_only_url, token=owner.token) as laptop,
        Subscriber(bus_only_url, token=phone_token, subprotocol=LEGACY_WS) as phone,
    ):
        await until_subscribed(owner, count=2)
        await until_watching()

        # when
        changed = await gql.execute(
            CHANGE_PASSWORD,
            {"input": {"currentPassword": "correct horse", "newPassword": "a new secret"}},
            token=owner.token,
        )
        assert changed["changePassword"]["__typename"] == "AuthPayload"

        # then
        for subscriber in (laptop, phone):
            close = await subscriber.closed(timeout=5)
            assert (close.code, close.reason) == (4403, "Session ended")
    await until_subscribed(owner, count=0)


async def test_an_expiring_token_closes_its_socket(db: Backend, owner: Account) -> None:
    # given: tokens that live three seconds, and a socket opened with a fresh one
    short: Settings = db.settings.model_copy(
        update={"access_token_ttl_seconds": 3, "session_check_seconds": NEVER}
    )
    token = reissued(owner, short.signing_key(), 3)
    async with serve(short) as url, Subscriber(url, token=token) as subscriber:
        await until_subscribed(owner)
        marker = await fence(owner)
        assert await subscriber.next() == marker

        # when: the token's lifetime runs out / then: the socket is closed with 4403
        close = await subscriber.closed(timeout=10)
    assert (close.code, close.reason) == (4403, "Session expired")
    await until_subscribed(owner, count=0)


@pytest.mark.parametrize("ending", ["session ended", "user deactivated"])
async def test_the_periodic_check_closes_what_no_announcement_told(
    db: Backend, owner: Account, ending: str
) -> None:
    # given: a server checking sessions every 0.2 seconds, and an open subscription
    quick = db.settings.model_copy(update={"session_check_seconds": 0.2})
    async with serve(quick) as url, Subscriber(url, token=owner.token) as subscriber:
        await until_subscribed(owner)

        # when: the database alone changes, with nothing said on the bus
        if ending == "session ended":
            await UserSession.filter(user_id=owner.user.id).update(ended_at=clock.now())
        else:
            await User.filter(id=owner.user.id).update(is_active=False)

        # then: the socket is closed, so no more of the agency's events reach it
        close = await subscriber.closed(timeout=5)
    assert (close.code, close.reason) == (4403, "Session ended")
    await until_subscribed(owner, count=0)


async def test_a_socket_that_closes_is_no_longer_watched(bus_only_url: str, owner: Account) -> None:
    # given: a watched socket
    async with Subscriber(bus_only_url, token=owner.token):
        await until_subscribed(owner)
        await until_watching()

    # when it closes / then: the server stops listening for ended sessions
    await until_watching(count=0)
