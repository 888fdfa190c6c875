"""Channels: how one rendered notification reaches one recipient.

Each channel is a ``ChannelSender`` registered under its ``Channel`` value.
Email is always there (SMTP, or .eml files without an SMTP host). Telegram
registers its sender when its module is configured; a notification for a
channel with no sender, or for a recipient the sender cannot reach (no linked
chat), is recorded ``skipped`` with the reason instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from settle.core.settings import get_settings
from settle.models.notification import Channel, Notification
from settle.notifications.email import Attachment, EmailDeliveryError, build_message, deliver
from settle.notifications.templates import RenderedNotification

# The whole SMTP conversation of one attempt, beyond aiosmtplib's per-command timeout.
SEND_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A rendered notification with what the channel needs beside the text."""

    notification: Notification
    rendered: RenderedNotification
    attachments: Sequence[Attachment] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class SendResult:
    provider_message_id: str | None


class ChannelError(Exception):
    """The channel did not take the message; ``temporary`` says whether a retry may help.

    ``retry_after`` is when the channel said to come back (Telegram's 429), in seconds.
    """

    def __init__(self, message: str, *, temporary: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.retry_after = retry_after


class RecipientUnreachableError(Exception):
    """This recipient cannot be reached on this channel (no address, no linked chat)."""


class ChannelSender(Protocol):
    channel: Channel

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; ChannelError or RecipientUnreachableError when it cannot."""
        ...


class EmailSender:
    """Notifications by email, through the SMTP sender (or .eml files)."""

    channel = Channel.EMAIL

    async def send(self, message: OutgoingMessage) -> SendResult:
        address = message.notification.address
        if not address:
            raise RecipientUnreachableError("The recipient has no email address")
        settings = get_settings()
        rendered = message.rendered
        email = build_message(
            settings=settings,
            to=[address],
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            attachments=message.attachments,
        )
        for name, value in message.headers.items():
            email[name] = value
        if message.reply_to:
            email["Reply-To"] = message.reply_to
        try:
            result = await asyncio.wait_for(deliver(email, settings=settings), SEND_TIMEOUT_SECONDS)
        except TimeoutError:
            raise ChannelError(
                f"The mail server did not finish within {SEND_TIMEOUT_SECONDS:.0f} seconds",
                temporary=True,
            ) from None
        except EmailDeliveryError as error:
            raise ChannelError(str(error), temporary=error.temporary) from error
        if address in result.refused:
            raise ChannelError(
                f"Refused by the mail server: {result.refused[address]}", temporary=False
            )
        return SendResult(provider_message_id=result.message_id)


_senders: dict[Channel, ChannelSender] = {Channel.EMAIL: EmailSender()}


def register(sender: ChannelSender) -> None:
    """Make ``sender`` the one for its channel (Telegram registers itself when configured)."""
    _senders[sender.channel] = sender


def unregister(channel: Channel) -> None:
    _senders.pop(channel, None)


def sender_for(channel: Channel) -> ChannelSender | None:
    return _senders.get(channel)
