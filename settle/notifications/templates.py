"""Templates: emails of three Jinja2 files, and notifications of one folder per kind.

An email named ``invitation`` is ``templates/invitation.subject.txt``,
``templates/invitation.txt`` and ``templates/invitation.html``. A notification
kind ``payment_received`` is the folder ``templates/payment_received/`` with
``subject.txt``, ``body.txt``, ``body.html`` and ``telegram.txt`` (plain text, so
a Telegram message needs no Markdown escaping), rendered from plain data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from jinja2 import (
    Environment,
    PackageLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from settle.core.money import Money, format_money

# Month names are spelled out here rather than with strftime("%b"), which follows
# the process locale and would change the emails with the server's configuration.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class EmailTemplateNotFoundError(LookupError):
    """Raised when an email template, or one of its three files, does not exist."""

    def __init__(self, template: str, missing_file: str) -> None:
        super().__init__(
            f"Unknown email template {template!r}: {missing_file!r} is missing; an email "
            f"template needs {template}.subject.txt, {template}.txt and {template}.html "
            "in settle/notifications/templates/"
        )
        self.template = template
        self.missing_file = missing_file


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def format_email_datetime(value: datetime) -> str:
    """A moment as recipients read it in an email, e.g. ``22 Nov 2026 14:05 UTC``."""
    if value.tzinfo is None:
        # A naive datetime could be local time or UTC; printing it as UTC could
        # tell an invitee the wrong expiry, so callers must say which it is.
        raise ValueError("email datetimes must be timezone-aware")
    utc = value.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year} {utc:%H:%M} UTC"


def format_email_date(value: date) -> str:
    """A calendar day as recipients read it in an email, e.g. ``22 Dec 2026``."""
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def _money(value: Money | dict[str, Any]) -> str:
    """Money, or money as a notification stores it (``{"minor": 100, "currency": "INR"}``)."""
    if isinstance(value, Money):
        return format_money(value)
    return format_money(Money(int(value["minor"]), str(value["currency"])))


def _day(value: date | str) -> str:
    """A calendar day, or one stored as ``YYYY-MM-DD`` in a notification's data."""
    return format_email_date(value if isinstance(value, date) else date.fromisoformat(value))


def money_data(value: Money) -> dict[str, Any]:
    """Money as plain data for a notification's stored context."""
    return {"minor": value.minor_units, "currency": value.currency}


def _create_environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("settle.notifications", "templates"),
        # Only the HTML part is markup; escaping the subject or the text part would
        # show "&amp;" to the reader.
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        # A missing variable must fail the render, not send an email with a blank.
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["email_datetime"] = format_email_datetime
    environment.filters["email_date"] = format_email_date
    environment.filters["money"] = _money
    environment.filters["day"] = _day
    return environment


environment = _create_environment()


def render_email(template: str, **context: Any) -> RenderedEmail:
    """Render an email template's subject, plain-text and HTML parts with one context."""
    parts: list[str] = []
    for file_name in (f"{template}.subject.txt", f"{template}.txt", f"{template}.html"):
        try:
            jinja_template = environment.get_template(file_name)
        except TemplateNotFound as error:
            raise EmailTemplateNotFoundError(template, file_name) from error
        parts.append(jinja_template.render(**context))
    subject, text, html = parts
    # A header cannot span lines, and a context value with a newline in it (an
    # agency name, say) must not be able to start a new header.
    return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html)


NOTIFICATION_FILES = ("subject.txt", "body.txt", "body.html", "telegram.txt")


@dataclass(frozen=True, slots=True)
class RenderedNotification:
    subject: str
    text: str
    html: str
    telegram: str


def render_notification(kind: str, **context: Any) -> RenderedNotification:
    """Render a notification kind's four templates with one context."""
    parts: list[str] = []
    for file_name in NOTIFICATION_FILES:
        path = f"{kind}/{file_name}"
        try:
            jinja_template = environment.get_template(path)
        except TemplateNotFound as error:
            raise EmailTemplateNotFoundError(kind, path) from error
        parts.append(jinja_template.render(**context))
    subject, text, html, telegram = parts
    return RenderedNotification(
        subject=" ".join(subject.split()), text=text, html=html, telegram=telegram
    )
