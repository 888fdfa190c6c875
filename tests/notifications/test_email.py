"""Emails are rendered from templates and delivered to a real SMTP server or to .eml files."""

from __future__ import annotations

import email
import email.policy
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from settle.core.settings import Settings
from settle.notifications.email import (
    Attachment,
    EmailDeliveryError,
    build_message,
    deliver,
)
from settle.notifications.templates import (
    EmailTemplateNotFoundError,
    RenderedEmail,
    render_email,
)

ACCEPT_URL = "https://app.settle.test/invitations/accept?token=tok_123"
EXPIRES_AT = datetime(2026, 11, 22, 14, 5, tzinfo=UTC)


@dataclass
class RecordingHandler:
    """Stores every envelope the server accepts."""

    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@dataclass
class RejectingHandler(RecordingHandler):
    """Answers every RCPT with a fixed reply, as a server refusing the recipient does."""

    rcpt_reply: str = "550 5.1.1 No such user"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        return self.rcpt_reply


@dataclass
class SmtpServer:
    port: int
    handler: RecordingHandler


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(handler: RecordingHandler, *, smtputf8: bool = False) -> Iterator[SmtpServer]:
    controller = Controller(
        handler, hostname="127.0.0.1", port=_free_port(), enable_SMTPUTF8=smtputf8
    )
    # start() returns once the server answers, so tests need not wait for it.
    controller.start()
    try:
        yield SmtpServer(port=controller.port, handler=handler)
    finally:
        controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from _start_server(RecordingHandler())


@pytest.fixture
def smtp_server_550() -> Iterator[SmtpServer]:
    yield from _start_server(RejectingHandler(rcpt_reply="550 5.1.1 No such user"))


@pytest.fixture
def smtp_server_451() -> Iterator[SmtpServer]:
    yield from _start_server(RejectingHandler(rcpt_reply="451 4.3.0 Try again later"))


@pytest.fixture
def closed_port() -> Iterator[int]:
    # Bound but not listening: connections are refused, and no other process can
    # take the port while the test runs.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def smtp_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    arguments: dict[str, Any] = {
        "var_dir": tmp_path,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_starttls": False,
        "mail_from": "Settle <no-reply@settle.test>",
    }
    arguments.update(overrides)
    return Settings(**arguments)


def render_invitation(**overrides: Any) -> RenderedEmail:
    context: dict[str, Any] = {
        "agency_name": "Acme Studio",
        "inviter_name": "Asha Rao",
        "role": "admin",
        "accept_url": ACCEPT_URL,
        "expires_at": EXPIRES_AT,
    }
    context.update(overrides)
    return render_email("invitation", **context)


