"""Invoices: line items, per-agency numbering and email deliveries."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields

from settle.models.base import TenantModel

if TYPE_CHECKING:
    from settle.models.agency import User
    from settle.models.client import Client
    from settle.models.milestone import Milestone
    from settle.models.project import Project


class InvoiceStatus(StrEnum):
    DRAFT = "draft"
    SENT = "sent"
    VIEWED = "viewed"
    PARTIALLY_PAID = "partially_paid"
    PAID = "paid"
    OVERDUE = "overdue"
    VOID = "void"


class InvoiceSource(StrEnum):
    MANUAL = "manual"
    TIME_ENTRIES = "time_entries"
    MILESTONES = "milestones"
    MILESTONE_APPROVAL = "milestone_approval"


class DiscountKind(StrEnum):
    AMOUNT = "amount"
    PERCENT = "percent"


class InvoiceLineKind(StrEnum):
    MANUAL = "manual"
    MILESTONE = "milestone"
    TIME = "time"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Invoice(TenantModel):
    client: fields.ForeignKeyRelation[Client] = fields.ForeignKeyField(
        "settle.Client", related_name=False, on_delete=fields.RESTRICT, db_index=True
    )
    client_id: uuid.UUID
    project: fields.ForeignKeyNullableRelation[Project] = fields.ForeignKeyField(
        "settle.Project", related_name=False, null=True, on_delete=fields.RESTRICT, db_index=True
    )
    project_id: uuid.UUID | None
    currency = fields.CharField(max_length=3)
    status = fields.CharEnumField(InvoiceStatus, max_length=20, default=InvoiceStatus.DRAFT)
    source = fields.CharEnumField(InvoiceSource, max_length=20, default=InvoiceSource.MANUAL)
    # Assigned at finalization from the agency's counter; null while a draft.
    number = fields.CharField(max_length=64, null=True)
    issue_date: date | None = fields.DateField(null=True)
    # Set on a draft only when chosen by hand; finalization fills in the terms' date.
    due_date: date | None = fields.DateField(null=True)
    notes = fields.TextField(null=True)
    terms = fields.TextField(null=True)
    # Percentages with up to three decimals (18, 12.5, 7.375).
    tax_rate: Decimal = fields.DecimalField(max_digits=6, decimal_places=3, default=Decimal(0))
    discount_kind = fields.CharEnumField(DiscountKind, max_length=10, null=True)
    discount_percent: Decimal | None = fields.DecimalField(
        max_digits=6, decimal_places=3, null=True
    )
    discount_amount_minor: int | None = fields.BigIntField(null=True)
    # Computed by the server from the lines after every change (services.invoice_totals).
    subtotal_minor: int = fields.BigIntField(default=0)
    discount_minor: int = fields.BigIntField(default=0)
    tax_minor: int = fields.BigIntField(default=0)
    total_minor: int = fields.BigIntField(default=0)
    amount_paid_minor: int = fields.BigIntField(default=0)
    # Given back out of what was paid (refunds); the paid amount keeps what was received.
    amount_refunded_minor: int = fields.BigIntField(default=0)
    # Forgiven by credit notes: no longer owed, though never received.
    amount_credited_minor: int = fields.BigIntField(default=0)
    issued_at = fields.DatetimeField(null=True)
    viewed_at = fields.DatetimeField(null=True)
    overdue_at = fields.DatetimeField(null=True)
    paid_at = fields.DatetimeField(null=True)
    voided_at = fields.DatetimeField(null=True)
    void_reason = fields.TextField(null=True)
    last_sent_at = fields.DatetimeField(null=True)
    # The rendered PDF of the issued invoice, written once by a worker.
    pdf_key = fields.CharField(max_length=500, null=True)
    pdf_rendered_at = fields.DatetimeField(null=True)
    # A PDF issued elsewhere and uploaded by hand; when present it is the invoice's document.
    uploaded_pdf_key = fields.CharField(max_length=500, null=True)
    uploaded_pdf_filename = fields.CharField(max_length=255, null=True)
    uploaded_pdf_size: int | None = fields.BigIntField(null=True)
    uploaded_pdf_at = fields.DatetimeField(null=True)
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None

    class Meta:
        table = "invoice"
        unique_together = (("agency_id", "number"),)
        indexes = (("agency_id", "status"), ("agency_id", "created_at"))


class InvoiceLine(TenantModel):
    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name="lines", on_delete=fields.CASCADE, db_index=True
    )
    invoice_id: uuid.UUID
    kind = fields.CharEnumField(InvoiceLineKind, max_length=10, default=InvoiceLineKind.MANUAL)
    position = fields.IntField(default=0)
    description = fields.CharField(max_length=1000)
    quantity: Decimal = fields.DecimalField(max_digits=12, decimal_places=2)
    unit_price_minor: int = fields.BigIntField()
    # Null: the invoice's rate applies.
    tax_rate: Decimal | None = fields.DecimalField(max_digits=6, decimal_places=3, null=True)
    # Computed with the invoice's totals: the line amount, its share of the discount, its tax.
    amount_minor: int = fields.BigIntField(default=0)
    discount_minor: int = fields.BigIntField(default=0)
    tax_minor: int = fields.BigIntField(default=0)
    milestone: fields.ForeignKeyNullableRelation[Milestone] = fields.ForeignKeyField(
        "settle.Milestone", related_name=False, null=True, on_delete=fields.RESTRICT
    )
    milestone_id: uuid.UUID | None

    class Meta:
        table = "invoice_line"
        indexes = (("invoice_id", "position"),)


class InvoiceCounter(TenantModel):
    """The last number issued in one numbering scope of an agency (``INV-2026-#``)."""

    scope = fields.CharField(max_length=100)
    last_value = fields.IntField(default=0)

    class Meta:
        table = "invoice_counter"
        unique_together = (("agency_id", "scope"),)


class InvoiceDelivery(TenantModel):
    """One request to email an invoice, and how its delivery went."""

    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name="deliveries", on_delete=fields.CASCADE, db_index=True
    )
    invoice_id: uuid.UUID
    recipients: list[str] = fields.JSONField(default=list)
    cc: list[str] = fields.JSONField(default=list)
    message = fields.TextField(null=True)
    status = fields.CharEnumField(DeliveryStatus, max_length=10, default=DeliveryStatus.PENDING)
    attempts = fields.IntField(default=0)
    last_error = fields.TextField(null=True)
    sent_at = fields.DatetimeField(null=True)
    requested_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    requested_by_id: uuid.UUID | None

    class Meta:
        table = "invoice_delivery"


class CreditNote(TenantModel):
    """Money an agency forgives on an issued invoice: it reduces what is owed.

    Numbered in the agency's own gapless credit note sequence, like invoices.
    """

    invoice: fields.ForeignKeyRelation[Invoice] = fields.ForeignKeyField(
        "settle.Invoice", related_name="credit_notes", on_delete=fields.RESTRICT, db_index=True
    )
    invoice_id: uuid.UUID
    client_id = fields.UUIDField(db_index=True)
    number = fields.CharField(max_length=64)
    amount_minor: int = fields.BigIntField()
    currency = fields.CharField(max_length=3)
    reason = fields.TextField()
    issue_date: date = fields.DateField()
    # The rendered PDF, written once by a worker.
    pdf_key = fields.CharField(max_length=500, null=True)
    pdf_rendered_at = fields.DatetimeField(null=True)
    created_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "settle.User", related_name=False, null=True, on_delete=fields.SET_NULL
    )
    created_by_id: uuid.UUID | None

    class Meta:
        table = "credit_note"
        unique_together = (("agency_id", "number"),)
        indexes = (("agency_id", "created_at"),)
