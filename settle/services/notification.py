"""Notifications: who is told what, on which channel, and the history of every message.

``notify`` is the one entry point. A service calls it inside the transaction of
the change that caused it: it resolves the recipients' preferences, writes one
``Notification`` row per recipient and channel (``pending``, or ``suppressed``
by preference), and sends a ``notification.send`` job per pending row through
the outbox. A rolled-back change leaves neither rows nor jobs, so it notifies
nobody. The dedupe key is unique per recipient and channel: telling the same
thing twice (a webhook delivered twice, a sweep that runs again) writes nothing.
Sweeps make it per subject and stage (``invoice:<id>:overdue:7``).

``deliver`` is the job. It claims the row (``pending`` → ``sending``, one
conditional UPDATE, so of two runs only one wins), renders and sends it outside
any transaction, then records the outcome. A temporary failure puts the row
back to ``pending`` and raises, so Dramatiq retries with backoff; a permanent
one (or the last attempt) is recorded ``failed`` and not retried. A claim older
than ``SEND_LEASE`` belongs to a run that died and may be taken again.

Emails are limited per agency (``SETTLE_NOTIFICATION_EMAIL_RATE_LIMIT``): beyond
the limit a job is deferred to when the window has room, never dropped.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from limits import parse_many
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.queryset import QuerySet

from settle.core import clock
from settle.core.db import get_visible
from settle.core.errors import AppError, ValidationError
from settle.core.money import Money
from settle.core.outbox import send_job, transaction
from settle.core.pagination import Ordering, Page, paginate
from settle.core.rate_limit import storage_for
from settle.core.settings import get_settings
from settle.core.signing import SignedTokenError, UrlSigner
from settle.core.tenancy import MANAGERS, MEMBERS, Actor, scoped
from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Role, User
from settle.models.client import Client, Contact
from settle.models.invoice import Invoice, InvoiceLine
from settle.models.milestone import Milestone, MilestoneKind, MilestoneStatus
from settle.models.notification import (
    Channel,
    Frequency,
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)
from settle.models.payment import Payment, PaymentAllocation
from settle.models.project import Project
from settle.notifications.channels import (
    ChannelError,
    OutgoingMessage,
    RecipientUnreachableError,
    register,
    sender_for,
)
from settle.notifications.email import Attachment
from settle.notifications.templates import money_data, render_notification
from settle.services import activity
from settle.services.telegram import TelegramSender

log = logging.getLogger(__name__)

K = NotificationKind
S = NotificationStatus

SEND_JOB = "notification.send"

# Attempts of one notification before a temporary failure counts as final; the
# actor retries one time fewer, so its last try records the failure.
MAX_ATTEMPTS = 8
ERROR_MAX_LENGTH = 2_000
# A claim older than this belongs to a run that died (the send timeout plus room).
SEND_LEASE = timedelta(seconds=360)

# What a payer needs as a record of their money: never turned off, never held back.
TRANSACTIONAL_KINDS = frozenset(
    {
        K.ADVANCE_PAYMENT_CONFIRMATION,
        K.BALANCE_PAYMENT_CONFIRMATION,
        K.PAYMENT_CONFIRMATION,
        K.REFUND_PROCESSED,
    }
)
DEFAULT_CHANNELS: tuple[Channel, ...] = (Channel.EMAIL,)

UNSUBSCRIBE_PURPOSE = "notification.unsubscribe"
UNSUBSCRIBE_TTL_SECONDS = 365 * 86_400


class SendInProgressError(Exception):
    """Another run holds this notification's claim; the actor retries after backoff."""


# --- recipients ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recipient:
    """A user or a contact, and the email address they are told at."""

    key: str
    name: str
    email: str | None
    user_id: uuid.UUID | None = None
    contact_id: uuid.UUID | None = None

    @classmethod
    def of_user(cls, user: User) -> Recipient:
        return cls(key=f"user:{user.id}", name=user.name, email=user.email, user_id=user.id)

    @classmethod
    def of_contact(cls, contact: Contact) -> Recipient:
        return cls(
            key=f"contact:{contact.id}",
            name=contact.name,
            email=contact.email,
            contact_id=contact.id,
        )


async def managers(agency_id: uuid.UUID) -> list[Recipient]:
    """The agency's active owners and admins."""
    users = await User.filter(
        agency_id=agency_id, role__in=list(MANAGERS), is_active=True
    ).order_by("created_at", "id")
    return [Recipient.of_user(user) for user in users]


