from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from settle.models.payment import OfflineMethod, PaymentProvider, PaymentStatus, RefundStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('settle', '0005_invoices')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Payment',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('client', fields.ForeignKeyField('settle.Client', source_field='client_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('project', fields.ForeignKeyField('settle.Project', source_field='project_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('invoice', fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('provider', fields.CharEnumField(description='STRIPE: stripe\nRAZORPAY: razorpay\nSANDBOX: sandbox\nOFFLINE: offline', enum_type=PaymentProvider, max_length=20)),
                ('status', fields.CharEnumField(default=PaymentStatus.CREATED, description='CREATED: created\nPENDING: pending\nSUCCEEDED: succeeded\nFAILED: failed\nCANCELLED: cancelled\nPARTIALLY_REFUNDED: partially_refunded\nREFUNDED: refunded', enum_type=PaymentStatus, max_length=20)),
                ('amount_minor', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('amount_refunded_minor', fields.BigIntField(default=0)),
                ('provider_order_id', fields.CharField(null=True, db_index=True, max_length=255)),
                ('provider_payment_id', fields.CharField(null=True, max_length=255)),
                ('checkout_url', fields.CharField(null=True, max_length=2000)),
                ('client_secret', fields.CharField(null=True, max_length=500)),
                ('method', fields.CharEnumField(null=True, description='BANK_TRANSFER: bank_transfer\nCASH: cash\nCRYPTO: crypto\nOTHER: other', enum_type=OfflineMethod, max_length=20)),
                ('reference', fields.CharField(null=True, max_length=255)),
                ('explorer_url', fields.CharField(null=True, max_length=2000)),
                ('succeeded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failure_reason', fields.TextField(null=True, unique=False)),
                ('flagged_reason', fields.TextField(null=True, unique=False)),
                ('reconcile_attempts', fields.IntField(default=0)),
                ('last_reconciled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by', fields.ForeignKeyField('settle.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'payment', 'app': 'settle', 'unique_together': (('provider', 'provider_payment_id'),), 'indexes': [Index(fields=['agency_id', 'status']), Index(fields=['agency_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='PaymentAllocation',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('payment', fields.ForeignKeyField('settle.Payment', source_field='payment_id', db_index=True, db_constraint=True, to_field='id', related_name='allocations', on_delete=OnDelete.CASCADE)),
                ('invoice', fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('milestone', fields.ForeignKeyField('settle.Milestone', source_field='milestone_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('amount_minor', fields.BigIntField()),
                ('amount_refunded_minor', fields.BigIntField(default=0)),
            ],
            options={'table': 'payment_allocation', 'app': 'settle', 'pk_attr': 'id', 'table_description': 'The part of a payment that pays one invoice, and the milestone it settles if any.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='PaymentAuditEntry',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('agency_id', fields.UUIDField(db_index=True)),
                ('payment_id', fields.UUIDField(db_index=True)),
                ('actor_id', fields.UUIDField(null=True)),
                ('source', fields.CharField(max_length=40)),
                ('action', fields.CharField(max_length=60)),
                ('before', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('after', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('reason', fields.TextField(null=True, unique=False)),
                ('request_id', fields.CharField(null=True, max_length=100)),
                ('webhook_event_id', fields.UUIDField(null=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'payment_audit_entry', 'app': 'settle', 'indexes': [Index(fields=['payment_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'Append-only: who or which gateway did what to a payment, before and after, and why.'},
            bases=['Model'],
        ),
        ops.CreateModel(
            name='Refund',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('payment', fields.ForeignKeyField('settle.Payment', source_field='payment_id', db_index=True, db_constraint=True, to_field='id', related_name='refunds', on_delete=OnDelete.RESTRICT)),
                ('amount_minor', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('reason', fields.TextField(unique=False)),
                ('status', fields.CharEnumField(default=RefundStatus.PENDING, description='PENDING: pending\nSUCCEEDED: succeeded\nFAILED: failed', enum_type=RefundStatus, max_length=20)),
                ('provider_refund_id', fields.CharField(null=True, max_length=255)),
                ('failure_reason', fields.TextField(null=True, unique=False)),
                ('settled_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by', fields.ForeignKeyField('settle.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'refund', 'app': 'settle', 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='WebhookEvent',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('provider', fields.CharEnumField(description='STRIPE: stripe\nRAZORPAY: razorpay\nSANDBOX: sandbox\nOFFLINE: offline', enum_type=PaymentProvider, max_length=20)),
                ('event_id', fields.CharField(max_length=255)),
                ('event_type', fields.CharField(max_length=100)),
                ('payload', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('agency_id', fields.UUIDField(null=True, db_index=True)),
                ('payment_id', fields.UUIDField(null=True, db_index=True)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('processed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('outcome', fields.CharField(null=True, max_length=20)),
                ('attempts', fields.IntField(default=0)),
                ('last_error', fields.TextField(null=True, unique=False)),
            ],
            options={'table': 'webhook_event', 'app': 'settle', 'unique_together': (('provider', 'event_id'),), 'pk_attr': 'id', 'table_description': 'A verified gateway event, stored before it is acknowledged and processed once.'},
            bases=['Model'],
        ),
        ops.AddField(
            model_name='Agency',
            name='payment_providers',
            field=fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads),
        ),
        ops.AddField(
            model_name='Invoice',
            name='amount_refunded_minor',
            field=fields.BigIntField(default=0),
        ),
    ]
