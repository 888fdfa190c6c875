"""Bus channel names, one place so publishers and subscribers agree."""

from __future__ import annotations

import re
import uuid


def activity(agency_id: uuid.UUID | str) -> str:
    """Timeline events of one agency."""
    return f"settle.agency.{agency_id}.activity"


def payments(agency_id: uuid.UUID | str) -> str:
    """Payment status changes of one agency."""
    return f"settle.agency.{agency_id}.payments"


def sessions() -> str:
    """Sessions ended (logout, password change, removal): every API process re-checks its
    open websockets of the user named in the message."""
    return "settle.sessions.ended"


def milestones(agency_id: uuid.UUID | str) -> str:
    """Milestone changes of one agency: status, and the money and terms a project's payment
    status is computed from."""
    return f"settle.agency.{agency_id}.milestones"


def invoices(agency_id: uuid.UUID | str) -> str:
    """Invoice status changes of one agency."""
    return f"settle.agency.{agency_id}.invoices"


def exports(agency_id: uuid.UUID | str) -> str:
    """CSV exports of one agency: claimed, progressing, completed or failed."""
    return f"settle.agency.{agency_id}.exports"


def imports(agency_id: uuid.UUID | str) -> str:
    """Progress of one agency's CSV imports."""
    return f"settle.agency.{agency_id}.imports"


# The agency channels whose events the agency's stream records: those of the
# subscriptions that resume from a cursor. Import and export progress is heard live
# only (its subscriptions show a job's latest state), and a long job's many updates
# would crowd real events out of a stream bounded in entries.
_STREAMED_CHANNEL = re.compile(
    r"\Asettle\.agency\.([0-9a-f-]{36})\.(?:activity|payments|milestones|invoices)\Z"
)


def agency_of(channel: str) -> str | None:
    """The agency whose stream records ``channel``'s events; None for a channel without one."""
    match = _STREAMED_CHANNEL.match(channel)
    return match[1] if match else None


def stream(agency_id: uuid.UUID | str) -> str:
    """The Redis stream of every event of one agency, in the order published."""
    return f"settle.stream.{agency_id}"
