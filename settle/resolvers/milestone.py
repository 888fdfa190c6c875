"""Contract resolvers: parse input, call the milestone service, map the result."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import strawberry

from settle.resolvers.common import (
    find_one,
    mutate,
    parse_id,
    provided,
    public_errors,
    require_actor,
)
from settle.schema.common import Connection
from settle.schema.context import Info
from settle.schema.errors import (
    ConflictError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
    ValidationError,
)
from settle.schema.milestone import (
    CreateMilestoneInput,
    Milestone,
    MilestoneFilter,
    PaymentTerms,
    UpdateMilestoneInput,
)
from settle.services import milestone as milestone_service

_Errors = (
    ValidationError | NotFoundError | PermissionDeniedError | ConflictError | InvalidTransitionError
)
MilestoneResult = Annotated[Milestone | _Errors, strawberry.union("MilestoneResult")]
PaymentTermsResult = Annotated[PaymentTerms | _Errors, strawberry.union("PaymentTermsResult")]


@strawberry.type(description="The milestones whose payment was asked for, with their invoices.")
class PaymentRequested:
    milestones: list[Milestone]


RequestPaymentResult = Annotated[
    PaymentRequested | _Errors, strawberry.union("RequestPaymentResult")
]


async def request_payment(info: Info, milestone_ids: list[strawberry.ID]) -> RequestPaymentResult:
    actor = require_actor(info)

    async def run() -> PaymentRequested:
        ids = [parse_id(value, "milestoneIds") for value in milestone_ids]
        milestones = await milestone_service.request_payment(actor, ids)
        return PaymentRequested(milestones=[Milestone.from_model(m) for m in milestones])

    return await mutate(run)  # type: ignore[return-value]


async def milestones(
    info: Info,
    first: int = 20,
    after: str | None = None,
    filter: MilestoneFilter | None = None,
) -> Connection[Milestone]:
    """Milestones the caller may see: one project's by position, or all by creation."""
    actor = require_actor(info)
    flt = filter or MilestoneFilter()
    with public_errors():
        project_id = (
            None if flt.project_id is None else parse_id(flt.project_id, "filter.projectId")
        )
        page = await milestone_service.list_milestones(
            actor,
            milestone_service.MilestoneFilter(
                project_id=project_id,
                status=flt.status,
                payment_status=flt.payment_status,
                overdue=flt.overdue,
            ),
            first=first,
            after=after,
        )
    return Connection.from_page(page, Milestone.from_model)


async def milestone(info: Info, id: strawberry.ID) -> Milestone | None:
    actor = require_actor(info)
    return await find_one(
        id, lambda row_id: milestone_service.get_milestone(actor, row_id), Milestone.from_model
    )


async def project_milestones(info: Info, project_id: uuid.UUID) -> list[Milestone]:
    """Project.milestones, by position; a list of projects is batched through one loader."""
    require_actor(info)
    rows = await info.context.loaders.project_milestones.load(project_id)
    return [Milestone.from_model(row) for row in rows]


async def create_milestone(info: Info, input: CreateMilestoneInput) -> MilestoneResult:
    actor = require_actor(info)
    values: dict[str, Any] = {
        "title": input.title,
        "description": input.description,
        "amount": input.amount,
        "due_date": input.due_date,
    }
    if input.position is not None:
        values["position"] = input.position

    async def run() -> Milestone:
        return Milestone.from_model(
            await milestone_service.create_milestone(
                actor, parse_id(input.project_id, "projectId"), values
            )
        )

    return await mutate(run)  # type: ignore[return-value]


async def update_milestone(
    info: Info, id: strawberry.ID, input: UpdateMilestoneInput
) -> MilestoneResult:
    actor = require_actor(info)
    values = provided(
        {
            "title": input.title,
            "description": input.description,
            "amount": input.amount,
            "due_date": input.due_date,
            "position": input.position,
        }
    )

    async def run() -> Milestone:
        return Milestone.from_model(
            await milestone_service.update_milestone(actor, parse_id(id), values)
        )

    return await mutate(run)  # type: ignore[return-value]


