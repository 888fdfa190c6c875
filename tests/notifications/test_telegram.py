"""The Bot API client against the fake Bot API: what is sent, and how each failure maps."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path

import pytest

from settle.cli import main
from settle.core.settings import Environment, Settings
from settle.notifications.telegram import (
    MAX_MESSAGE_LENGTH,
    SentMessage,
    TelegramBlockedError,
    TelegramClient,
    TelegramNotConfiguredError,
    TelegramPermanentError,
    TelegramTemporaryError,
    escape_markdown_v2,
    fit_message,
    register_webhook,
)
from tests.fixtures.telegram import TelegramFake

CHAT = 5_550_000_001


def base_settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(env=Environment.TEST, var_dir=tmp_path, **values)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path, telegram_fake: TelegramFake) -> TelegramClient:
    return TelegramClient(telegram_fake.settings(base_settings(tmp_path)), timeout=5.0)


async def test_a_message_is_sent_as_plain_text_without_a_link_preview(
    client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given a user who started the bot
    await telegram_fake.start(CHAT)
    # when Settle sends a text with characters MarkdownV2 would reserve
    sent = await client.send_message(CHAT, "Paid: ₹1,00,000.00 (INV-2026-0001). Thanks!")
    # then Telegram received it as it is, as plain text, and gave it an id
    messages = await telegram_fake.messages(CHAT)
    assert [(m["text"], m["parse_mode"]) for m in messages] == [
        ("Paid: ₹1,00,000.00 (INV-2026-0001). Thanks!", None)
    ]
    assert messages[0]["link_preview_options"] == {"is_disabled": True}
    assert sent == SentMessage(transport="api", message_id=str(messages[0]["message_id"]))


async def test_markdown_v2_text_escaped_by_settle_is_taken_and_unescaped_text_refused(
    client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given a user who started the bot, and a text full of reserved characters
    await telegram_fake.start(CHAT)
    text = "Invoice INV-2026-0001 (₹1,18,000.00) is due on 3.12. [Pay] *now*_! #1 a=b|c {x} ~`>"
    # when it is sent escaped, then raw
    await client.send_message(CHAT, escape_markdown_v2(text), parse_mode="MarkdownV2")
    with pytest.raises(TelegramPermanentError) as refused:
        await client.send_message(CHAT, text, parse_mode="MarkdownV2")
    # then the escaped one went out and the raw one was refused as Telegram refuses it
    messages = await telegram_fake.messages(CHAT)
    assert [m["parse_mode"] for m in messages] == ["MarkdownV2"]
    assert refused.value.error_code == 400
    assert refused.value.description.startswith("Bad Request: can't parse entities")


async def test_too_many_requests_is_temporary_and_carries_retry_after(
    client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given Telegram answering the next request with 429, retry after 7 seconds
    await telegram_fake.start(CHAT)
    await telegram_fake.fault("429", retry_after=7)
    # when a message is sent
    with pytest.raises(TelegramTemporaryError) as raised:
        await client.send_message(CHAT, "Payment received")
    # then the caller learns to wait 7 seconds, and nothing was delivered
    assert (raised.value.error_code, raised.value.retry_after) == (429, 7.0)
    assert await telegram_fake.messages(CHAT) == []


@pytest.mark.parametrize("status", [500, 502])
async def test_a_server_error_is_temporary(
    client: TelegramClient, telegram_fake: TelegramFake, status: int
) -> None:
    # given Telegram failing the next request
    await telegram_fake.start(CHAT)
    await telegram_fake.fault("error", status=status)
    # when a message is sent
    with pytest.raises(TelegramTemporaryError) as raised:
        await client.send_message(CHAT, "Payment received")
    # then it is worth retrying, with no delay given
    assert (raised.value.error_code, raised.value.retry_after) == (status, None)


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(502, None, (502, None)), (429, 30, (429, 30.0)), (404, None, None)],
)
async def test_a_proxys_page_instead_of_the_api_maps_by_its_status(
    client: TelegramClient,
    telegram_fake: TelegramFake,
    status: int,
    retry_after: int | None,
    expected: tuple[int, float | None] | None,
) -> None:
    # given a proxy in front of the Bot API answering with a page, not the API's JSON
    await telegram_fake.start(CHAT)
    await telegram_fake.fault("proxy", status=status, retry_after=retry_after)
    # when a message is sent
    with pytest.raises((TelegramTemporaryError, TelegramPermanentError)) as raised:
        await client.send_message(CHAT, "Payment received")
    # then 5xx is temporary, 429 temporary with its Retry-After, anything else permanent
    if expected is None:
        assert type(raised.value) is TelegramPermanentError
        assert raised.value.error_code == status
    else:
        assert isinstance(raised.value, TelegramTemporaryError)
        assert (raised.value.error_code, raised.value.retry_after) == expected
    assert raised.value.description == f"HTTP {status} without a Bot API answer"


async def test_a_chat_that_blocked_the_bot_is_reported_as_blocked(
    client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given a user who started the bot and then blocked it
    await telegram_fake.start(CHAT)
    await telegram_fake.block(CHAT)
    # when a message is sent
    with pytest.raises(TelegramBlockedError) as raised:
        await client.send_message(CHAT, "Payment received")
    # then Telegram's 403 comes back as blocked
    assert raised.value.error_code == 403
    assert raised.value.description == "Forbidden: bot was blocked by the user"


async def test_an_unknown_chat_and_a_wrong_token_are_permanent(
    tmp_path: Path, client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given a chat that never started the bot, and a client with another token
    wrong = TelegramClient(
        telegram_fake.settings(base_settings(tmp_path), telegram_bot_token="1:not-the-token")
    )
    # when each sends
    with pytest.raises(TelegramPermanentError) as unknown:
        await client.send_message(CHAT, "Hello")
    with pytest.raises(TelegramPermanentError) as unauthorized:
        await wrong.send_message(CHAT, "Hello")
    # then neither is worth retrying
    assert (unknown.value.error_code, unknown.value.description) == (
        400,
        "Bad Request: chat not found",
    )
    assert (unauthorized.value.error_code, unauthorized.value.description) == (401, "Unauthorized")


async def test_no_answer_is_temporary_and_does_not_reveal_the_token(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    # given an API base where nothing listens
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = TelegramClient(
        telegram_fake.settings(base_settings(tmp_path), telegram_api_base=dead), timeout=2.0
    )
    # when a message is sent
    with pytest.raises(TelegramTemporaryError) as raised:
        await client.send_message(CHAT, "Hello")
    # then it is temporary, and the token is nowhere in the error
    assert raised.value.retry_after is None
    assert telegram_fake.token not in str(raised.value)
    assert telegram_fake.token.split(":")[1] not in str(raised.value)


async def test_the_token_is_redacted_from_the_http_request_log(
    client: TelegramClient, telegram_fake: TelegramFake, caplog: pytest.LogCaptureFixture
) -> None:
    # given httpx logging every request at INFO
    await telegram_fake.start(CHAT)
    # when a message is sent
    with caplog.at_level(logging.INFO, logger="httpx"):
        await client.send_message(CHAT, "Hello")
    # then the request was logged, without the token
    lines = [record.getMessage() for record in caplog.records if record.name == "httpx"]
    assert len(lines) == 1
    assert "/bot[redacted]/sendMessage" in lines[0]
    assert telegram_fake.token.split(":")[1] not in lines[0]


async def test_without_a_token_messages_are_written_to_files_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given no bot token (the embedded run)
    client = TelegramClient(base_settings(tmp_path))
    # when a message is sent
    with caplog.at_level(logging.INFO, logger="settle.notifications.telegram"):
        sent = await client.send_message(CHAT, "Payment received: $100,000.00")
    # then it is a file under var/telegram, named by its id, and a log line
    assert sent.transport == "file"
    assert sent.path is not None
    assert sent.path.parent == tmp_path / "telegram"
    assert sent.message_id == sent.path.stem
    header, text = sent.path.read_text(encoding="utf-8").split("\n\n", 1)
    assert json.loads(header)["chat_id"] == CHAT
    assert text == "Payment received: $100,000.00\n"
    [record] = [r for r in caplog.records if r.getMessage() == "telegram.message_written"]
    assert (record.chat_id, record.text) == (CHAT, "Payment received: $100,000.00")  # type: ignore[attr-defined]


async def test_a_long_message_is_cut_to_what_telegram_takes(
    client: TelegramClient, telegram_fake: TelegramFake
) -> None:
    # given a text of 5000 emoji, two UTF-16 code units each
    await telegram_fake.start(CHAT)
    text = "💸" * 5000
    # when it is sent
    await client.send_message(CHAT, text)
    # then Telegram took it, cut to 2047 emoji and an ellipsis (4095 code units)
    [message] = await telegram_fake.messages(CHAT)
    assert message["text"] == "💸" * 2047 + "…"
    assert fit_message("short") == "short"
    assert len(fit_message("a" * 5000)) == MAX_MESSAGE_LENGTH


async def test_register_webhook_points_the_bot_at_settle_with_the_secret(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    # given settings with a public HTTPS address
    settings = telegram_fake.settings(
        base_settings(tmp_path), public_base_url="https://billing.example.com/"
    )
    # when the webhook is registered
    registered = await register_webhook(settings, drop_pending_updates=True)
    # then Telegram posts the bot's messages to /webhooks/telegram with the secret
    assert registered.url == "https://billing.example.com/webhooks/telegram"
    assert registered.bot_username == telegram_fake.username
    webhook = (await telegram_fake.state())["webhook"]
    assert webhook == {
        "url": "https://billing.example.com/webhooks/telegram",
        "secret_token": telegram_fake.webhook_secret,
        "allowed_updates": ["message"],
        "drop_pending_updates": True,
    }


async def test_register_webhook_refuses_http_and_another_bot(
    tmp_path: Path, telegram_fake: TelegramFake
) -> None:
    # given a plain-HTTP address, and then a username that is not the token's bot
    plain = telegram_fake.settings(base_settings(tmp_path), public_base_url="http://settle.test")
    other = telegram_fake.settings(
        base_settings(tmp_path),
        public_base_url="https://billing.example.com",
        telegram_bot_username="someone_else_bot",
    )
    # when each is registered
    with pytest.raises(TelegramNotConfiguredError, match="HTTPS only"):
        await register_webhook(plain)
    with pytest.raises(TelegramNotConfiguredError, match="SETTLE_TELEGRAM_BOT_USERNAME"):
        await register_webhook(other)
    # then Telegram was never told to deliver anywhere
    state = await telegram_fake.state()
    assert state["webhook"] == {"url": ""}
    assert "setWebhook" not in state["requests"]


async def test_the_cli_registers_the_webhook(
    tmp_path: Path,
    telegram_fake: TelegramFake,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # given the environment a deployment sets
    for name, value in {
        "SETTLE_VAR_DIR": str(tmp_path),
        "SETTLE_PUBLIC_BASE_URL": "https://billing.example.com",
        "SETTLE_TELEGRAM_BOT_TOKEN": telegram_fake.token,
        "SETTLE_TELEGRAM_BOT_USERNAME": f"@{telegram_fake.username}",
        "SETTLE_TELEGRAM_WEBHOOK_SECRET": telegram_fake.webhook_secret,
        "SETTLE_TELEGRAM_API_BASE": telegram_fake.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    # read from that environment, and leaving the process's settings and logging alone
    monkeypatch.setattr("settle.cli.get_settings", Settings)
    monkeypatch.setattr("settle.cli.configure_settings", lambda settings: None)
    monkeypatch.setattr("settle.cli.configure_logging", lambda level: None)
    # when `settle telegram-webhook` runs (in a thread: it runs its own event loop)
    code = await asyncio.to_thread(main, ["telegram-webhook"])
    # then it says where Telegram delivers
    assert code == 0
    assert capsys.readouterr().out == (
        f"Telegram delivers @{telegram_fake.username}'s messages to "
        "https://billing.example.com/webhooks/telegram\n"
    )
    assert (await telegram_fake.state())["webhook"]["secret_token"] == telegram_fake.webhook_secret