async def client_side(client_id: uuid.UUID) -> list[Recipient]:
    """The client's primary contact and its lead users (one message per address)."""
    found: list[Recipient] = []
    contact = await Contact.get_or_none(client_id=client_id, is_primary=True)
    if contact is not None:
        found.append(Recipient.of_contact(contact))
    leads = await User.filter(client_id=client_id, role=Role.CLIENT_LEAD, is_active=True).order_by(
        "created_at", "id"
    )
    found.extend(Recipient.of_user(user) for user in leads)
    return _distinct(found)


async def user(user_id: uuid.UUID | None) -> list[Recipient]:
    if user_id is None:
        return []
    row = await User.get_or_none(id=user_id, is_active=True)
    return [Recipient.of_user(row)] if row else []


async def milestone_submitter(milestone_id: uuid.UUID) -> uuid.UUID | None:
    """Who last submitted a milestone, as its timeline says."""
    event = (
        await ActivityEvent.filter(
            entity_type="milestone", entity_id=milestone_id, verb="submitted"
        )
        .order_by("-created_at")
        .first()
    )
    return event.actor_id if event else None


async def work_owners(milestone_ids: Iterable[uuid.UUID]) -> list[Recipient]:
    """The members who own the work of these milestones, where their project asks to tell them.

    A milestone has no assignee: the member who last submitted it owns its work.
    Only the agency's active owners, admins and members count; a client user who
    submitted is never told of the agency's payments.
    """
    milestones = await Milestone.filter(
        id__in=list(dict.fromkeys(milestone_ids)), project__notify_milestone_members=True
    ).order_by("position", "id")
    found: list[Recipient] = []
    for milestone in milestones:
        submitter = await milestone_submitter(milestone.id)
        if submitter is None:
            continue
        row = await User.get_or_none(
            id=submitter, agency_id=milestone.agency_id, role__in=list(MEMBERS), is_active=True
        )
        if row is not None:
            found.append(Recipient.of_user(row))
    return _distinct(found)


async def milestones_paid(allocations: Iterable[PaymentAllocation]) -> list[uuid.UUID]:
    """The milestones paid: those allocations name, and those of a whole invoice paid.

    A payment of an invoice (its pay link, an offline record) allocates to the
    invoice, not to its milestones: its milestone lines say which they are.
    """
    rows = list(allocations)
    ids = [a.milestone_id for a in rows if a.milestone_id is not None]
    whole = [a.invoice_id for a in rows if a.milestone_id is None]
    if whole:
        lines = await InvoiceLine.filter(invoice_id__in=whole, milestone_id__isnull=False).order_by(
            "invoice_id", "position", "id"
        )
        ids.extend(line.milestone_id for line in lines if line.milestone_id is not None)
    return list(dict.fromkeys(ids))


async def payment_team(agency_id: uuid.UUID, milestone_ids: Iterable[uuid.UUID]) -> list[Recipient]:
    """Who on the agency's side hears of a payment: the managers, then the work's owners."""
    return _distinct([*await managers(agency_id), *await work_owners(milestone_ids)])


def _distinct(recipients: Iterable[Recipient]) -> list[Recipient]:
    """Drop a second recipient with an address already told (a contact who is also a user)."""
    seen: set[str] = set()
    kept: list[Recipient] = []
    for recipient in recipients:
        address = (recipient.email or "").lower()
        if address and address in seen:
            continue
        if address:
            seen.add(address)
        kept.append(recipient)
    return kept


# --- preferences --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preference:
    kind: NotificationKind
    channels: tuple[Channel, ...]
    frequency: Frequency

    @property
    def can_turn_off(self) -> bool:
        return self.kind not in TRANSACTIONAL_KINDS


def default_preference(kind: NotificationKind) -> Preference:
    return Preference(kind, DEFAULT_CHANNELS, Frequency.IMMEDIATE)


async def _stored_preferences(keys: Sequence[str]) -> dict[tuple[str, str], Preference]:
    rows = await NotificationPreference.filter(recipient_key__in=list(keys))
    return {
        (row.recipient_key, row.kind.value): Preference(
            row.kind, tuple(Channel(c) for c in row.channels), row.frequency
        )
        for row in rows
    }


def _effective(kind: NotificationKind, stored: Preference | None) -> Preference:
    preference = stored or default_preference(kind)
    if kind in TRANSACTIONAL_KINDS:
        # A receipt always goes out at once, and at least by email.
        channels = tuple(dict.fromkeys((Channel.EMAIL, *preference.channels)))
        return Preference(kind, channels, Frequency.IMMEDIATE)
    if not preference.channels:
        return Preference(kind, DEFAULT_CHANNELS, Frequency.OFF)
    return preference


# --- notify -------------------------------------------------------------------------------


