"""Agency resolvers: the agency's own details and invoice settings."""

from __future__ import annotations

from typing import Annotated

import strawberry

from settle.resolvers.common import mutate, provided, require_actor
from settle.schema.auth import Agency
from settle.schema.context import Info
from settle.schema.errors import PermissionDeniedError, ValidationError
from settle.services import agency as agency_service

AgencyResult = Annotated[
    Agency | ValidationError | PermissionDeniedError, strawberry.union("AgencyResult")
]


@strawberry.input(description="Payments in this currency go through this gateway.")
class PaymentProviderChoiceInput:
    currency: str
    provider: str = strawberry.field(description="stripe, razorpay or sandbox.")


@strawberry.input(description="Only the fields given change.")
class UpdateAgencyInput:
    name: str | None = strawberry.UNSET
    address: str | None = strawberry.UNSET
    email: str | None = strawberry.UNSET
    tax_id: str | None = strawberry.UNSET
    invoice_number_pattern: str | None = strawberry.UNSET
    invoice_due_days: int | None = strawberry.UNSET
    default_tax_rate: str | None = strawberry.UNSET
    payment_providers: list[PaymentProviderChoiceInput] | None = strawberry.field(
        default=strawberry.UNSET,
        description="The whole currency → gateway map (replaces the previous one).",
    )
    timezone: str | None = strawberry.field(
        default=strawberry.UNSET, description='An IANA time zone name, e.g. "Asia/Kolkata".'
    )
    payment_reminder_days: list[int] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Days after a payment request to remind of an unpaid advance or balance.",
    )
    overdue_reminder_days: list[int] | None = strawberry.field(
        default=strawberry.UNSET,
        description="Days after its due date to remind of an unpaid invoice.",
    )
    digest_hour: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="Local hour (0-23) of the daily digest and the overdue reminders.",
    )


async def update_agency(info: Info, input: UpdateAgencyInput) -> AgencyResult:
    actor = require_actor(info)
    values = provided(
        {
            "name": input.name,
            "address": input.address,
            "email": input.email,
            "tax_id": input.tax_id,
            "invoice_number_pattern": input.invoice_number_pattern,
            "invoice_due_days": input.invoice_due_days,
            "default_tax_rate": input.default_tax_rate,
            "timezone": input.timezone,
            "payment_reminder_days": input.payment_reminder_days,
            "overdue_reminder_days": input.overdue_reminder_days,
            "digest_hour": input.digest_hour,
            "payment_providers": (
                input.payment_providers
                if not isinstance(input.payment_providers, list)
                else {choice.currency: choice.provider for choice in input.payment_providers}
            ),
        }
    )

    async def run() -> Agency:
        return Agency.from_model(await agency_service.update_agency(actor, values))

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class AgencyMutation:
    update_agency: AgencyResult = strawberry.mutation(
        resolver=update_agency,
        description="Change the agency's details and invoice settings (owners and admins); a "
        "new numbering pattern applies to invoices finalized from then on.",
    )
