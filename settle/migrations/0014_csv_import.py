from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from settle.models.csv_import import DuplicateAction, ImportEntity, ImportStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index
from tortoise.migrations.constraints import UniqueConstraint

class Migration(migrations.Migration):
    dependencies = [('settle', '0013_project_notify_member')]

    initial = False

    operations = [
        ops.CreateModel(
            name='CsvImport',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('created_by', fields.ForeignKeyField('settle.User', source_field='created_by_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('entity', fields.CharEnumField(description='CLIENTS: clients\nCONTACTS: contacts', enum_type=ImportEntity, max_length=20)),
                ('status', fields.CharEnumField(default=ImportStatus.AWAITING_UPLOAD, description='AWAITING_UPLOAD: awaiting_upload\nUPLOADED: uploaded\nQUEUED: queued\nRUNNING: running\nCOMPLETED: completed\nFAILED: failed', enum_type=ImportStatus, max_length=20)),
                ('filename', fields.CharField(max_length=255)),
                ('size_bytes', fields.IntField()),
                ('storage_key', fields.CharField(max_length=500)),
                ('uploaded_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('encoding', fields.CharField(null=True, max_length=20)),
                ('delimiter', fields.CharField(null=True, max_length=4)),
                ('header', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('mapping', fields.JSONField(null=True, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('on_duplicate', fields.CharEnumField(default=DuplicateAction.SKIP, description='SKIP: skip\nUPDATE: update', enum_type=DuplicateAction, max_length=10)),
                ('total_rows', fields.IntField(null=True)),
                ('rows_done', fields.IntField(default=0)),
                ('created_count', fields.IntField(default=0)),
                ('updated_count', fields.IntField(default=0)),
                ('skipped_count', fields.IntField(default=0)),
                ('failed_count', fields.IntField(default=0)),
                ('started_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('finished_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('failure_code', fields.CharField(null=True, max_length=40)),
                ('failure_message', fields.CharField(null=True, max_length=500)),
            ],
            options={'table': 'csv_import', 'app': 'settle', 'indexes': [Index(fields=['agency_id', 'created_at']), Index(fields=['status', 'updated_at'])], 'pk_attr': 'id', 'table_description': 'One CSV file imported by a user: the mapping, counters and the checkpoint of its job.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='CsvImportError',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('csv_import', fields.ForeignKeyField('settle.CsvImport', source_field='csv_import_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('row', fields.IntField()),
                ('field', fields.CharField(null=True, max_length=200)),
                ('code', fields.CharField(max_length=40)),
                ('message', fields.CharField(max_length=500)),
            ],
            options={'table': 'csv_import_error', 'app': 'settle', 'indexes': [Index(fields=['csv_import_id', 'row'])], 'pk_attr': 'id', 'table_description': 'One error of a refused row: the column it concerns, a stable code and a message.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='CsvImportFailedRow',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('csv_import', fields.ForeignKeyField('settle.CsvImport', source_field='csv_import_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('row', fields.IntField()),
                ('cells', fields.JSONField(encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
            ],
            options={'table': 'csv_import_failed_row', 'app': 'settle', 'unique_together': (('csv_import_id', 'row'),), 'pk_attr': 'id', 'table_description': 'A data row the import refused, with its cells as read, for the failed-rows file.'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='Client',
            name='external_id',
            field=fields.CharField(null=True, max_length=100),
        ),
        ops.AddConstraint(
            model_name='Client',
            constraint=UniqueConstraint(fields=('agency_id', 'external_id'), name=None),
        ),
    ]