async def notify(
    kind: NotificationKind,
    *,
    agency_id: uuid.UUID,
    recipients: Sequence[Recipient],
    subject_type: str,
    subject_id: uuid.UUID | None,
    dedupe_key: str,
    data: dict[str, Any],
) -> list[Notification]:
    """Record ``kind`` for each recipient and channel, and send the pending ones after commit.

    Runs inside the caller's transaction. A recipient already told under this
    dedupe key on a channel gets no second row there.
    """
    people = _distinct(recipients)
    stored = await _stored_preferences([r.key for r in people])
    written: list[Notification] = []
    for recipient in people:
        preference = _effective(kind, stored.get((recipient.key, kind.value)))
        for channel in preference.channels:
            status, reason, digest = S.PENDING, None, False
            if preference.frequency is Frequency.OFF:
                status, reason = S.SUPPRESSED, "Turned off in the recipient's preferences"
            elif preference.frequency is Frequency.DAILY_DIGEST:
                digest = True
            if channel is Channel.EMAIL and not recipient.email and status is S.PENDING:
                status, reason = S.SKIPPED, "The recipient has no email address"
            row = await _insert(
                kind=kind,
                channel=channel,
                agency_id=agency_id,
                recipient=recipient,
                subject_type=subject_type,
                subject_id=subject_id,
                dedupe_key=dedupe_key,
                data=data,
                status=status,
                reason=reason,
                digest=digest,
            )
            if row is None:
                continue
            written.append(row)
            if row.status is S.PENDING and not row.digest:
                await send_job(SEND_JOB, str(row.id))
    return written


async def _insert(
    *,
    kind: NotificationKind,
    channel: Channel,
    agency_id: uuid.UUID,
    recipient: Recipient,
    subject_type: str,
    subject_id: uuid.UUID | None,
    dedupe_key: str,
    data: dict[str, Any],
    status: NotificationStatus,
    reason: str | None,
    digest: bool,
) -> Notification | None:
    existing = Notification.filter(
        recipient_key=recipient.key, channel=channel, dedupe_key=dedupe_key
    )
    if await existing.exists():
        return None
    try:
        # A savepoint: a concurrent insert of the same key loses here without
        # aborting the caller's transaction.
        async with transaction():
            return await Notification.create(
                agency_id=agency_id,
                kind=kind,
                channel=channel,
                user_id=recipient.user_id,
                contact_id=recipient.contact_id,
                recipient_key=recipient.key,
                address=recipient.email if channel is Channel.EMAIL else None,
                subject_type=subject_type,
                subject_id=subject_id,
                data={"recipient_name": recipient.name, **data},
                dedupe_key=dedupe_key,
                status=status,
                reason=reason,
                digest=digest,
            )
    except IntegrityError:
        return None


# --- delivery -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Deferred:
    """Try again after ``seconds``: the agency's email limit is reached, or the channel said so."""

    seconds: int


_limiter: MovingWindowRateLimiter | None = None
_limiter_storage: object | None = None


def _email_limiter() -> MovingWindowRateLimiter:
    global _limiter, _limiter_storage
    storage = storage_for(get_settings())
    if _limiter is None or _limiter_storage is not storage:
        _limiter, _limiter_storage = MovingWindowRateLimiter(storage), storage
    return _limiter


async def _email_room(agency_id: uuid.UUID) -> int | None:
    """None when the agency may send one more email now; else seconds until it may."""
    limits = parse_many(get_settings().notification_email_rate_limit)
    limiter = _email_limiter()
    key = ("notification-email", str(agency_id))
    try:
        for item in limits:
            if not await limiter.test(item, *key):
                stats = await limiter.get_window_stats(item, *key)
                # The library counts in real time, not Settle's (movable) clock.
                return max(1, math.ceil(stats.reset_time - time.time()))
        for item in limits:
            await limiter.hit(item, *key)
    except StorageError:
        # Redis away: sending without counting beats holding every email back.
        log.warning("notification.rate_limit_unavailable", extra={"agency_id": str(agency_id)})
    return None


