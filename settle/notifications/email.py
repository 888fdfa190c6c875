"""Email channel: build a MIME message and deliver it over SMTP or into .eml files.

Without an SMTP host (the embedded run, tests) messages are written under the
var directory, so a developer can open what would have been sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Literal

import aiosmtplib

from settle.core.private_files import FILE_MODE, private_dir
from settle.core.settings import Settings

# aiosmtplib applies this to each network operation (connect, every command).
SMTP_TIMEOUT_SECONDS = 30.0
# RFC 5322's recommended line length, which the email policies fold headers to.
HEADER_LINE_LENGTH = 78


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    transport: Literal["file", "smtp"]
    message_id: str
    path: Path | None = None
    # Recipients the server refused while accepting others, with its reply. The
    # message went out, so retrying would send it twice to the accepted ones.
    refused: Mapping[str, str] = field(default_factory=dict)


class EmailDeliveryError(Exception):
    """The SMTP server did not take the message; ``temporary`` says whether to retry."""

    code = "email_delivery_failed"

    def __init__(self, message: str, *, temporary: bool, smtp_code: int | None = None) -> None:
        super().__init__(message)
        self.temporary = temporary
        self.smtp_code = smtp_code


def build_message(
    *,
    settings: Settings,
    to: Sequence[str],
    cc: Sequence[str] = (),
    subject: str,
    text: str,
    html: str,
    attachments: Sequence[Attachment] = (),
) -> EmailMessage:
    """A multipart/alternative message (text and HTML) with attachments as extra parts."""
    if not to:
        raise ValueError("an email needs at least one recipient in 'to'")
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    # Stored already folded: the generator then writes it as it is (see _fold_subject).
    message.set_raw("Subject", _fold_subject(subject))
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=_sender_domain(settings.mail_from))
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        if not maintype or not subtype:
            raise ValueError(f"attachment content type must be type/subtype: {attachment!r}")
        # Adding an attachment turns the message into multipart/mixed with the
        # text/HTML alternative as its first part, which mail clients show as the body.
        message.add_attachment(
            attachment.data, maintype=maintype, subtype=subtype, filename=attachment.filename
        )
    return message


async def deliver(message: EmailMessage, *, settings: Settings) -> DeliveryResult:
    """Send a message over SMTP, or write it as an .eml file when no SMTP host is set."""
    message_id = message["Message-ID"]
    if not message_id:
        raise ValueError("the message has no Message-ID; build it with build_message()")
    if settings.smtp_host is None:
        path = await asyncio.to_thread(_write_eml, message, str(message_id), settings.mail_dir)
        return DeliveryResult(transport="file", message_id=str(message_id), path=path)
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    try:
        refused, _ = await aiosmtplib.send(
            message,
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_username,
            password=password,
            # True, not aiosmtplib's default of None ("upgrade if offered"): a server
            # that stops offering STARTTLS must fail the send, not get credentials
            # and mail in clear text.
            start_tls=settings.smtp_starttls,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
    except (aiosmtplib.SMTPException, OSError) as error:
        raise _delivery_error(error) from error
    return DeliveryResult(
        transport="smtp",
        message_id=str(message_id),
        refused={address: f"{reply.code} {reply.message}" for address, reply in refused.items()},
    )


def _fold_subject(subject: str) -> str:
    """The Subject header's value folded to lines of at most 78 characters.

    Python's own folder (3.11 to 3.13) mangles long subjects: it can fold right
    after ``Subject:`` (the subject then reads with a leading space), and next to
    an encoded word it doubles the space before it and drops the one after
    (``Studio  —₹1,18,000.00``). ASCII is folded here at its spaces; anything
    else becomes RFC 2047 encoded words, which decode back to exactly the text.
    """
    name = "Subject: "
    if subject.isascii():
        lines = [""]
        width = len(name)
        for index, word in enumerate(subject.split(" ")):
            if index and word and width + 1 + len(word) > HEADER_LINE_LENGTH and lines[-1]:
                # The fold goes before the space, which unfolding keeps.
                lines.append(f" {word}")
                width = len(lines[-1])
            else:
                lines[-1] += f" {word}" if index else word
                width += len(word) + (1 if index else 0)
        if all(len(line) <= HEADER_LINE_LENGTH for line in [name + lines[0], *lines[1:]]):
            return "\n".join(lines)
    header = Header(subject, "utf-8", maxlinelen=HEADER_LINE_LENGTH, header_name="Subject")
    return header.encode(linesep="\n")


def _sender_domain(mail_from: str) -> str:
    _, address = parseaddr(mail_from)
    domain = Address(addr_spec=address).domain if "@" in address else ""
    if not domain:
        # make_msgid() would fall back to the machine's FQDN, which leaks the
        # host name and can block on DNS.
        raise ValueError(f"mail_from must be an address with a domain: {mail_from!r}")
    return domain


def _write_eml(message: EmailMessage, message_id: str, mail_dir: Path) -> Path:
    private_dir(mail_dir)
    timestamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(message_id.encode()).hexdigest()[:12]
    path = mail_dir / f"{timestamp}-{digest}.eml"
    # Written to a temporary name in the same directory, then renamed: whoever
    # watches the directory never reads a half-written message.
    fd, temp_name = tempfile.mkstemp(dir=mail_dir, prefix=".", suffix=".eml.tmp")
    try:
        # mkstemp asks for 0600, which the umask may narrow; the message is the owner's.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as file:
            file.write(message.as_bytes())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def _delivery_error(error: Exception) -> EmailDeliveryError:
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in error.recipients]
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in error.recipients)
        # Nothing was sent; a retry can reach the recipients refused with 4xx, and
        # those refused with 5xx are refused again without a duplicate.
        return EmailDeliveryError(
            f"SMTP server refused every recipient ({replies})",
            temporary=any(_is_temporary_reply(code) for code in codes),
            smtp_code=codes[0] if codes else None,
        )
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return EmailDeliveryError(
            f"SMTP server replied {error.code} {error.message}",
            temporary=_is_temporary_reply(error.code),
            smtp_code=error.code,
        )
    # Connection errors and timeouts: the server may be back on the next attempt.
    if isinstance(error, TimeoutError | ConnectionError):
        return EmailDeliveryError(f"SMTP connection failed: {error}", temporary=True)
    if isinstance(error, aiosmtplib.SMTPException):
        # What is left is a mismatch between our configuration and the server
        # (no STARTTLS, no AUTH, no SMTPUTF8); retrying will not change it.
        return EmailDeliveryError(f"SMTP delivery failed: {error}", temporary=False)
    return EmailDeliveryError(f"SMTP connection failed: {error}", temporary=True)


def _is_temporary_reply(code: int) -> bool:
    return 400 <= code < 500
