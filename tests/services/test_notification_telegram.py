"""Notifications on the Telegram channel: the real sender, client and the fake Bot API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from settle.core import clock
from settle.core.outbox import transaction
from settle.core.settings import Settings, configure_settings
from settle.models.notification import (
    Channel,
    Frequency,
    Notification,
    NotificationStatus,
)
from settle.models.notification import NotificationKind as K
from settle.services import notification as notification_service
from tests.conftest import Backend
from tests.fixtures.factories import Account
from tests.fixtures.telegram import TelegramFake, link_chat

CHAT = 5_550_000_777
APPROVAL = {
    "milestone_title": "Design",
    "project_name": "Website",
    "amount": {"minor": 50_000, "currency": "INR"},
    "approved_by": "Lee Lead",
}


@pytest.fixture
def tg_settings(db: Backend, telegram_fake: TelegramFake) -> Iterator[Settings]:
    """The process's settings, pointing at the fake Bot API, for the worker too."""
    settings = telegram_fake.settings(db.settings)
    configure_settings(settings)
    yield settings
    configure_settings(db.settings)


async def approval_on_telegram(owner: Account, key: str) -> None:
    async with transaction():
        await notification_service.update_preferences(
            owner.actor,
            [
                notification_service.PreferenceChange(
                    K.MILESTONE_APPROVED, (Channel.TELEGRAM,), Frequency.IMMEDIATE
                )
            ],
        )
    async with transaction():
        await notification_service.notify(
            K.MILESTONE_APPROVED,
            agency_id=owner.agency_id,
            recipients=await notification_service.user(owner.user.id),
            subject_type="milestone",
            subject_id=None,
            dedupe_key=key,
            data=APPROVAL,
        )


async def test_a_linked_user_gets_the_notification_in_their_chat_once(
    db: Backend, tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the owner linked a chat and wants approvals on Telegram
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    # when an approval is told, and its job runs again
    await approval_on_telegram(owner, "test:tg:1")
    await db.drain()
    [row] = await Notification.filter(dedupe_key="test:tg:1")
    await notification_service.deliver(row.id)
    # then the chat has the short text once, and the row has Telegram's message id
    [message] = await telegram_fake.messages(CHAT)
    assert message["text"] == "Approved: Design (Website) by Lee Lead.\n"
    row = await Notification.get(id=row.id)
    assert (row.channel, row.status, row.provider_message_id, row.attempts) == (
        Channel.TELEGRAM,
        NotificationStatus.SENT,
        str(message["message_id"]),
        1,
    )


async def test_telegrams_retry_after_is_waited_out_then_the_message_goes_once(
    db: Backend, tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat, and Telegram answering the next request with 429 for 2 seconds
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await telegram_fake.fault("429", retry_after=2)
    started = clock.now()
    # when an approval is told and its jobs have run
    await approval_on_telegram(owner, "test:tg:429")
    await db.drain()
    # then it went out once, on the second attempt, no sooner than Telegram said
    [row] = await Notification.filter(dedupe_key="test:tg:429")
    assert (row.status, row.attempts) == (NotificationStatus.SENT, 2)
    assert row.sent_at is not None
    assert (row.sent_at - started).total_seconds() >= 2
    assert row.not_before is not None
    assert await telegram_fake.texts(CHAT) == ["Approved: Design (Website) by Lee Lead.\n"]


async def test_a_chat_that_blocked_the_bot_fails_the_notification_for_good(
    db: Backend, tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given a linked chat that then blocked the bot
    await link_chat(tg_settings, telegram_fake, owner, CHAT)
    await telegram_fake.block(CHAT)
    # when an approval is told
    await approval_on_telegram(owner, "test:tg:403")
    await db.drain()
    # then the notification failed once, with Telegram's reason, and was not retried
    [row] = await Notification.filter(dedupe_key="test:tg:403")
    assert (row.status, row.attempts, row.last_error) == (
        NotificationStatus.FAILED,
        1,
        "Forbidden: bot was blocked by the user",
    )


async def test_a_user_without_a_chat_is_skipped_with_the_reason(
    db: Backend, tg_settings: Settings, telegram_fake: TelegramFake, owner: Account
) -> None:
    # given the owner wants approvals on Telegram but never linked a chat
    # when an approval is told
    await approval_on_telegram(owner, "test:tg:none")
    await db.drain()
    # then the row is skipped with the reason, and Telegram was not asked
    [row] = await Notification.filter(dedupe_key="test:tg:none")
    assert (row.status, row.reason) == (
        NotificationStatus.SKIPPED,
        "The recipient has no linked Telegram chat",
    )
    assert await telegram_fake.texts(CHAT) == []