async def deliver(notification_id: uuid.UUID) -> Deferred | None:
    """Send one pending notification once; Deferred when the agency's email limit is reached.

    Raises after recording a temporary failure, so the actor retries.
    """
    row = await Notification.get_or_none(id=notification_id)
    if row is None or row.digest or row.status not in (S.PENDING, S.SENDING):
        return None
    if row.channel is Channel.EMAIL:
        wait = await _email_room(row.agency_id)
        if wait is not None:
            # Marked, so the janitor leaves it to the job that comes back by itself.
            async with transaction():
                await Notification.filter(id=row.id, status=S.PENDING).update(
                    not_before=clock.now() + timedelta(seconds=wait)
                )
            return Deferred(wait)
    if not await _claim(row.id):
        current = await Notification.get(id=notification_id)
        if current.status is S.SENDING:
            # Another run is sending it, or died doing so: look again once the claim
            # has run out, rather than leave it claimed for good.
            raise SendInProgressError(f"notification {notification_id} is being sent")
        return None
    row = await Notification.get(id=notification_id)
    from settle.services import notification_sweep

    moot = await notification_sweep.moot_reason(row)
    if moot is not None:
        # A reminder whose subject was paid since it was recorded: not sent.
        await _finish(row.id, S.SKIPPED, reason=moot)
        return None
    sender = sender_for(row.channel)
    if sender is None:
        await _finish(row.id, S.SKIPPED, reason=f"No {row.channel.value} channel is configured")
        return None
    try:
        message = await _compose(row)
        result = await sender.send(message)
    except RecipientUnreachableError as error:
        await _finish(row.id, S.SKIPPED, reason=str(error))
        return None
    except ChannelError as error:
        final = not error.temporary or row.attempts >= MAX_ATTEMPTS
        if not final and error.retry_after:
            # The channel named its wait (Telegram's 429): come back then, not at the
            # backoff's guess, which could be sooner and spend an attempt for nothing.
            wait = max(1, math.ceil(error.retry_after))
            await _finish(
                row.id,
                S.PENDING,
                error=str(error),
                not_before=clock.now() + timedelta(seconds=wait),
            )
            return Deferred(wait)
        await _finish(row.id, S.FAILED if final else S.PENDING, error=str(error))
        if final:
            log.error(
                "notification.failed",
                extra={"notification_id": str(row.id), "kind": row.kind.value},
            )
            return None
        raise
    except Exception as error:
        # Not the channel's answer (a template, the database): release the claim so
        # the retry need not wait out the lease.
        await _finish(
            row.id,
            S.FAILED if row.attempts >= MAX_ATTEMPTS else S.PENDING,
            error=f"The notification could not be prepared ({type(error).__name__})",
        )
        raise
    await _finish(row.id, S.SENT, provider_message_id=result.provider_message_id)
    return None


async def _claim(notification_id: uuid.UUID) -> bool:
    """pending (or a sending claim past its lease) → sending; True only for the run that won."""
    now = clock.now()
    async with transaction():
        won = await Notification.filter(
            Q(status=S.PENDING) | Q(status=S.SENDING, claimed_at__lt=now - SEND_LEASE),
            id=notification_id,
        ).update(status=S.SENDING, claimed_at=now, attempts=F("attempts") + 1, updated_at=now)
    return bool(won)


async def _finish(
    notification_id: uuid.UUID,
    status: NotificationStatus,
    *,
    reason: str | None = None,
    error: str | None = None,
    provider_message_id: str | None = None,
    not_before: datetime | None = None,
) -> None:
    data: dict[str, Any] = {"status": status, "updated_at": clock.now()}
    if not_before is not None:
        data["not_before"] = not_before
    if reason is not None:
        data["reason"] = reason
    if error is not None:
        data["last_error"] = error[:ERROR_MAX_LENGTH]
    if status is S.SENT:
        data.update(sent_at=clock.now(), provider_message_id=provider_message_id, last_error=None)
    async with transaction():
        await Notification.filter(id=notification_id, status=S.SENDING).update(**data)


def unsubscribe_token(notification: Notification) -> str:
    """A signed token that turns this recipient's ``kind`` off, for the email's one-click link."""
    signer = UrlSigner(get_settings().signing_key(), UNSUBSCRIBE_PURPOSE)
    token, _ = signer.sign(
        {"r": notification.recipient_key, "k": notification.kind.value},
        ttl_seconds=UNSUBSCRIBE_TTL_SECONDS,
    )
    return token


def unsubscribe_url(token: str) -> str:
    return f"{get_settings().public_base_url.rstrip('/')}/notifications/unsubscribe?token={token}"


async def _compose(row: Notification) -> OutgoingMessage:
    agency = await Agency.get(id=row.agency_id)
    link = None
    if row.kind not in TRANSACTIONAL_KINDS and row.channel is Channel.EMAIL:
        link = unsubscribe_url(unsubscribe_token(row))
    rendered = render_notification(
        row.kind.value, **context(row.data, agency_name=agency.name, unsubscribe_url=link)
    )
    headers: dict[str, str] = {}
    if link is not None:
        # RFC 8058: a mail client may offer "unsubscribe" and POST to the link itself.
        headers["List-Unsubscribe"] = f"<{link}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return OutgoingMessage(
        notification=row,
        rendered=rendered,
        attachments=await _attachments(row),
        headers=headers,
        reply_to=agency.email,
    )


def context(
    data: dict[str, Any], *, agency_name: str, unsubscribe_url: str | None
) -> dict[str, Any]:
    """What every template sees: the stored data, the agency and the unsubscribe link."""
    return {
        **data,
        "agency_name": agency_name,
        "unsubscribe_url": unsubscribe_url,
        "base_url": get_settings().public_base_url.rstrip("/"),
    }


