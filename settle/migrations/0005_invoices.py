from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from decimal import Decimal
from json import dumps, loads
from settle.models.invoice import DeliveryStatus, DiscountKind, InvoiceLineKind, InvoiceSource, InvoiceStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('settle', '0004_one_running_timer')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Invoice',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('client', fields.ForeignKeyField('settle.Client', source_field='client_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('project', fields.ForeignKeyField('settle.Project', source_field='project_id', null=True, db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('currency', fields.CharField(max_length=3)),
                ('status', fields.CharEnumField(default=InvoiceStatus.DRAFT, description='DRAFT: draft\nSENT: sent\nVIEWED: viewed\nPARTIALLY_PAID: partially_paid\nPAID: paid\nOVERDUE: overdue\nVOID: void', enum_type=InvoiceStatus, max_length=20)),
                ('source', fields.CharEnumField(default=InvoiceSource.MANUAL, description='MANUAL: manual\nTIME_ENTRIES: time_entries\nMILESTONES: milestones\nMILESTONE_APPROVAL: milestone_approval', enum_type=InvoiceSource, max_length=20)),
                ('number', fields.CharField(null=True, max_length=64)),
                ('issue_date', fields.DateField(null=True)),
                ('due_date', fields.DateField(null=True)),
                ('notes', fields.TextField(null=True, unique=False)),
                ('terms', fields.TextField(null=True, unique=False)),
                ('tax_rate', fields.DecimalField(default=Decimal('0'), max_digits=6, decimal_places=3)),
                ('discount_kind', fields.CharEnumField(null=True, description='AMOUNT: amount\nPERCENT: percent', enum_type=DiscountKind, max_length=10)),
                ('discount_percent', fields.DecimalField(null=True, max_digits=6, decimal_places=3)),
                ('discount_amount_minor', fields.BigIntField(null=True)),
                ('subtotal_minor', fields.BigIntField(default=0)),
                ('discount_minor', fields.BigIntField(default=0)),
                ('tax_minor', fields.BigIntField(default=0)),
                ('total_minor', fields.BigIntField(default=0)),
                ('amount_paid_minor', fields.BigIntField(default=0)),
                ('issued_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('viewed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('overdue_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('paid_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('voided_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('void_reason', fields.TextField(null=True, unique=False)),
                ('last_sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('pdf_key', fields.CharField(null=True, max_length=500)),
                ('pdf_rendered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('uploaded_pdf_key', fields.CharField(null=True, max_length=500)),
                ('uploaded_pdf_filename', fields.CharField(null=True, max_length=255)),
                ('uploaded_pdf_size', fields.BigIntField(null=True)),
                ('uploaded_pdf_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by', fields.ForeignKeyField('settle.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'invoice', 'app': 'settle', 'unique_together': (('agency_id', 'number'),), 'indexes': [Index(fields=['agency_id', 'status']), Index(fields=['agency_id', 'created_at'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='InvoiceCounter',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('scope', fields.CharField(max_length=100)),
                ('last_value', fields.IntField(default=0)),
            ],
            options={'table': 'invoice_counter', 'app': 'settle', 'unique_together': (('agency_id', 'scope'),), 'pk_attr': 'id', 'table_description': 'The last number issued in one numbering scope of an agency (``INV-2026-#``).'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='InvoiceDelivery',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('invoice', fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', db_index=True, db_constraint=True, to_field='id', related_name='deliveries', on_delete=OnDelete.CASCADE)),
                ('recipients', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('cc', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('message', fields.TextField(null=True, unique=False)),
                ('status', fields.CharEnumField(default=DeliveryStatus.PENDING, description='PENDING: pending\nSENT: sent\nFAILED: failed', enum_type=DeliveryStatus, max_length=10)),
                ('attempts', fields.IntField(default=0)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('requested_by', fields.ForeignKeyField('settle.User', source_field='requested_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'invoice_delivery', 'app': 'settle', 'pk_attr': 'id', 'table_description': 'One request to email an invoice, and how its delivery went.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='InvoiceLine',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('invoice', fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', db_index=True, db_constraint=True, to_field='id', related_name='lines', on_delete=OnDelete.CASCADE)),
                ('kind', fields.CharEnumField(default=InvoiceLineKind.MANUAL, description='MANUAL: manual\nMILESTONE: milestone\nTIME: time', enum_type=InvoiceLineKind, max_length=10)),
                ('position', fields.IntField(default=0)),
                ('description', fields.CharField(max_length=1000)),
                ('quantity', fields.DecimalField(max_digits=12, decimal_places=2)),
                ('unit_price_minor', fields.BigIntField()),
                ('tax_rate', fields.DecimalField(null=True, max_digits=6, decimal_places=3)),
                ('amount_minor', fields.BigIntField(default=0)),
                ('discount_minor', fields.BigIntField(default=0)),
                ('tax_minor', fields.BigIntField(default=0)),
                ('milestone', fields.ForeignKeyField('settle.Milestone', source_field='milestone_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
            ],
            options={'table': 'invoice_line', 'app': 'settle', 'indexes': [Index(fields=['invoice_id', 'position'])], 'pk_attr': 'id'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='ActivityEvent',
            name='internal',
            field=fields.BooleanField(default=False),
        ),
        ops.AddField(
            model_name='Agency',
            name='address',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='Agency',
            name='default_tax_rate',
            field=fields.DecimalField(default=Decimal('0'), max_digits=6, decimal_places=3),
        ),
        ops.AddField(
            model_name='Agency',
            name='email',
            field=fields.CharField(null=True, max_length=254),
        ),
        ops.AddField(
            model_name='Agency',
            name='invoice_due_days',
            field=fields.SmallIntField(default=30),
        ),
        ops.AddField(
            model_name='Agency',
            name='invoice_number_pattern',
            field=fields.CharField(default='INV-{YYYY}-{SEQ:4}', max_length=100),
        ),
        ops.AddField(
            model_name='Agency',
            name='tax_id',
            field=fields.CharField(null=True, max_length=64),
        ),
        ops.AddField(
            model_name='Milestone',
            name='invoice',
            field=fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL),
        ),
        ops.AddField(
            model_name='Milestone',
            name='invoice_error',
            field=fields.TextField(null=True, unique=False),
        ),
    ]
