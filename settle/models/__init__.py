"""Tortoise models, one module per domain; Tortoise discovers them from here."""

from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Invitation, Role, User, UserSession
from settle.models.client import Client, Contact, Note
from settle.models.deliverable import (
    Deliverable,
    DeliverableDownload,
    DeliverableKind,
    DeliverableStatus,
)
from settle.models.export import Export, ExportEntity, ExportStatus
from settle.models.invoice import (
    CreditNote,
    DeliveryStatus,
    DiscountKind,
    Invoice,
    InvoiceCounter,
    InvoiceDelivery,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceSource,
    InvoiceStatus,
)
from settle.models.milestone import (
    Milestone,
    MilestoneKind,
    MilestonePaymentStatus,
    MilestoneStatus,
)
from settle.models.notification import (
    Channel,
    Frequency,
    Notification,
    NotificationKind,
    NotificationPreference,
    NotificationStatus,
)
from settle.models.outbox import OutboxKind, OutboxMessage
from settle.models.payment import (
    OfflineMethod,
    Payment,
    PaymentAllocation,
    PaymentAuditEntry,
    PaymentProvider,
    PaymentStatus,
    Refund,
    RefundStatus,
    WebhookEvent,
)
from settle.models.project import (
    Project,
    ProjectStatus,
    Task,
    TaskPriority,
    TaskStatus,
    TimeEntry,
)
from settle.models.telegram import (
    TelegramChat,
    TelegramLinkToken,
    TelegramUnlinkReason,
    TelegramUpdate,
)

__all__ = [
    "ActivityEvent",
    "Agency",
    "Channel",
    "Client",
    "Contact",
    "CreditNote",
    "Deliverable",
    "DeliverableDownload",
    "DeliverableKind",
    "DeliverableStatus",
    "DeliveryStatus",
    "DiscountKind",
    "Export",
    "ExportEntity",
    "ExportStatus",
    "Frequency",
    "Invitation",
    "Invoice",
    "InvoiceCounter",
    "InvoiceDelivery",
    "InvoiceLine",
    "InvoiceLineKind",
    "InvoiceSource",
    "InvoiceStatus",
    "Milestone",
    "MilestoneKind",
    "MilestonePaymentStatus",
    "MilestoneStatus",
    "Note",
    "Notification",
    "NotificationKind",
    "NotificationPreference",
    "NotificationStatus",
    "OfflineMethod",
    "OutboxKind",
    "OutboxMessage",
    "Payment",
    "PaymentAllocation",
    "PaymentAuditEntry",
    "PaymentProvider",
    "PaymentStatus",
    "Project",
    "ProjectStatus",
    "Refund",
    "RefundStatus",
    "Role",
    "Task",
    "TaskPriority",
    "TaskStatus",
    "TelegramChat",
    "TelegramLinkToken",
    "TelegramUnlinkReason",
    "TelegramUpdate",
    "TimeEntry",
    "User",
    "UserSession",
    "WebhookEvent",
]
