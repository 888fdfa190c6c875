from tortoise import migrations
from tortoise.migrations import operations as ops
import functools
from json import dumps, loads
from settle.models.notification import Channel, Frequency, NotificationKind, NotificationStatus
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields
from tortoise.indexes import Index

class Migration(migrations.Migration):
    dependencies = [('settle', '0010_telegram')]

    initial = False

    operations = [
        ops.CreateModel(
            name='Notification',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('kind', fields.CharEnumField(description='PAYMENT_REQUEST: payment_request\nADVANCE_PAYMENT_CONFIRMATION: advance_payment_confirmation\nBALANCE_PAYMENT_CONFIRMATION: balance_payment_confirmation\nPAYMENT_CONFIRMATION: payment_confirmation\nPAYMENT_FAILED: payment_failed\nADVANCE_PAYMENT_REMINDER: advance_payment_reminder\nBALANCE_PAYMENT_REMINDER: balance_payment_reminder\nINVOICE_READY: invoice_ready\nINVOICE_OVERDUE: invoice_overdue\nACCESS_EXPIRING: access_expiring\nACCESS_EXPIRED: access_expired\nREFUND_PROCESSED: refund_processed\nPAYMENT_RECEIVED: payment_received\nPAYMENT_FAILED_ALERT: payment_failed_alert\nINVOICE_UPLOAD_REMINDER: invoice_upload_reminder\nDAILY_DIGEST: daily_digest\nMILESTONE_APPROVED: milestone_approved\nMILESTONE_REJECTED: milestone_rejected', enum_type=NotificationKind, max_length=40)),
                ('channel', fields.CharEnumField(description='EMAIL: email\nTELEGRAM: telegram', enum_type=Channel, max_length=20)),
                ('user', fields.ForeignKeyField('settle.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('contact', fields.ForeignKeyField('settle.Contact', source_field='contact_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.SET_NULL)),
                ('recipient_key', fields.CharField(max_length=60)),
                ('address', fields.CharField(null=True, max_length=254)),
                ('subject_type', fields.CharField(max_length=40)),
                ('subject_id', fields.UUIDField(null=True)),
                ('data', fields.JSONField(default=dict, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('dedupe_key', fields.CharField(max_length=200)),
                ('status', fields.CharEnumField(default=NotificationStatus.PENDING, description='PENDING: pending\nSENDING: sending\nSENT: sent\nFAILED: failed\nSUPPRESSED: suppressed\nSKIPPED: skipped', enum_type=NotificationStatus, max_length=20)),
                ('reason', fields.TextField(null=True, unique=False)),
                ('digest', fields.BooleanField(default=False)),
                ('attempts', fields.IntField(default=0)),
                ('last_error', fields.TextField(null=True, unique=False)),
                ('provider_message_id', fields.CharField(null=True, max_length=255)),
                ('claimed_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('not_before', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('sent_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'notification', 'app': 'settle', 'unique_together': (('recipient_key', 'channel', 'dedupe_key'),), 'indexes': [Index(fields=['agency_id', 'created_at']), Index(fields=['subject_type', 'subject_id'])], 'pk_attr': 'id', 'table_description': 'One message of one kind to one recipient on one channel: its content and its fate.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='NotificationPreference',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('user', fields.ForeignKeyField('settle.User', source_field='user_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('contact', fields.ForeignKeyField('settle.Contact', source_field='contact_id', null=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('recipient_key', fields.CharField(max_length=60)),
                ('kind', fields.CharEnumField(description='PAYMENT_REQUEST: payment_request\nADVANCE_PAYMENT_CONFIRMATION: advance_payment_confirmation\nBALANCE_PAYMENT_CONFIRMATION: balance_payment_confirmation\nPAYMENT_CONFIRMATION: payment_confirmation\nPAYMENT_FAILED: payment_failed\nADVANCE_PAYMENT_REMINDER: advance_payment_reminder\nBALANCE_PAYMENT_REMINDER: balance_payment_reminder\nINVOICE_READY: invoice_ready\nINVOICE_OVERDUE: invoice_overdue\nACCESS_EXPIRING: access_expiring\nACCESS_EXPIRED: access_expired\nREFUND_PROCESSED: refund_processed\nPAYMENT_RECEIVED: payment_received\nPAYMENT_FAILED_ALERT: payment_failed_alert\nINVOICE_UPLOAD_REMINDER: invoice_upload_reminder\nDAILY_DIGEST: daily_digest\nMILESTONE_APPROVED: milestone_approved\nMILESTONE_REJECTED: milestone_rejected', enum_type=NotificationKind, max_length=40)),
                ('channels', fields.JSONField(default=list, encoder=functools.partial(dumps, separators=(',', ':')), decoder=loads)),
                ('frequency', fields.CharEnumField(default=Frequency.IMMEDIATE, description='IMMEDIATE: immediate\nDAILY_DIGEST: daily_digest\nOFF: off', enum_type=Frequency, max_length=20)),
            ],
            options={'table': 'notification_preference', 'app': 'settle', 'unique_together': (('recipient_key', 'kind'),), 'pk_attr': 'id', 'table_description': 'How one user or one contact wants one kind: on which channels, how often.'},
            bases=['TenantModel'],
        ),
        ops.AddField(
            model_name='Agency',
            name='timezone',
            field=fields.CharField(default='UTC', max_length=64),
        ),
    ]