async def _attachments(row: Notification) -> list[Attachment]:
    """The invoice PDFs a receipt carries, where the invoices have a document."""
    if row.channel is not Channel.EMAIL:
        return []
    from settle.services import invoice_files

    found: list[Attachment] = []
    for invoice_id in row.data.get("attach_invoice_ids", []):
        invoice = await Invoice.get_or_none(id=invoice_id)
        if invoice is None:
            continue
        try:
            filename, pdf = await invoice_files.document(invoice)
        except AppError:
            continue
        found.append(Attachment(filename, "application/pdf", pdf))
    return found


# --- reading and preferences for the API --------------------------------------------------


@dataclass(frozen=True, slots=True)
class NotificationFilter:
    kind: NotificationKind | None = None
    status: NotificationStatus | None = None
    channel: Channel | None = None


def _visible(actor: Actor) -> QuerySet[Notification]:
    qs = Notification.filter(agency_id=actor.agency_id)
    if actor.role not in MANAGERS:
        qs = qs.filter(user_id=actor.user_id)
    return qs


async def list_notifications(
    actor: Actor, flt: NotificationFilter, *, first: int | None, after: str | None
) -> Page[Notification]:
    """Newest first: the agency's for owners and admins, one's own for everyone else."""
    qs = _visible(actor)
    if flt.kind is not None:
        qs = qs.filter(kind=flt.kind)
    if flt.status is not None:
        qs = qs.filter(status=flt.status)
    if flt.channel is not None:
        qs = qs.filter(channel=flt.channel)
    return await paginate(
        qs, first=first, after=after, ordering=Ordering("created_at", descending=True)
    )


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose preferences: the actor's own, or (for owners and admins) a contact's."""

    key: str
    user_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    client_id: uuid.UUID | None


async def _owner(actor: Actor, contact_id: uuid.UUID | None) -> Owner:
    if contact_id is None:
        return Owner(f"user:{actor.user_id}", actor.user_id, None, None)
    actor.require(*MANAGERS)
    contact = await get_visible(scoped(Contact, actor), contact_id, "Contact")
    return Owner(f"contact:{contact.id}", None, contact.id, contact.client_id)


async def preferences(actor: Actor, contact_id: uuid.UUID | None = None) -> list[Preference]:
    """The preference for every kind (stored, or the default): the actor's, or a contact's."""
    owner = await _owner(actor, contact_id)
    stored = await _stored_preferences([owner.key])
    return [_effective(kind, stored.get((owner.key, kind.value))) for kind in NotificationKind]


@dataclass(frozen=True, slots=True)
class PreferenceChange:
    kind: NotificationKind
    channels: tuple[Channel, ...]
    frequency: Frequency


async def update_preferences(
    actor: Actor, changes: Sequence[PreferenceChange], contact_id: uuid.UUID | None = None
) -> list[Preference]:
    """Set the preferences of the kinds given (the actor's, or a contact's); others keep theirs."""
    owner = await _owner(actor, contact_id)
    seen: set[NotificationKind] = set()
    for index, change in enumerate(changes):
        field = f"preferences[{index}]"
        if change.kind in seen:
            raise ValidationError(f"{field}.kind", "A kind may appear once", code="DUPLICATE")
        seen.add(change.kind)
        if not change.channels and change.frequency is not Frequency.OFF:
            raise ValidationError(
                f"{field}.channels", "Give at least one channel, or frequency OFF", code="REQUIRED"
            )
        if change.kind in TRANSACTIONAL_KINDS and change.frequency is not Frequency.IMMEDIATE:
            raise ValidationError(
                f"{field}.frequency",
                f"{change.kind.value} is a receipt and cannot be turned off or delayed",
                code="NOT_ALLOWED",
            )
        if owner.contact_id is not None and Channel.TELEGRAM in change.channels:
            raise ValidationError(
                f"{field}.channels",
                "A contact has no Telegram chat: only users link one",
                code="NOT_ALLOWED",
            )
    before = await _stored_preferences([owner.key])
    for change in changes:
        channels = list(dict.fromkeys(c.value for c in change.channels))
        await _store(
            agency_id=actor.agency_id,
            key=owner.key,
            user_id=owner.user_id,
            contact_id=owner.contact_id,
            kind=change.kind,
            channels=channels,
            frequency=change.frequency,
        )
    if changes:
        await activity.record(
            actor,
            agency_id=actor.agency_id,
            client_id=owner.client_id,
            entity_type="contact" if owner.contact_id else "user",
            entity_id=owner.contact_id or actor.user_id,
            verb="notification_preferences_updated",
            summary=f"Notification preferences updated by {actor.name}",
            changes={
                change.kind.value: {
                    "before": _shown(before.get((owner.key, change.kind.value)), change.kind),
                    "after": f"{change.frequency.value}: "
                    + ",".join(c.value for c in change.channels),
                }
                for change in changes
            },
        )
    return await preferences(actor, contact_id)


def _shown(preference: Preference | None, kind: NotificationKind) -> str:
    value = preference or default_preference(kind)
    return f"{value.frequency.value}: " + ",".join(c.value for c in value.channels)


async def _store(
    *,
    agency_id: uuid.UUID,
    key: str,
    user_id: uuid.UUID | None,
    contact_id: uuid.UUID | None,
    kind: NotificationKind,
    channels: list[str],
    frequency: Frequency,
) -> None:
    updated = await NotificationPreference.filter(recipient_key=key, kind=kind).update(
        channels=channels, frequency=frequency, updated_at=clock.now()
    )
    if not updated:
        await NotificationPreference.create(
            agency_id=agency_id,
            user_id=user_id,
            contact_id=contact_id,
            recipient_key=key,
            kind=kind,
            channels=channels,
            frequency=frequency,
        )


@dataclass(frozen=True, slots=True)
class UnsubscribeTarget:
    agency_id: uuid.UUID
    recipient_key: str
    kind: NotificationKind
    name: str
    address: str | None


async def unsubscribe_target(token: str) -> UnsubscribeTarget:
    """Who and what an unsubscribe link is for; SignedTokenError when forged or expired."""
    payload = UrlSigner(get_settings().signing_key(), UNSUBSCRIBE_PURPOSE).verify(token)
    try:
        key, kind = payload["r"], NotificationKind(payload["k"])
        kind_of, _, raw_id = key.partition(":")
        row_id = uuid.UUID(raw_id)
    except (KeyError, ValueError):
        raise SignedTokenError("Invalid signature") from None
    if kind in TRANSACTIONAL_KINDS:
        raise SignedTokenError("Invalid signature")
    if kind_of == "user":
        found_user = await User.get_or_none(id=row_id)
        if found_user is not None:
            return UnsubscribeTarget(
                found_user.agency_id, key, kind, found_user.name, found_user.email
            )
    elif kind_of == "contact":
        contact = await Contact.get_or_none(id=row_id)
        if contact is not None:
            return UnsubscribeTarget(contact.agency_id, key, kind, contact.name, contact.email)
    raise SignedTokenError("Invalid signature")


async def unsubscribe(token: str) -> UnsubscribeTarget:
    """Turn the link's kind off for its recipient (a one-click unsubscribe); idempotent."""
    target = await unsubscribe_target(token)
    kind_of, _, raw_id = target.recipient_key.partition(":")
    stored = await _stored_preferences([target.recipient_key])
    current = stored.get((target.recipient_key, target.kind.value))
    channels = [c.value for c in (current.channels if current else DEFAULT_CHANNELS)]
    await _store(
        agency_id=target.agency_id,
        key=target.recipient_key,
        user_id=uuid.UUID(raw_id) if kind_of == "user" else None,
        contact_id=uuid.UUID(raw_id) if kind_of == "contact" else None,
        kind=target.kind,
        channels=channels,
        frequency=Frequency.OFF,
    )
    await activity.record(
        None,
        agency_id=target.agency_id,
        entity_type=kind_of,
        entity_id=uuid.UUID(raw_id),
        verb="unsubscribed",
        summary=f"{target.name} unsubscribed from {target.kind.value} by email link",
        changes={
            target.kind.value: {
                "before": _shown(current, target.kind),
                "after": f"off: {','.join(channels)}",
            }
        },
    )
    return target