def invitation_message(settings: Settings, **kwargs: Any) -> EmailMessage:
    rendered = render_invitation()
    return build_message(
        settings=settings,
        to=["dev@client.test"],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        **kwargs,
    )


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body_text(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    assert isinstance(part, EmailMessage)
    content: str = part.get_content()
    return content


async def test_invitation_is_delivered_over_smtp(tmp_path: Path, smtp_server: SmtpServer) -> None:
    # given
    settings = smtp_settings(tmp_path, smtp_server.port)
    message = invitation_message(settings, cc=["lead@agency.test"])

    # when
    result = await deliver(message, settings=settings)

    # then
    assert result.transport == "smtp"
    assert result.path is None
    assert result.refused == {}
    [envelope] = smtp_server.handler.envelopes
    assert envelope.mail_from == "no-reply@settle.test"
    assert envelope.rcpt_tos == ["dev@client.test", "lead@agency.test"]
    assert isinstance(envelope.content, bytes)
    received = parse(envelope.content)
    assert received["Subject"] == "Asha Rao invited you to join Acme Studio on Settle"
    assert received["Message-ID"] == result.message_id
    assert received["Message-ID"].endswith("@settle.test>")
    assert received["Date"] is not None
    assert received.get_content_type() == "multipart/alternative"
    text = body_text(received, "plain")
    assert ACCEPT_URL in text
    assert "22 Nov 2026 14:05 UTC" in text
    assert "Your role: Admin" in text
    assert ACCEPT_URL in body_text(received, "html")


async def test_attachments_are_extra_parts_after_the_body(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    # given
    settings = smtp_settings(tmp_path, smtp_server.port)
    pdf = Attachment(filename="INV-0001.pdf", content_type="application/pdf", data=b"%PDF-1.7\n")
    message = invitation_message(settings, attachments=[pdf])

    # when
    await deliver(message, settings=settings)

    # then
    [envelope] = smtp_server.handler.envelopes
    assert isinstance(envelope.content, bytes)
    received = parse(envelope.content)
    assert received.get_content_type() == "multipart/mixed"
    assert ACCEPT_URL in body_text(received, "plain")
    [attachment] = received.iter_attachments()
    assert isinstance(attachment, EmailMessage)
    assert attachment.get_filename() == "INV-0001.pdf"
    assert attachment.get_content_type() == "application/pdf"
    assert attachment.get_content() == b"%PDF-1.7\n"


async def test_without_smtp_host_the_message_is_written_as_one_eml_file(tmp_path: Path) -> None:
    # given
    settings = Settings(var_dir=tmp_path, smtp_host=None, mail_from="Settle <no-reply@settle.test>")
    message = invitation_message(settings)

    # when
    result = await deliver(message, settings=settings)

    # then
    [path] = settings.mail_dir.iterdir()
    assert result.transport == "file"
    assert result.path == path
    assert path.suffix == ".eml"
    written = parse(path.read_bytes())
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        assert written[header] == message[header], header
    assert ACCEPT_URL in body_text(written, "plain")


SUBJECTS = [
    # ASCII past one line: Python's folder put the whole value on the next line.
    "Milo Rasmussen-Oyelaran invited you to join Northwind Design Studio on Settle",
    # An encoded word after a fold: it doubled the space before the dash and lost the one after.
    "Invoice INV-2026-0001 from Northwind Design and Motion Studio — ₹1,18,000.00 due 22 Dec 2026",
    "Invoice INV-2026-0001 from Northwind Design and Motion Studio LLP — paid in full",
    "Ünïcödé Désign Studio invited you to join Ünïcödé Désign Studio on Settle, Bengaluru",
    "Short and sweet — ₹1.00",
    "A subject with a word longer than a header line: " + "x" * 90 + " — and more after it",
]


def header_lines(raw: bytes, name: str) -> list[str]:
    """The lines of one header as written, folds included."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8")
    lines: list[str] = []
    for line in head.split("\n"):
        if line.startswith(f"{name}:") or (lines and line[:1] in (" ", "\t") and lines[-1]):
            lines.append(line)
        elif lines:
            break
    return lines


def assert_subject_sent_as_written(raw: bytes, subject: str) -> None:
    # it reads back exactly (no space added before the dash, none lost after it)
    assert parse(raw)["Subject"] == subject
    # and it is folded within 78 characters a line, never right after "Subject:"
    lines = header_lines(raw, "Subject")
    assert lines[0].startswith("Subject: ")
    assert lines[0][len("Subject: ") :].strip()
    assert max(len(line) for line in lines) <= 78


def hello(settings: Settings, to: str, subject: str) -> EmailMessage:
    """A short message to ``to`` with ``subject``: what the subject tests send."""
    return build_message(
        settings=settings, to=[to], subject=subject, text="Hello", html="<p>Hello</p>"
    )


@pytest.mark.parametrize("subject", SUBJECTS)
async def test_a_subject_reaches_smtp_as_written(
    tmp_path: Path, smtp_server: SmtpServer, subject: str
) -> None:
    # given a message with that subject
    settings = smtp_settings(tmp_path, smtp_server.port)
    message = hello(settings, "dev@client.test", subject)
    # when it is sent over SMTP
    await deliver(message, settings=settings)
    # then the bytes the server received carry it intact
    [envelope] = smtp_server.handler.envelopes
    assert isinstance(envelope.original_content, bytes)
    assert_subject_sent_as_written(envelope.original_content, subject)
    # and the message in memory still reads it as given
    assert message["Subject"] == subject


@pytest.mark.parametrize("subject", SUBJECTS)
async def test_a_subject_is_written_to_the_eml_file_as_written(
    tmp_path: Path, subject: str
) -> None:
    # given no SMTP server
    settings = Settings(var_dir=tmp_path, smtp_host=None, mail_from="Settle <no-reply@settle.test>")
    message = hello(settings, "dev@client.test", subject)
    # when it is delivered, then the .eml file carries it intact
    await deliver(message, settings=settings)
    [path] = settings.mail_dir.iterdir()
    assert_subject_sent_as_written(path.read_bytes(), subject)


@pytest.fixture
def smtputf8_server() -> Iterator[SmtpServer]:
    yield from _start_server(RecordingHandler(), smtputf8=True)


@pytest.mark.parametrize("subject", SUBJECTS)
async def test_a_subject_to_an_international_address_arrives_as_written(
    tmp_path: Path, smtputf8_server: SmtpServer, subject: str
) -> None:
    # given a recipient whose address is not ASCII, so the message goes out as SMTPUTF8
    settings = smtp_settings(tmp_path, smtputf8_server.port)
    message = hello(settings, "désirée@client.test", subject)
    # when it is sent
    await deliver(message, settings=settings)
    # then the server was asked for SMTPUTF8, and the subject arrived intact
    [envelope] = smtputf8_server.handler.envelopes
    assert envelope.rcpt_tos == ["désirée@client.test"]
    assert "SMTPUTF8" in envelope.mail_options
    assert isinstance(envelope.original_content, bytes)
    assert_subject_sent_as_written(envelope.original_content, subject)


async def test_recipient_refused_with_550_is_a_permanent_failure(
    tmp_path: Path, smtp_server_550: SmtpServer
) -> None:
    # given
    settings = smtp_settings(tmp_path, smtp_server_550.port)

    # when
    with pytest.raises(EmailDeliveryError) as raised:
        await deliver(invitation_message(settings), settings=settings)

    # then
    assert raised.value.temporary is False
    assert raised.value.smtp_code == 550
    assert raised.value.__cause__ is not None
    assert smtp_server_550.handler.envelopes == []


async def test_recipient_refused_with_451_is_a_temporary_failure(
    tmp_path: Path, smtp_server_451: SmtpServer
) -> None:
    # given
    settings = smtp_settings(tmp_path, smtp_server_451.port)

    # when
    with pytest.raises(EmailDeliveryError) as raised:
        await deliver(invitation_message(settings), settings=settings)

    # then
    assert raised.value.temporary is True
    assert raised.value.smtp_code == 451


async def test_unreachable_server_is_a_temporary_failure(tmp_path: Path, closed_port: int) -> None:
    # given
    settings = smtp_settings(tmp_path, closed_port)

    # when
    with pytest.raises(EmailDeliveryError) as raised:
        await deliver(invitation_message(settings), settings=settings)

    # then
    assert raised.value.temporary is True
    assert isinstance(raised.value.__cause__, ConnectionError)


async def test_starttls_required_but_not_offered_fails_instead_of_sending_in_clear(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    # given: the test server has no TLS context, so it does not offer STARTTLS
    settings = smtp_settings(tmp_path, smtp_server.port, smtp_starttls=True)

    # when
    with pytest.raises(EmailDeliveryError) as raised:
        await deliver(invitation_message(settings), settings=settings)

    # then
    assert raised.value.temporary is False
    assert smtp_server.handler.envelopes == []


def test_html_part_escapes_context_and_text_part_does_not() -> None:
    # given
    agency_name = "<script>alert(1)</script> & Co"

    # when
    rendered = render_invitation(agency_name=agency_name)

    # then
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in rendered.html
    assert "<script>" not in rendered.html
    assert agency_name in rendered.text
    assert agency_name in rendered.subject


def test_subject_is_one_line_even_when_context_has_newlines() -> None:
    # when
    rendered = render_invitation(agency_name="Acme\r\nBcc: victim@example.test")

    # then
    assert rendered.subject == (
        "Asha Rao invited you to join Acme Bcc: victim@example.test on Settle"
    )


def test_unknown_template_names_the_missing_file() -> None:
    # when
    with pytest.raises(EmailTemplateNotFoundError, match=r"no_such_email\.subject\.txt"):
        render_email("no_such_email")


def test_expiry_must_be_timezone_aware() -> None:
    # when / then
    with pytest.raises(ValueError, match="timezone-aware"):
        render_invitation(expires_at=datetime(2026, 11, 22, 14, 5))
