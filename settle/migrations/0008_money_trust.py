from tortoise import migrations
from tortoise.migrations import operations as ops
from settle.models.payment import PaymentStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('settle', '0007_payment_audit_append_only')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CreditNote',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('invoice', fields.ForeignKeyField('settle.Invoice', source_field='invoice_id', db_index=True, db_constraint=True, to_field='id', related_name='credit_notes', on_delete=OnDelete.RESTRICT)),
                ('client_id', fields.UUIDField(db_index=True)),
                ('number', fields.CharField(max_length=64)),
                ('amount_minor', fields.BigIntField()),
                ('currency', fields.CharField(max_length=3)),
                ('reason', fields.TextField(unique=False)),
                ('issue_date', fields.DateField()),
                ('pdf_key', fields.CharField(null=True, max_length=500)),
                ('pdf_rendered_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('created_by', fields.ForeignKeyField('settle.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
            ],
            options={'table': 'credit_note', 'app': 'settle', 'unique_together': (('agency_id', 'number'),), 'indexes': [Index(fields=['agency_id', 'created_at'])], 'pk_attr': 'id', 'table_description': 'Money an agency forgives on an issued invoice: it reduces what is owed.'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='Invoice',
            name='amount_credited_minor',
            field=fields.BigIntField(default=0),
        ),
        ops.AddField(
            model_name='Milestone',
            name='amount_credited_minor',
            field=fields.BigIntField(default=0),
        ),
        ops.AlterField(
            model_name='Payment',
            name='status',
            field=fields.CharEnumField(default=PaymentStatus.CREATED, description='CREATED: created\nPENDING: pending\nSUCCEEDED: succeeded\nFAILED: failed\nCANCELLED: cancelled\nPARTIALLY_REFUNDED: partially_refunded\nREFUNDED: refunded\nSUPERSEDED: superseded', enum_type=PaymentStatus, max_length=20),
        ),
        ops.AddField(
            model_name='Payment',
            name='auto_refund_reason',
            field=fields.TextField(null=True, unique=False),
        ),
        ops.AddField(
            model_name='Payment',
            name='superseded_by_id',
            field=fields.UUIDField(null=True),
        ),
    ]