# --- the agency's time zone ---------------------------------------------------------------


def clean_timezone(value: Any) -> str:
    """An IANA time zone name (``Asia/Kolkata``); ValidationError otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("timezone", "timezone must be an IANA name", code="REQUIRED")
    name = value.strip()
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            "timezone", f"Unknown time zone {name!r}: use an IANA name", code="INVALID_TIMEZONE"
        ) from None
    if name not in available_timezones() and name != "UTC":
        raise ValidationError(
            "timezone", f"Unknown time zone {name!r}: use an IANA name", code="INVALID_TIMEZONE"
        )
    return name


# --- what each domain event tells ---------------------------------------------------------


def _money(minor: int, currency: str) -> dict[str, Any]:
    return money_data(Money(minor, currency))


async def _payment_facts(payment: Payment) -> dict[str, Any]:
    """Plain data about a payment: amount, client, milestones and invoices it pays."""
    client = await Client.get(id=payment.client_id)
    allocations = await PaymentAllocation.filter(payment_id=payment.id).order_by("id")
    milestone_ids = [a.milestone_id for a in allocations if a.milestone_id is not None]
    milestones = {m.id: m for m in await Milestone.filter(id__in=milestone_ids)}
    paid = [
        (milestones[a.milestone_id], a.amount_minor)
        for a in allocations
        if a.milestone_id is not None and a.milestone_id in milestones
    ]
    invoice_ids = list(dict.fromkeys(a.invoice_id for a in allocations))
    invoices = {i.id: i for i in await Invoice.filter(id__in=invoice_ids)}
    return {
        "amount": _money(payment.amount_minor, payment.currency),
        "client_name": client.name,
        "provider": payment.provider.value,
        "reference": payment.provider_payment_id or payment.reference or str(payment.id),
        "milestones": [
            {
                "title": milestone.title,
                "kind": milestone.kind.value,
                "amount": _money(amount, payment.currency),
            }
            # The project's order, not the allocations' (random) ids.
            for milestone, amount in sorted(
                paid, key=lambda item: (item[0].position, item[0].title)
            )
        ],
        "invoice_ids": [str(i) for i in invoice_ids if i in invoices],
        "milestone_ids": [str(i) for i in await milestones_paid(allocations)],
        "invoice_numbers": [invoices[i].number for i in invoice_ids if invoices[i].number],
    }


def _confirmation_kind(milestones: list[dict[str, Any]]) -> NotificationKind:
    kinds = {m["kind"] for m in milestones}
    if kinds == {MilestoneKind.ADVANCE.value}:
        return K.ADVANCE_PAYMENT_CONFIRMATION
    if kinds == {MilestoneKind.BALANCE.value}:
        return K.BALANCE_PAYMENT_CONFIRMATION
    return K.PAYMENT_CONFIRMATION


def _shared(facts: dict[str, Any]) -> dict[str, Any]:
    """The facts every recipient's message shows (ids are for choosing recipients and files)."""
    return {key: value for key, value in facts.items() if not key.endswith("_ids")}


