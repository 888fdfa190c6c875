"""Linking Telegram: telegramLink, the /start update on /webhooks/telegram, telegramChat,
unlinkTelegram, on both backends, with the fake Bot API playing Telegram."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from settle.app import create_app
from settle.core import clock
from settle.core.auth import hash_opaque_token
from settle.core.settings import Settings
from settle.models.agency import Role
from settle.models.telegram import (
    TelegramChat,
    TelegramLinkToken,
    TelegramUnlinkReason,
    TelegramUpdate,
)
from settle.services import telegram as telegram_service
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_user
from tests.fixtures.graphql import GraphQLClient
from tests.fixtures.telegram import TelegramFake

TELEGRAM_LINK = """
mutation { telegramLink {
  __typename
  ... on TelegramLink { url expiresAt }
  ... on Error { code message }
  ... on ValidationError { field }
} }
"""

UNLINK_TELEGRAM = """
mutation { unlinkTelegram {
  __typename
  ... on TelegramChat { status username blockedReason }
  ... on Error { code message }
} }
"""

TELEGRAM_CHAT = "{ telegramChat { status username linkedAt unlinkedAt blockedReason } }"

CHAT = 5_550_000_101
OTHER_CHAT = 5_550_000_202


@pytest.fixture
def tg_settings(db: Backend, telegram_fake: TelegramFake) -> Settings:
    return telegram_fake.settings(db.settings)


@pytest.fixture
async def tg_http(tg_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with the fake's bot configured."""
    app = create_app(tg_settings, manage_runtime=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://settle.test") as client:
        yield client


@pytest.fixture
def tg_gql(tg_http: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(tg_http)


def start_token(url: str) -> str:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "t.me", "/settle_test_bot")
    [token] = parse_qs(parts.query)["start"]
    return token


async def link_url(gql: GraphQLClient, account: Account) -> str:
    result = (await gql.execute(TELEGRAM_LINK, token=account.token))["telegramLink"]
    assert result["__typename"] == "TelegramLink", result
    url: str = result["url"]
    return url


async def open_link(
    telegram_fake: TelegramFake,
    http: httpx.AsyncClient,
    url: str,
    chat_id: int,
    *,
    username: str | None = "olive",
) -> httpx.Response:
    """The user opens the link in Telegram and presses Start: the update reaches Settle."""
    update = await telegram_fake.start(chat_id, f"/start {start_token(url)}", username=username)
    return await telegram_fake.deliver(http, update)


async def test_a_user_links_their_chat_with_a_one_time_link(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    tg_settings: Settings,
    telegram_fake: TelegramFake,
    owner: Account,
) -> None:
    # given the owner asks for a link
    before = clock.now()
    result = (await tg_gql.execute(TELEGRAM_LINK, token=owner.token))["telegramLink"]
    token = start_token(result["url"])
    # when they open it in Telegram
    response = await open_link(telegram_fake, tg_http, result["url"], CHAT)
    # then the chat is linked, confirmed in the chat, and shown to the owner
    assert response.status_code == 200
    assert response.json() == {
        "method": "sendMessage",
        "chat_id": CHAT,
        "text": telegram_service.LINKED_TEXT.format(name="Olive Owner", agency="Northwind Studio"),
    }
    assert await telegram_fake.texts(CHAT) == [response.json()["text"]]
    data = await tg_gql.execute(TELEGRAM_CHAT, token=owner.token)
    assert data["telegramChat"]["status"] == "LINKED"
    assert data["telegramChat"]["username"] == "olive"
    assert data["telegramChat"]["unlinkedAt"] is None
    chat = await TelegramChat.get(user_id=owner.user.id)
    assert (chat.chat_id, chat.agency_id, chat.unlinked_at) == (CHAT, owner.agency_id, None)
    # the link: 43 characters Telegram takes as a start parameter, stored only as a hash,
    # expiring after SETTLE_TELEGRAM_LINK_TTL_SECONDS, used once
    assert len(token) == 43
    link = await TelegramLinkToken.get(user_id=owner.user.id)
    assert link.token_hash == hash_opaque_token(token)
    assert link.used_at is not None
    ttl = timedelta(seconds=tg_settings.telegram_link_ttl_seconds)
    assert before + ttl <= link.expires_at <= clock.now() + ttl


async def test_a_used_link_links_no_other_chat_and_says_so_politely(
    tg_gql: GraphQLClient, tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a link the owner already used in their chat
    url = await link_url(tg_gql, owner)
    await open_link(telegram_fake, tg_http, url, CHAT)
    # when someone else opens it, and the owner opens it again in their own chat
    other = await open_link(telegram_fake, tg_http, url, OTHER_CHAT, username="mallory")
    again = await open_link(telegram_fake, tg_http, url, CHAT)
    # then the other chat is told the link is no good, the owner that they are linked,
    # and the owner's chat stays the linked one
    assert other.status_code == 200
    assert await telegram_fake.texts(OTHER_CHAT) == [telegram_service.INVALID_LINK_TEXT]
    assert again.json()["text"] == telegram_service.ALREADY_LINKED_TEXT.format(
        name="Olive Owner", agency="Northwind Studio"
    )
    chats = await TelegramChat.all().values_list("chat_id", "username")
    assert chats == [(CHAT, "olive")]


async def test_an_expired_link_links_nothing(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    tg_settings: Settings,
    telegram_fake: TelegramFake,
    owner: Account,
) -> None:
    # given a link opened a second after it expired
    url = await link_url(tg_gql, owner)
    later = clock.now() + timedelta(seconds=tg_settings.telegram_link_ttl_seconds + 1)
    clock.set_clock(lambda: later)
    try:
        # when the update arrives
        response = await open_link(telegram_fake, tg_http, url, CHAT)
    finally:
        clock.set_clock(None)
    # then the chat is told so and nothing is linked
    assert response.status_code == 200
    assert await telegram_fake.texts(CHAT) == [telegram_service.INVALID_LINK_TEXT]
    assert await TelegramChat.all().count() == 0
    assert (await TelegramLinkToken.get(user_id=owner.user.id)).used_at is None


async def test_a_new_link_replaces_the_previous_one(
    tg_gql: GraphQLClient, tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given two links asked for one after the other
    first = await link_url(tg_gql, owner)
    second = await link_url(tg_gql, owner)
    # when the first is opened, then the second
    await open_link(telegram_fake, tg_http, first, CHAT)
    await open_link(telegram_fake, tg_http, second, CHAT)
    # then only the second linked the chat
    assert await telegram_fake.texts(CHAT) == [
        telegram_service.INVALID_LINK_TEXT,
        telegram_service.LINKED_TEXT.format(name="Olive Owner", agency="Northwind Studio"),
    ]
    assert await TelegramLinkToken.all().count() == 1


@pytest.mark.parametrize(
    ("secret", "status", "code"),
    [(None, 401, "UNAUTHENTICATED"), ("not-the-secret", 403, "INVALID_SECRET")],
)
async def test_an_update_without_the_right_secret_changes_nothing(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    telegram_fake: TelegramFake,
    owner: Account,
    secret: str | None,
    status: int,
    code: str,
) -> None:
    # given a valid link, and an update for it that does not carry Telegram's secret
    url = await link_url(tg_gql, owner)
    update = await telegram_fake.start(CHAT, f"/start {start_token(url)}")
    # when it is posted
    response = await telegram_fake.deliver(tg_http, update, secret=secret)
    # then it is refused, and the link is still unused
    assert response.status_code == status
    assert response.json()["code"] == code
    assert await TelegramChat.all().count() == 0
    assert await TelegramUpdate.all().count() == 0
    assert (await TelegramLinkToken.get(user_id=owner.user.id)).used_at is None
    assert await telegram_fake.texts(CHAT) == []


async def test_a_redelivered_update_is_acted_on_once(
    tg_gql: GraphQLClient, tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the update of an opened link
    url = await link_url(tg_gql, owner)
    update = await telegram_fake.start(CHAT, f"/start {start_token(url)}")
    # when Telegram delivers it three times, twice at once
    first = await telegram_fake.deliver(tg_http, update)
    again = await asyncio.gather(
        telegram_fake.deliver(tg_http, update), telegram_fake.deliver(tg_http, update)
    )
    # then each is acknowledged, and only the first answered in the chat
    assert [r.status_code for r in (first, *again)] == [200, 200, 200]
    assert [r.json() for r in again] == [{}, {}]
    assert len(await telegram_fake.texts(CHAT)) == 1
    assert await TelegramUpdate.filter(update_id=update["update_id"]).count() == 1
    assert await TelegramChat.filter(chat_id=CHAT).count() == 1


async def test_a_concurrent_redelivery_is_acted_on_once(
    tg_gql: GraphQLClient, tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the update of an opened link
    url = await link_url(tg_gql, owner)
    update = await telegram_fake.start(CHAT, f"/start {start_token(url)}")
    # when two deliveries of it arrive at once
    responses = await asyncio.gather(*(telegram_fake.deliver(tg_http, update) for _ in range(2)))
    # then one answered in the chat and the other only acknowledged
    assert sorted("method" in r.json() for r in responses) == [False, True]
    assert await telegram_fake.texts(CHAT) == [
        telegram_service.LINKED_TEXT.format(name="Olive Owner", agency="Northwind Studio")
    ]
    assert await TelegramUpdate.all().count() == 1


@pytest.mark.parametrize(
    "text", ["hello", "/help", "/start", "/start not a token", "/start " + "x" * 65]
)
async def test_other_messages_are_acknowledged_and_change_nothing(
    tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account, text: str
) -> None:
    # given a message that is not a /start with a link's token
    update = await telegram_fake.start(CHAT, text)
    # when it is delivered
    response = await telegram_fake.deliver(tg_http, update)
    # then it is acknowledged; a bare (or malformed) /start gets a hint, the rest nothing
    assert response.status_code == 200
    texts = await telegram_fake.texts(CHAT)
    if text.startswith("/start"):
        assert texts == [telegram_service.NO_TOKEN_TEXT]
    else:
        assert texts == []
        assert response.json() == {}
    assert await TelegramChat.all().count() == 0


@pytest.mark.parametrize(
    "body",
    [
        {"update_id": 1, "edited_message": {"text": "/start abc"}},
        {"update_id": 2, "message": {"chat": {"id": "x", "type": "private"}, "text": "/start a"}},
        {"update_id": 3, "message": {"chat": {"id": 1, "type": "group"}, "text": "/start abc"}},
        {"update_id": True, "message": {"chat": {"id": 1, "type": "private"}, "text": "/start"}},
        [1, 2, 3],
        "text",
    ],
)
async def test_updates_of_unknown_shape_are_acknowledged_and_ignored(
    tg_http: httpx.AsyncClient, telegram_fake: TelegramFake, body: object
) -> None:
    # given an update Settle does not act on, with the right secret
    headers = {"X-Telegram-Bot-Api-Secret-Token": telegram_fake.webhook_secret}
    # when it is posted
    response = await tg_http.post("/webhooks/telegram", json=body, headers=headers)
    # then it is acknowledged (Telegram would redeliver anything else) and ignored
    assert (response.status_code, response.json()) == (200, {})
    assert await TelegramUpdate.all().count() == 0


async def test_a_body_that_is_not_json_is_refused(
    tg_http: httpx.AsyncClient, telegram_fake: TelegramFake
) -> None:
    # given a body that is not JSON, with the right secret
    headers = {"X-Telegram-Bot-Api-Secret-Token": telegram_fake.webhook_secret}
    # when it is posted
    response = await tg_http.post("/webhooks/telegram", content=b"{nope", headers=headers)
    # then it is refused
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_JSON")


async def test_a_body_over_the_limit_is_refused_before_it_is_read(
    tg_http: httpx.AsyncClient, tg_settings: Settings, telegram_fake: TelegramFake
) -> None:
    # given a body one byte over SETTLE_MAX_BODY_BYTES, with the right secret
    headers = {
        "X-Telegram-Bot-Api-Secret-Token": telegram_fake.webhook_secret,
        "Content-Type": "application/json",
    }
    body = b" " * (tg_settings.max_body_bytes + 1)
    # when it is posted
    response = await tg_http.post("/webhooks/telegram", content=body, headers=headers)
    # then it is refused with 413, as every webhook is
    assert response.status_code == 413
    assert response.json()["code"] == "REQUEST_TOO_LARGE"


async def test_without_telegram_configured_the_webhook_is_not_found_and_no_link_is_made(
    gql: GraphQLClient, http: httpx.AsyncClient, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the server's settings without a bot
    update = await telegram_fake.start(CHAT, "/start abc")
    # when an update is posted and a link asked for
    response = await telegram_fake.deliver(http, update)
    result = (await gql.execute(TELEGRAM_LINK, token=owner.token))["telegramLink"]
    # then the webhook is not there and the link is refused, typed
    assert response.status_code == 404
    assert result == {
        "__typename": "ValidationError",
        "code": "TELEGRAM_NOT_CONFIGURED",
        "message": "Telegram is not configured on this server",
        "field": None,
    }
    assert await TelegramLinkToken.all().count() == 0


async def test_unlink_telegram_stops_sending_and_a_second_unlink_is_not_found(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    tg_settings: Settings,
    telegram_fake: TelegramFake,
    owner: Account,
) -> None:
    # given a linked chat
    await open_link(telegram_fake, tg_http, await link_url(tg_gql, owner), CHAT)
    # when the owner unlinks it, twice
    first = (await tg_gql.execute(UNLINK_TELEGRAM, token=owner.token))["unlinkTelegram"]
    second = (await tg_gql.execute(UNLINK_TELEGRAM, token=owner.token))["unlinkTelegram"]
    # then the chat is unlinked (kept, with why), then there is nothing to unlink
    assert first == {
        "__typename": "TelegramChat",
        "status": "UNLINKED",
        "username": "olive",
        "blockedReason": None,
    }
    assert second == {
        "__typename": "NotFoundError",
        "code": "NOT_FOUND",
        "message": "Telegram chat not found",
    }
    chat = await TelegramChat.get(user_id=owner.user.id)
    assert chat.unlinked_at is not None
    assert chat.unlink_reason is TelegramUnlinkReason.USER
    # and nothing more is sent there
    outcome = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    assert outcome == telegram_service.TelegramSkipped(reason="not_linked")
    assert len(await telegram_fake.texts(CHAT)) == 1


async def test_a_chat_unlinked_or_blocked_is_linked_again_with_a_new_link(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    tg_settings: Settings,
    telegram_fake: TelegramFake,
    owner: Account,
) -> None:
    # given a chat that blocked the bot and was unlinked for it
    await open_link(telegram_fake, tg_http, await link_url(tg_gql, owner), CHAT)
    await telegram_fake.block(CHAT)
    await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    blocked = await tg_gql.execute(TELEGRAM_CHAT, token=owner.token)
    # when the owner links a new chat with a new link
    await open_link(telegram_fake, tg_http, await link_url(tg_gql, owner), OTHER_CHAT)
    # then the block was shown, and now the new chat is linked
    assert blocked["telegramChat"]["status"] == "BLOCKED"
    assert blocked["telegramChat"]["blockedReason"] == "Forbidden: bot was blocked by the user"
    data = await tg_gql.execute(TELEGRAM_CHAT, token=owner.token)
    assert (data["telegramChat"]["status"], data["telegramChat"]["blockedReason"]) == (
        "LINKED",
        None,
    )
    assert await TelegramChat.all().values_list("chat_id", flat=True) == [OTHER_CHAT]


async def test_each_user_sees_and_unlinks_only_their_own_chat(
    tg_gql: GraphQLClient,
    tg_http: httpx.AsyncClient,
    telegram_fake: TelegramFake,
    owner: Account,
    rival: Account,
) -> None:
    # given the owner's linked chat, a member of the same agency and another agency's owner
    member = await create_user(owner, role=Role.MEMBER, name="Mia Member")
    await open_link(telegram_fake, tg_http, await link_url(tg_gql, owner), CHAT)
    # when the others ask for their chat, unlink, and the rival links with their own link
    member_chat = await tg_gql.execute(TELEGRAM_CHAT, token=member.token)
    rival_chat = await tg_gql.execute(TELEGRAM_CHAT, token=rival.token)
    member_unlink = (await tg_gql.execute(UNLINK_TELEGRAM, token=member.token))["unlinkTelegram"]
    await open_link(
        telegram_fake, tg_http, await link_url(tg_gql, rival), OTHER_CHAT, username="rita"
    )
    # then neither saw nor touched the owner's chat, and the rival's link linked the rival
    assert member_chat == {"telegramChat": None}
    assert rival_chat == {"telegramChat": None}
    assert member_unlink["__typename"] == "NotFoundError"
    owner_chat = await tg_gql.execute(TELEGRAM_CHAT, token=owner.token)
    assert (owner_chat["telegramChat"]["status"], owner_chat["telegramChat"]["username"]) == (
        "LINKED",
        "olive",
    )
    rows = (
        await TelegramChat.all().order_by("chat_id").values_list("user_id", "agency_id", "chat_id")
    )
    assert rows == [
        (owner.user.id, owner.agency_id, CHAT),
        (rival.user.id, rival.agency_id, OTHER_CHAT),
    ]


async def test_telegram_fields_need_a_signed_in_user(tg_gql: GraphQLClient) -> None:
    # given no token
    # when the link and the chat are asked for
    link = await tg_gql.execute(TELEGRAM_LINK, expect_errors=True)
    chat = await tg_gql.execute(TELEGRAM_CHAT, expect_errors=True)
    # then both are refused as unauthenticated (the chat, a nullable field, as null)
    assert link["data"] is None
    assert chat["data"] == {"telegramChat": None}
    for body in (link, chat):
        assert [e["extensions"]["code"] for e in body["errors"]] == ["UNAUTHENTICATED"]
