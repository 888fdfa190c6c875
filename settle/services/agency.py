"""Agencies: the tenant's own details and billing settings."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from settle.core import validation
from settle.core.db import lock_rows
from settle.core.errors import ValidationError
from settle.core.money import normalize_currency
from settle.core.tenancy import MANAGERS, Actor
from settle.models.agency import Agency
from settle.services import activity, notification_sweep
from settle.services.invoice import check_number_pattern, clean_rate
from settle.services.notification import clean_timezone

ADDRESS_MAX_LENGTH = 1_000
MAX_DUE_DAYS = 365


def clean_agency_fields(values: dict[str, Any]) -> dict[str, Any]:
    """Validate the agency fields present in ``values``; returns model fields."""
    cleaned: dict[str, Any] = {}
    for key, value in values.items():
        if key == "name":
            cleaned[key] = validation.required_text("name", value, max_length=200)
        elif key == "address":
            cleaned[key] = validation.optional_text("address", value, max_length=ADDRESS_MAX_LENGTH)
        elif key == "email":
            cleaned[key] = validation.email("email", value)
        elif key == "tax_id":
            cleaned[key] = validation.optional_text("taxId", value, max_length=64)
        elif key == "invoice_number_pattern":
            cleaned[key] = check_number_pattern(value)
        elif key == "invoice_due_days":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 365:
                raise ValidationError(
                    "invoiceDueDays",
                    f"invoiceDueDays must be between 0 and {MAX_DUE_DAYS}",
                    code="OUT_OF_RANGE",
                )
            cleaned[key] = value
        elif key == "default_tax_rate":
            cleaned[key] = clean_rate("defaultTaxRate", value)
        elif key == "payment_providers":
            cleaned[key] = clean_payment_providers(value)
        elif key == "timezone":
            cleaned[key] = clean_timezone(value)
        elif key == "payment_reminder_days":
            cleaned[key] = notification_sweep.clean_stage_days("paymentReminderDays", value)
        elif key == "overdue_reminder_days":
            cleaned[key] = notification_sweep.clean_stage_days("overdueReminderDays", value)
        elif key == "digest_hour":
            cleaned[key] = notification_sweep.clean_digest_hour(value)
        else:
            raise ValidationError(key, f"Unknown field {key}")
    return cleaned


PAYMENT_PROVIDER_CHOICES = ("stripe", "razorpay", "sandbox")


def clean_payment_providers(value: dict[str, str] | None) -> dict[str, str]:
    """Currency -> gateway, e.g. {"INR": "razorpay", "USD": "stripe"}; codes upper-cased."""
    cleaned: dict[str, str] = {}
    for currency, provider in (value or {}).items():
        code = normalize_currency(currency, "paymentProviders.currency")
        if provider not in PAYMENT_PROVIDER_CHOICES:
            raise ValidationError(
                "paymentProviders.provider",
                f"provider must be one of {', '.join(PAYMENT_PROVIDER_CHOICES)}",
                code="INVALID_PROVIDER",
            )
        cleaned[code] = provider
    return cleaned


async def get_agency(actor: Actor) -> Agency:
    return await Agency.get(id=actor.agency_id)


async def update_agency(actor: Actor, values: dict[str, Any]) -> Agency:
    """Change the agency's details and invoice settings (owners and admins).

    A new numbering pattern applies to invoices finalized from now on; the
    numbers already issued keep theirs.
    """
    actor.require(*MANAGERS)
    data = clean_agency_fields(values)
    agency = await lock_rows(Agency.filter(id=actor.agency_id)).get()
    before = {key: getattr(agency, key) for key in data}
    changes = activity.diff(_shown(before), _shown(data))
    if not changes:
        return agency
    agency.update_from_dict(data)
    await agency.save(update_fields=[*data.keys(), "updated_at"])
    await activity.record(
        actor,
        agency_id=agency.id,
        entity_type="agency",
        entity_id=agency.id,
        verb="updated",
        summary=f"Agency settings updated by {actor.name}",
        changes=changes,
    )
    return agency


def _shown(data: dict[str, Any]) -> dict[str, Any]:
    # Decimal(18) and Decimal("18.000") are the same rate; compare them as such.
    return {
        key: value.normalize() if isinstance(value, Decimal) else value
        for key, value in data.items()
    }