async def _team(payment: Payment, facts: dict[str, Any]) -> list[Recipient]:
    return await payment_team(payment.agency_id, [uuid.UUID(i) for i in facts["milestone_ids"]])


async def payment_succeeded(payment: Payment) -> None:
    """Payment received to the agency's team; a receipt (with the invoice) to the client.

    A bulk payment is one summary listing every milestone, to each recipient once.
    """
    facts = await _payment_facts(payment)
    shared = _shared(facts)
    await notify(
        K.PAYMENT_RECEIVED,
        recipients=await _team(payment, facts),
        dedupe_key=f"payment:{payment.id}:received",
        data=shared,
        agency_id=payment.agency_id,
        subject_type="payment",
        subject_id=payment.id,
    )
    paid_on = (payment.succeeded_at or clock.now()).date().isoformat()
    await notify(
        _confirmation_kind(facts["milestones"]),
        recipients=await client_side(payment.client_id),
        dedupe_key=f"payment:{payment.id}:confirmation",
        data={**shared, "paid_on": paid_on, "attach_invoice_ids": facts["invoice_ids"]},
        agency_id=payment.agency_id,
        subject_type="payment",
        subject_id=payment.id,
    )


async def payment_failed(payment: Payment) -> None:
    """A failed payment: the client gets a retry link, the agency's team an alert."""
    from settle.services import payment_link

    facts = await _payment_facts(payment)
    shared = _shared(facts)
    shared["reason"] = payment.failure_reason
    pay_url = None
    if payment.invoice_id is not None:
        invoice = await Invoice.get_or_none(id=payment.invoice_id)
        pay_url = payment_link.payment_url(invoice) if invoice else None
    await notify(
        K.PAYMENT_FAILED,
        recipients=await client_side(payment.client_id),
        dedupe_key=f"payment:{payment.id}:failed",
        data={**shared, "pay_url": pay_url},
        agency_id=payment.agency_id,
        subject_type="payment",
        subject_id=payment.id,
    )
    await notify(
        K.PAYMENT_FAILED_ALERT,
        recipients=await _team(payment, facts),
        dedupe_key=f"payment:{payment.id}:failed",
        data=shared,
        agency_id=payment.agency_id,
        subject_type="payment",
        subject_id=payment.id,
    )


async def refund_settled(payment: Payment, amount_minor: int) -> None:
    """Money given back: the client is told (a receipt; it cannot be turned off)."""
    await notify(
        K.REFUND_PROCESSED,
        agency_id=payment.agency_id,
        recipients=await client_side(payment.client_id),
        subject_type="payment",
        subject_id=payment.id,
        # The refunded total after this refund names the refund: each one raises it.
        dedupe_key=f"payment:{payment.id}:refunded:{payment.amount_refunded_minor}",
        data={
            "amount": _money(amount_minor, payment.currency),
            "payment_amount": _money(payment.amount_minor, payment.currency),
            "reference": payment.provider_payment_id or payment.reference or str(payment.id),
        },
    )


