"""Projects: budgets, payment terms and what has been spent against them."""

from __future__ import annotations

import uuid

from settle.core.db import lock_rows
from settle.core.money import Money
from settle.core.tenancy import Actor
from settle.models.project import Project, TimeEntry
from settle.services import activity

# Budget thresholds (percent of budget) announced on the timeline, once each.
BUDGET_ALERT_THRESHOLDS = (80, 100)


def entry_amount_minor(minutes: int, hourly_rate_minor: int) -> int:
    """The billable amount of one entry: minutes x rate / 60, rounded half up to the minor unit.

    Rounding per entry (not per project) means an entry's amount never changes
    when other entries are added, and an invoice line built from entries adds up.
    """
    return (minutes * hourly_rate_minor * 2 + 60) // 120


async def billable_amount_minor(project_id: uuid.UUID) -> int:
    """What the project's billable time is worth at the rates it was logged at."""
    rows = await TimeEntry.filter(
        project_id=project_id,
        billable=True,
        is_running=False,
        minutes__isnull=False,
        hourly_rate_minor__isnull=False,
    ).values_list("minutes", "hourly_rate_minor")
    return sum(entry_amount_minor(int(m), int(r)) for m, r in rows)


async def record_budget_alerts(actor: Actor | None, project_id: uuid.UUID) -> None:
    """Announce on the timeline when billable time first crosses 80% and 100% of the budget.

    Call inside the transaction that changed the project's time. The project row
    is locked so two requests crossing a threshold at once announce it once.
    """
    project = await lock_rows(Project.filter(id=project_id)).first()
    if project is None or not project.billable or not project.budget_minor:
        return
    spent = await billable_amount_minor(project.id)
    reached = max(
        (t for t in BUDGET_ALERT_THRESHOLDS if spent * 100 >= project.budget_minor * t),
        default=0,
    )
    if reached <= project.budget_alert_level:
        return
    budget = Money(project.budget_minor, project.currency)
    used = Money(spent, project.currency)
    project.budget_alert_level = reached
    await project.save(update_fields=["budget_alert_level", "updated_at"])
    await activity.record(
        actor,
        agency_id=project.agency_id,
        client_id=project.client_id,
        entity_type="project",
        entity_id=project.id,
        verb=f"budget_{reached}",
        summary=(
            f"{project.name} has used {reached}% of its budget "
            f"({used.format_amount()} of {budget.format_amount()} {project.currency})"
        ),
        changes={"budgetUsedPercent": {"before": None, "after": reached}},
    )
