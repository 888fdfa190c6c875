"""Account actors: invitation emails."""

from __future__ import annotations

import logging
import uuid

from settle.core.settings import get_settings
from settle.notifications.email import EmailDeliveryError, build_message, deliver
from settle.notifications.templates import render_email
from settle.services import auth as auth_service
from settle.tasks.broker import actor

log = logging.getLogger(__name__)


@actor("auth.send_invitation", max_retries=8, min_backoff=5_000, max_backoff=600_000)
async def send_invitation(invitation_id: str) -> None:
    """Email an invitation link; skipped once the invitation is accepted or revoked."""
    settings = get_settings()
    found = await auth_service.invitation_for_delivery(uuid.UUID(invitation_id))
    if found is None:
        return
    invitation, agency, inviter = found
    token = auth_service.invitation_token(settings, invitation.id)
    rendered = render_email(
        "invitation",
        agency_name=agency.name,
        inviter_name=inviter.name if inviter else agency.name,
        role=invitation.role.value,
        accept_url=settings.invitation_link(token),
        expires_at=invitation.expires_at,
    )
    message = build_message(
        settings=settings,
        to=[invitation.email],
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
    )
    try:
        await deliver(message, settings=settings)
    except EmailDeliveryError as exc:
        if exc.temporary:
            raise
        # A permanent refusal (unknown mailbox) will not change on retry.
        log.error(
            "invitation.email_rejected",
            extra={"invitation_id": invitation_id, "smtp_code": exc.smtp_code},
        )
