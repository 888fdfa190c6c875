"""Rate limits through the app: login, signUp and acceptInvitation per IP and per email,
authenticated requests per user, websocket connections per IP; on both backends (memory
counts with SQLite, Redis counts with PostgreSQL)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import uvicorn
import websockets
from starlette.applications import Starlette

from settle.app import create_app
from settle.core import rate_limit
from settle.core.settings import Settings, get_settings
from settle.models.agency import Invitation, User
from settle.services import auth as auth_service
from tests.conftest import Backend, wait_for
from tests.fixtures.factories import Account

LOGIN = """
mutation Login($input: LoginInput!) {
  login(input: $input) {
    __typename
    ... on AuthPayload { user { email } }
    ... on Error { code message }
    ... on RateLimitedError { retryAfter }
  }
}
"""

SIGN_UP = """
mutation SignUp($input: SignUpInput!) {
  signUp(input: $input) {
    __typename
    ... on AuthPayload { user { email } }
    ... on Error { code message }
    ... on RateLimitedError { retryAfter }
  }
}
"""

INVITE = """
mutation Invite($input: InviteMemberInput!) {
  inviteMember(input: $input) { ... on Invitation { id } }
}
"""

ACCEPT = """
mutation Accept($input: AcceptInvitationInput!) {
  acceptInvitation(input: $input) {
    __typename
    ... on AuthPayload { user { email } }
    ... on Error { code message }
    ... on RateLimitedError { retryAfter }
  }
}
"""

ME = "query { me { email } }"

PASSWORD = "correct horse"


def app_for(db: Backend, **settings: Any) -> Starlette:
    return create_app(db.settings.model_copy(update=settings), manage_runtime=False)


@pytest.fixture
def app(db: Backend) -> Starlette:
    return app_for(db)


async def post(
    app: Starlette,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    ip: str = "203.0.113.1",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST an operation to the app as a client at ``ip``."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:
        return await http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )


async def login(app: Starlette, email: str, password: str, *, ip: str) -> httpx.Response:
    return await post(app, LOGIN, {"input": {"email": email, "password": password}}, ip=ip)


def rate_limited(response: httpx.Response, field: str) -> None:
    """Assert ``response`` is a 429 whose ``field`` is a RateLimitedError agreeing with it."""
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 3600
    assert (response.status_code, response.json()) == (
        429,
        {
            "data": {
                field: {
                    "__typename": "RateLimitedError",
                    "code": "RATE_LIMITED",
                    "message": f"Too many attempts; try again in {retry_after} seconds",
                    "retryAfter": retry_after,
                }
            }
        },
    )


def typename(response: httpx.Response, field: str) -> str:
    assert response.status_code == 200, response.text
    name: str = response.json()["data"][field]["__typename"]
    return name


# --- login ------------------------------------------------------------------------------------


async def test_after_ten_failures_for_one_email_even_the_right_password_is_refused(
    app: Starlette, owner: Account, rival: Account
) -> None:
    # given ten wrong passwords for the owner's email, each from another address
    for attempt in range(10):
        wrong = await login(
            app, owner.user.email, f"guess number {attempt}", ip=f"198.51.100.{attempt}"
        )
        assert typename(wrong, "login") == "AuthenticationError"

    # when the right password comes, from an address not seen before, and in other case
    right = await login(app, f"  {owner.user.email.upper()} ", PASSWORD, ip="192.0.2.200")

    # then it is refused with 429 and Retry-After, and the owner is not logged in
    rate_limited(right, "login")
    assert (await User.get(id=owner.user.id)).last_login_at is None
    # and another email from another address is unaffected
    other = await login(app, rival.user.email, PASSWORD, ip="192.0.2.201")
    assert typename(other, "login") == "AuthPayload"


async def test_thirty_concurrent_guesses_for_one_email_let_exactly_ten_through(
    app: Starlette, owner: Account
) -> None:
    # when thirty wrong passwords for one email arrive at once, from thirty addresses
    answers = await asyncio.gather(
        *(
            login(app, owner.user.email, f"guess number {n}", ip=f"198.51.100.{100 + n}")
            for n in range(30)
        )
    )

    # then the count is kept atomically: ten are checked, twenty refused unchecked
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 10 + [429] * 20


async def test_after_twenty_attempts_from_one_address_it_is_refused_there_only(
    app: Starlette, owner: Account
) -> None:
    # given twenty failed logins from one address, each for another email
    for attempt in range(20):
        wrong = await login(app, f"nobody-{attempt}@example.com", PASSWORD, ip="198.51.100.7")
        assert typename(wrong, "login") == "AuthenticationError"

    # when the owner logs in from that address, with the right password
    refused = await login(app, owner.user.email, PASSWORD, ip="198.51.100.7")

    # then it is refused; from another address it works
    rate_limited(refused, "login")
    allowed = await login(app, owner.user.email, PASSWORD, ip="198.51.100.8")
    assert typename(allowed, "login") == "AuthPayload"


async def test_x_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(
    db: Backend, owner: Account
) -> None:
    # given an app that trusts no proxy, and one that trusts 10.0.0.0/8
    untrusting = app_for(db)
    trusting = app_for(db, trusted_proxies=("10.0.0.0/8",))

    async def attempts(app: Starlette, peer: str, forwarded_prefix: str) -> list[int]:
        statuses = []
        for attempt in range(21):
            response = await post(
                app,
                LOGIN,
                {"input": {"email": f"x{attempt}@example.com", "password": PASSWORD}},
                ip=peer,
                headers={"X-Forwarded-For": f"{forwarded_prefix}.{attempt}"},
            )
            statuses.append(response.status_code)
        return statuses

    # when an untrusted peer claims a new address on every attempt
    spoofed = await attempts(untrusting, "198.51.100.9", "192.0.2")
    # and a trusted proxy forwards 21 distinct clients
    forwarded = await attempts(trusting, "10.1.2.3", "198.18.0")

    # then the spoofer is counted as itself and refused at the 21st; the clients are not
    assert spoofed == [200] * 20 + [429]
    assert forwarded == [200] * 21


# --- signUp -----------------------------------------------------------------------------------


def sign_up_input(email: str) -> dict[str, Any]:
    return {"input": {"agencyName": "Shop", "name": "Sam", "email": email, "password": PASSWORD}}


async def test_sign_up_is_limited_per_address_and_writes_nothing_when_refused(
    app: Starlette,
) -> None:
    # given five sign-ups from one address
    for n in range(5):
        created = await post(app, SIGN_UP, sign_up_input(f"sam{n}@example.com"), ip="198.51.100.20")
        assert typename(created, "signUp") == "AuthPayload"

    # when a sixth comes from it
    refused = await post(app, SIGN_UP, sign_up_input("sam5@example.com"), ip="198.51.100.20")

    # then it is refused and nothing is written; from another address it works
    rate_limited(refused, "signUp")
    assert not await User.filter(email="sam5@example.com").exists()
    allowed = await post(app, SIGN_UP, sign_up_input("sam5@example.com"), ip="198.51.100.21")
    assert typename(allowed, "signUp") == "AuthPayload"


async def test_sign_up_is_limited_per_email(app: Starlette) -> None:
    # given five sign-ups for one email from five addresses (the first made the account)
    for n in range(5):
        await post(app, SIGN_UP, sign_up_input("Dup@Example.com"), ip=f"198.51.100.{30 + n}")

    # when a sixth comes from yet another address
    refused = await post(app, SIGN_UP, sign_up_input("dup@example.com"), ip="198.51.100.40")

    # then it is refused
    rate_limited(refused, "signUp")
    assert await User.filter(email="dup@example.com").count() == 1


# --- acceptInvitation -------------------------------------------------------------------------


async def invitation(app: Starlette, owner: Account, email: str) -> str:
    invited = await post(
        app,
        INVITE,
        {"input": {"email": email, "role": "MEMBER", "name": "Mia"}},
        headers={"Authorization": f"Bearer {owner.token}"},
    )
    # The token the invitation email carries (the API does not show it to the inviter).
    invitation_id = uuid.UUID(invited.json()["data"]["inviteMember"]["id"])
    return auth_service.invitation_token(get_settings(), invitation_id)


async def test_accept_invitation_is_limited_per_email_of_the_invitation(
    app: Starlette, owner: Account
) -> None:
    # given ten refused attempts on one invitation, from ten addresses
    token = await invitation(app, owner, "mia@example.com")
    for n in range(10):
        bad = await post(
            app, ACCEPT, {"input": {"token": token, "password": "password"}}, ip=f"198.51.100.{n}"
        )
        assert typename(bad, "acceptInvitation") == "ValidationError"

    # when a good attempt comes from another address
    good = await post(
        app, ACCEPT, {"input": {"token": token, "password": PASSWORD}}, ip="192.0.2.9"
    )

    # then it is refused, and the invitation is still open
    rate_limited(good, "acceptInvitation")
    assert not await User.filter(email="mia@example.com").exists()
    assert (await Invitation.get(email="mia@example.com")).accepted_at is None


async def test_accept_invitation_is_limited_per_address(app: Starlette, owner: Account) -> None:
    # given ten attempts with made-up tokens from one address
    token = await invitation(app, owner, "milo@example.com")
    for n in range(10):
        guess = await post(
            app,
            ACCEPT,
            {"input": {"token": f"guess-{n}", "password": PASSWORD}},
            ip="198.51.100.50",
        )
        assert typename(guess, "acceptInvitation") == "ValidationError"

    # when the real token comes from that address
    refused = await post(
        app, ACCEPT, {"input": {"token": token, "password": PASSWORD}}, ip="198.51.100.50"
    )

    # then it is refused there, and works from another address
    rate_limited(refused, "acceptInvitation")
    joined = await post(
        app, ACCEPT, {"input": {"token": token, "password": PASSWORD}}, ip="198.51.100.51"
    )
    assert typename(joined, "acceptInvitation") == "AuthPayload"


async def test_the_invitation_page_shares_the_limits(app: Starlette, owner: Account) -> None:
    # given ten posts of the invitation form with made-up tokens from one address
    token = await invitation(app, owner, "page@example.com")
    transport = httpx.ASGITransport(app=app, client=("198.51.100.60", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as http:

        async def submit(token: str) -> httpx.Response:
            form = {
                "token": token,
                "name": "Pia",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            }
            return await http.post("/invitations/accept", data=form)

        for n in range(10):
            assert (await submit(f"guess-{n}")).status_code == 400

        # when the real token is posted from there
        refused = await submit(token)

    # then the page refuses it with 429 and says when to come back
    retry_after = int(refused.headers["retry-after"])
    assert refused.status_code == 429
    assert f"Too many attempts; try again in {retry_after} seconds" in refused.text
    assert not await User.filter(email="page@example.com").exists()


# --- authenticated requests and websockets ----------------------------------------------------


async def test_authenticated_requests_are_limited_per_user(
    db: Backend, owner: Account, rival: Account
) -> None:
    # given a limit of three requests a minute per user
    app = app_for(db, rate_limit_authenticated="3/minute")
    as_owner = {"Authorization": f"Bearer {owner.token}"}
    for _ in range(3):
        assert (await post(app, ME, headers=as_owner)).status_code == 200

    # when the owner sends a fourth
    refused = await post(app, ME, headers=as_owner)

    # then it is refused as a whole with a top-level RATE_LIMITED error
    retry_after = int(refused.headers["retry-after"])
    assert (refused.status_code, refused.json()) == (
        429,
        {
            "data": None,
            "errors": [
                {
                    "message": f"Too many attempts; try again in {retry_after} seconds",
                    "extensions": {"code": "RATE_LIMITED", "retryAfter": retry_after},
                }
            ],
        },
    )
    # and another user, from the same address, is unaffected, as are anonymous requests
    rival_me = await post(app, ME, headers={"Authorization": f"Bearer {rival.token}"})
    assert rival_me.json() == {"data": {"me": {"email": rival.user.email}}}
    assert (await post(app, ME)).json() == {"data": {"me": None}}


@pytest.fixture
async def limited_ws_url(db: Backend) -> AsyncIterator[str]:
    """A real uvicorn server whose app allows two websocket connections a minute per IP."""
    app = app_for(db, rate_limit_websocket_per_ip="2/minute")
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        if serving.done():
            serving.result()
        return server.started

    await wait_for(started)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/graphql"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)


async def test_websocket_connections_are_limited_per_address(limited_ws_url: str) -> None:
    # given two connections opened from this address
    for _ in range(2):
        async with websockets.connect(
            limited_ws_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
        ) as socket:
            assert socket.subprotocol == "graphql-transport-ws"

    # when a third handshake comes
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(
            limited_ws_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")]
        )

    # then it is answered with 429 and Retry-After
    response = refused.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60


# --- switches and storage ---------------------------------------------------------------------


async def test_switched_off_nothing_is_counted(db: Backend, owner: Account) -> None:
    # given rate limits switched off
    app = app_for(db, rate_limits_enabled=False)

    # when thirty wrong passwords come from one address, then the right one
    for attempt in range(30):
        await login(app, owner.user.email, f"guess {attempt}", ip="198.51.100.70")
    right = await login(app, owner.user.email, PASSWORD, ip="198.51.100.70")

    # then it works
    assert typename(right, "login") == "AuthPayload"


async def test_counts_are_kept_in_redis_when_it_is_configured(
    db: Backend, app: Starlette, owner: Account
) -> None:
    # when one login is attempted
    await login(app, owner.user.email, "a wrong guess", ip="198.51.100.80")

    # then its counts are where the backend keeps them: Redis with PostgreSQL, memory else
    if db.settings.redis_url is None:
        assert type(rate_limit.storage_for(db.settings)).__name__ == "MemoryStorage"
        return
    client = aioredis.Redis.from_url(db.settings.redis_url)
    try:
        keys = sorted(key.decode() for key in await client.keys(f"{rate_limit.KEY_PREFIX}*"))
    finally:
        await client.aclose()
    # (the address only as a keyed hash: no email sits in Redis)
    hashed = rate_limit.RateLimiter(db.settings).email_key(owner.user.email.upper())
    assert owner.user.email not in "".join(keys)
    assert keys == [
        f"{rate_limit.KEY_PREFIX}:LIMITER/login.email/{hashed}/10/1/minute",
        f"{rate_limit.KEY_PREFIX}:LIMITER/login.email/{hashed}/100/1/hour",
        f"{rate_limit.KEY_PREFIX}:LIMITER/login.ip/198.51.100.80/20/1/minute",
        f"{rate_limit.KEY_PREFIX}:LIMITER/login.ip/198.51.100.80/200/1/hour",
    ]


async def test_with_redis_away_an_attempt_goes_ahead_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given counts kept in a Redis nobody listens at, and a limit of one a minute
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    limiter = rate_limit.RateLimiter(
        Settings(redis_url=f"redis://127.0.0.1:{port}/0", rate_limit_login_per_ip="1/minute")
    )

    # when three attempts come
    with caplog.at_level(logging.ERROR, logger="settle.core.rate_limit"):
        for _ in range(3):
            await limiter.hit("login.ip", "192.0.2.1")

    # then none was refused (Redis being away must not lock everyone out), and each is logged
    assert [record.getMessage() for record in caplog.records] == ["rate_limit.storage_error"] * 3


# --- the client's address ---------------------------------------------------------------------


def scope(peer: str, forwarded: str | None = None) -> dict[str, Any]:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded is not None else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        ((), "198.51.100.1", "192.0.2.1", "198.51.100.1"),
        (("10.0.0.0/8",), "198.51.100.1", "192.0.2.1", "198.51.100.1"),
        (("10.0.0.0/8",), "10.0.0.5", None, "10.0.0.5"),
        (("10.0.0.0/8",), "10.0.0.5", "192.0.2.1", "192.0.2.1"),
        # a client's own X-Forwarded-For comes first; the trusted proxy appended the truth
        (("10.0.0.0/8",), "10.0.0.5", "1.1.1.1, 192.0.2.1", "192.0.2.1"),
        # two trusted proxies in a row
        (("10.0.0.0/8",), "10.0.0.5", "192.0.2.1, 10.0.0.9", "192.0.2.1"),
        (("10.0.0.0/8",), "10.0.0.5", "10.0.0.7, 10.0.0.9", "10.0.0.7"),
        (("*",), "198.51.100.1", "192.0.2.1", "192.0.2.1"),
    ],
)
def test_the_client_address(
    trusted: tuple[str, ...], peer: str, forwarded: str | None, expected: str
) -> None:
    networks = rate_limit.parse_networks(trusted)
    assert rate_limit.client_ip(scope(peer, forwarded), networks) == expected


def test_ipv6_clients_are_counted_per_64() -> None:
    assert rate_limit.rate_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert rate_limit.rate_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert rate_limit.rate_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert rate_limit.rate_key("192.0.2.1") == "192.0.2.1"
    assert ipaddress.ip_address(rate_limit.rate_key("192.0.2.1"))


def test_a_limit_that_does_not_parse_is_refused_at_start_up() -> None:
    with pytest.raises(ValueError, match="couldn't parse rate limit string"):
        Settings(rate_limit_login_per_ip="many per minute")
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 network"):
        Settings(trusted_proxies=("the proxy",))
