from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from settle.models.export import ExportEntity, ExportStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('settle', '0014_csv_import')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Export',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('requested_by', fields.ForeignKeyField('settle.User', source_field='requested_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('client_id', fields.UUIDField(null=True, db_index=True)),
                ('entity', fields.CharEnumField(description='CLIENTS: clients\nCONTACTS: contacts\nINVOICES: invoices\nPAYMENTS: payments\nTIME_ENTRIES: time_entries', enum_type=ExportEntity, max_length=20)),
                ('columns', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('filters', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('status', fields.CharEnumField(default=ExportStatus.PENDING, description='PENDING: pending\nRUNNING: running\nCOMPLETED: completed\nFAILED: failed\nEXPIRED: expired', enum_type=ExportStatus, max_length=20)),
                ('rows', fields.IntField(default=0)),
                ('total_rows', fields.IntField(null=True)),
                ('attempt', fields.IntField(default=0)),
                ('heartbeat_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('file_key', fields.CharField(null=True, max_length=500)),
                ('size_bytes', fields.BigIntField(null=True)),
                ('error', fields.TextField(null=True, unique=False)),
                ('error_code', fields.CharField(null=True, max_length=40)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'export', 'app': 'settle', 'indexes': [Index(fields=['agency_id', 'created_at']), Index(fields=['status', 'updated_at'])], 'pk_attr': 'id', 'table_description': 'A CSV export of one entity: a worker writes it to storage, a signed URL serves it.'},
            bases=['TenantModel'],
        ),
    ]