async def start_milestone(info: Info, id: strawberry.ID) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(await milestone_service.start_milestone(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def submit_milestone(info: Info, id: strawberry.ID) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(await milestone_service.submit_milestone(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def approve_milestone(info: Info, id: strawberry.ID) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(await milestone_service.approve_milestone(actor, parse_id(id)))

    return await mutate(run)  # type: ignore[return-value]


async def reject_milestone(info: Info, id: strawberry.ID, reason: str) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(
            await milestone_service.reject_milestone(actor, parse_id(id), reason)
        )

    return await mutate(run)  # type: ignore[return-value]


async def cancel_milestone(
    info: Info, id: strawberry.ID, reason: str | None = None
) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(
            await milestone_service.cancel_milestone(actor, parse_id(id), reason)
        )

    return await mutate(run)  # type: ignore[return-value]


async def mark_milestone_paid(info: Info, id: strawberry.ID, reference: str) -> MilestoneResult:
    actor = require_actor(info)

    async def run() -> Milestone:
        return Milestone.from_model(
            await milestone_service.mark_milestone_paid(actor, parse_id(id), reference)
        )

    return await mutate(run)  # type: ignore[return-value]


async def apply_payment_terms(
    info: Info, project_id: strawberry.ID, total: str
) -> PaymentTermsResult:
    actor = require_actor(info)

    async def run() -> PaymentTerms:
        return PaymentTerms.from_value(
            await milestone_service.apply_payment_terms(
                actor, parse_id(project_id, "projectId"), total
            )
        )

    return await mutate(run)  # type: ignore[return-value]


@strawberry.type
class MilestoneQuery:
    milestones: Connection[Milestone] = strawberry.field(resolver=milestones)
    milestone: Milestone | None = strawberry.field(resolver=milestone)


@strawberry.type
class MilestoneMutation:
    create_milestone: MilestoneResult = strawberry.mutation(
        resolver=create_milestone, description="Add a milestone (owners and admins)."
    )
    update_milestone: MilestoneResult = strawberry.mutation(
        resolver=update_milestone,
        description="Change a milestone's terms; MILESTONE_LOCKED once approved, paid or "
        "cancelled.",
    )
    start_milestone: MilestoneResult = strawberry.mutation(
        resolver=start_milestone, description="pending or rejected → in_progress (members)."
    )
    submit_milestone: MilestoneResult = strawberry.mutation(
        resolver=submit_milestone, description="in_progress → submitted (members)."
    )
    approve_milestone: MilestoneResult = strawberry.mutation(
        resolver=approve_milestone,
        description="submitted → approved (the client lead, owners, admins).",
    )
    reject_milestone: MilestoneResult = strawberry.mutation(
        resolver=reject_milestone,
        description="submitted → rejected, with a reason (the client lead, owners, admins).",
    )
    cancel_milestone: MilestoneResult = strawberry.mutation(
        resolver=cancel_milestone,
        description="Any status before paid → cancelled (owners and admins).",
    )
    mark_milestone_paid: MilestoneResult = strawberry.mutation(
        resolver=mark_milestone_paid,
        description="approved → paid by hand, with the payment's reference (owners only).",
    )
    request_payment: RequestPaymentResult = strawberry.mutation(
        resolver=request_payment,
        description="Email the client's primary contact and lead users a request to pay these "
        "milestones, with the pay link (owners and admins). Any milestone not cancelled or paid "
        "may be asked for, whatever its workflow status; those without an invoice are issued "
        "one together, and each invoice involved is asked for what it still owes.",
    )
    apply_payment_terms: PaymentTermsResult = strawberry.mutation(
        resolver=apply_payment_terms,
        description="Create an 'Advance (N%)' and a 'Balance' milestone adding up to total, "
        "N being the project's advance percent (owners and admins).",
    )