async def invoice_issued(invoice: Invoice) -> None:
    """An issued invoice: the client's lead users get it, with the PDF and the pay link.

    The primary contact gets the invoice email itself (``sendInvoice``, or a
    milestone's automatic invoice), recorded in ``Invoice.deliveries``; telling
    them here as well would send them the same invoice twice.
    """
    contact = await Contact.get_or_none(client_id=invoice.client_id, is_primary=True)
    await notify(
        K.INVOICE_READY,
        agency_id=invoice.agency_id,
        recipients=[
            recipient
            for recipient in await client_side(invoice.client_id)
            if recipient.user_id is not None
            and not (contact and contact.email and recipient.email == contact.email)
        ],
        subject_type="invoice",
        subject_id=invoice.id,
        dedupe_key=f"invoice:{invoice.id}:ready",
        data=_invoice_ready_data(invoice),
    )


def _invoice_ready_data(invoice: Invoice) -> dict[str, Any]:
    from settle.services import payment_link, settlement

    return {
        "invoice_number": invoice.number,
        "total": _money(invoice.total_minor, invoice.currency),
        "amount_due": _money(settlement.invoice_due(invoice), invoice.currency),
        "due_date": invoice.due_date.isoformat() if invoice.due_date else None,
        "pay_url": payment_link.payment_url(invoice),
        "attach_invoice_ids": [str(invoice.id)],
    }


async def invoice_document_uploaded(invoice: Invoice, key: str) -> None:
    """An issued invoice's PDF uploaded by hand: the client's contact and leads get it.

    Agencies that issue invoices elsewhere upload them here; the upload is the
    moment the client gets the document. A replacing upload sends the new one.
    """
    await notify(
        K.INVOICE_READY,
        agency_id=invoice.agency_id,
        recipients=await client_side(invoice.client_id),
        subject_type="invoice",
        subject_id=invoice.id,
        dedupe_key=f"invoice:{invoice.id}:document:{key}",
        data=_invoice_ready_data(invoice),
    )


async def milestone_decided(actor: Actor, milestone: Milestone) -> None:
    """Approved or rejected: the member who submitted the milestone is told."""
    submitter = await milestone_submitter(milestone.id)
    if submitter is None or submitter == actor.user_id:
        return
    project = await Project.get(id=milestone.project_id)
    approved = milestone.status is MilestoneStatus.APPROVED
    stamp = (milestone.approved_at if approved else milestone.updated_at) or clock.now()
    data: dict[str, Any] = {
        "milestone_title": milestone.title,
        "project_name": project.name,
        "amount": _money(milestone.amount_minor, milestone.currency),
    }
    if approved:
        data["approved_by"] = actor.name
    else:
        data.update(rejected_by=actor.name, reason=milestone.rejection_reason or "")
    await notify(
        K.MILESTONE_APPROVED if approved else K.MILESTONE_REJECTED,
        agency_id=milestone.agency_id,
        recipients=await user(submitter),
        subject_type="milestone",
        subject_id=milestone.id,
        # A milestone can be rejected, reworked and decided again: each decision is one.
        dedupe_key=f"milestone:{milestone.id}:{milestone.status.value}:{stamp.isoformat()}",
        data=data,
    )


async def payment_requested(
    invoice: Invoice,
    milestones: Sequence[Milestone],
    recipients: Sequence[Recipient],
    request_id: uuid.UUID,
) -> bool:
    """Ask the client to pay an invoice's milestones by its pay link; False when nothing is owed.

    Each explicit request is its own (``request_id``): asking again sends again.
    """
    from settle.services import payment_link, settlement

    pay_url = payment_link.payment_url(invoice)
    if pay_url is None:
        return False
    project = await Project.get(id=milestones[0].project_id)
    await notify(
        K.PAYMENT_REQUEST,
        agency_id=invoice.agency_id,
        recipients=recipients,
        subject_type="invoice",
        subject_id=invoice.id,
        dedupe_key=f"invoice:{invoice.id}:payment_request:{request_id}",
        data={
            "amount": _money(settlement.invoice_due(invoice), invoice.currency),
            "invoice_number": invoice.number,
            "project_name": project.name,
            "milestones": [
                {
                    "title": m.title,
                    "kind": m.kind.value,
                    "amount": _money(m.amount_minor, m.currency),
                }
                for m in milestones
            ],
            "pay_url": pay_url,
        },
    )
    return True


# Always there: without a bot token the Telegram client writes messages under var/telegram/.
register(TelegramSender())
