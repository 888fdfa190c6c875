"""send_to_user: what the notification channel gets back for each answer of the Bot API."""

from __future__ import annotations

import pytest

from settle.core.settings import Settings
from settle.models.agency import Role
from settle.models.telegram import TelegramChat, TelegramUnlinkReason
from settle.services import telegram as telegram_service
from settle.services.telegram import (
    TelegramPermanent,
    TelegramSent,
    TelegramSkipped,
    TelegramTemporary,
)
from tests.conftest import Backend
from tests.fixtures.factories import Account, create_user
from tests.fixtures.telegram import TelegramFake, link_chat

CHAT = 5_550_000_301


@pytest.fixture
def tg_settings(db: Backend, telegram_fake: TelegramFake) -> Settings:
    return telegram_fake.settings(db.settings)


async def test_a_linked_user_is_sent_the_text(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the owner's linked chat
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    # when a notification is sent to them
    outcome = await telegram_service.send_to_user(
        tg_settings, owner.user.id, "Payment received: ₹1,18,000.00 from Acme."
    )
    # then it is in the chat, with Telegram's message id
    [message] = await telegram_fake.messages(CHAT)
    assert message["text"] == "Payment received: ₹1,18,000.00 from Acme."
    assert outcome == TelegramSent(message_id=str(message["message_id"]), transport="api")


async def test_a_user_without_a_chat_is_skipped(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a user who never linked Telegram
    # when a notification is sent to them
    outcome = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    # then it is skipped, and Telegram was not asked
    assert outcome == TelegramSkipped(reason="not_linked")
    assert (await telegram_fake.state())["requests"] == []


async def test_too_many_requests_is_temporary_with_telegrams_delay_and_keeps_the_chat(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat, and Telegram asking to slow down for 5 seconds
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await telegram_fake.fault("429", retry_after=5)
    # when a notification is sent, and sent again
    first = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    retried = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    # then the first is to be retried after 5 seconds, and the retry went out once
    assert first == TelegramTemporary(reason="Too Many Requests: retry after 5", retry_after=5.0)
    assert isinstance(retried, TelegramSent)
    assert await telegram_fake.texts(CHAT) == ["Payment received"]
    assert (await TelegramChat.get(user_id=owner.user.id)).unlinked_at is None


async def test_a_server_error_is_temporary(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat, and Telegram failing
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await telegram_fake.fault("error", status=502)
    # when a notification is sent
    outcome = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    # then it is to be retried, with no delay given
    assert outcome == TelegramTemporary(reason="Internal Server Error", retry_after=None)


async def test_a_chat_that_blocked_the_bot_is_unlinked_and_recorded(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the owner and a member (one person, two accounts) linked to one chat, then blocked
    member = await create_user(owner, role=Role.MEMBER)
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await link_chat(tg_settings, telegram_fake, member, CHAT)
    await telegram_fake.block(CHAT)
    # when a notification is sent to the owner, then to the member
    outcome = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    after = await telegram_service.send_to_user(tg_settings, member.user.id, "Payment received")
    # then it failed for good, the chat is unlinked for both with Telegram's reason, and
    # Telegram was not asked again
    assert outcome == TelegramPermanent(
        code="blocked", reason="Forbidden: bot was blocked by the user"
    )
    assert after == TelegramSkipped(reason="not_linked")
    chats = await TelegramChat.all().values_list("unlink_reason", "unlink_detail")
    assert chats == [(TelegramUnlinkReason.BLOCKED, "Forbidden: bot was blocked by the user")] * 2
    assert (await telegram_fake.state())["requests"] == ["sendMessage"]


async def test_another_refusal_is_permanent_and_keeps_the_chat(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat that Telegram no longer knows (the fake was reset)
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await telegram_fake.reset()
    # when a notification is sent
    outcome = await telegram_service.send_to_user(tg_settings, owner.user.id, "Payment received")
    # then it failed for good, and the chat stays linked (only a block unlinks)
    assert outcome == TelegramPermanent(code="rejected", reason="Bad Request: chat not found")
    assert (await TelegramChat.get(user_id=owner.user.id)).unlinked_at is None


async def test_without_a_bot_token_the_message_is_written_to_a_file(
    tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat, and then a server without the bot's token (as `make run` has)
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    no_token = tg_settings.model_copy(update={"telegram_bot_token": None})
    # when a notification is sent
    outcome = await telegram_service.send_to_user(no_token, owner.user.id, "Payment received")
    # then it is a file under var/telegram, and Telegram saw nothing
    assert isinstance(outcome, TelegramSent)
    assert outcome.transport == "file"
    path = no_token.telegram_dir / f"{outcome.message_id}.txt"
    assert path.read_text(encoding="utf-8").endswith("\n\nPayment received\n")
    assert await telegram_fake.texts(CHAT) == []
