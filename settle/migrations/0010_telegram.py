from tortoise import migrations
from tortoise.migrations import operations as ops
from settle.models.telegram import TelegramUnlinkReason
from tortoise.fields.base import OnDelete
from uuid import uuid4
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('settle', '0009_sessions')]

    initial = False

    operations = [
        ops.CreateModel(
            name='TelegramChat',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('user', fields.OneToOneField('settle.User', source_field='user_id', db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('chat_id', fields.BigIntField(db_index=True)),
                ('username', fields.CharField(null=True, max_length=64)),
                ('linked_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('unlinked_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
                ('unlink_reason', fields.CharEnumField(null=True, description='USER: user\nBLOCKED: blocked', enum_type=TelegramUnlinkReason, max_length=20)),
                ('unlink_detail', fields.CharField(null=True, max_length=500)),
            ],
            options={'table': 'telegram_chat', 'app': 'settle', 'pk_attr': 'id', 'table_description': 'The Telegram chat a user receives messages in: one per user, kept when unlinked.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='TelegramLinkToken',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('created_at', fields.DatetimeField(auto_now=False, auto_now_add=True)),
                ('updated_at', fields.DatetimeField(auto_now=True, auto_now_add=False)),
                ('agency', fields.ForeignKeyField('settle.Agency', source_field='agency_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.RESTRICT)),
                ('user', fields.ForeignKeyField('settle.User', source_field='user_id', db_index=True, db_constraint=True, to_field='id', related_name=False, on_delete=OnDelete.CASCADE)),
                ('token_hash', fields.CharField(unique=True, max_length=64)),
                ('expires_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
                ('used_at', fields.DatetimeField(null=True, auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'telegram_link_token', 'app': 'settle', 'pk_attr': 'id', 'table_description': 'A one-time token of a ``t.me/<bot>?start=<token>`` link, stored only as its hash.'},
            bases=['TenantModel'],
        ),
        ops.CreateModel(
            name='TelegramUpdate',
            fields=[
                ('id', fields.UUIDField(primary_key=True, default=uuid4, unique=True, db_index=True)),
                ('update_id', fields.BigIntField(unique=True)),
                ('received_at', fields.DatetimeField(auto_now=False, auto_now_add=False)),
            ],
            options={'table': 'telegram_update', 'app': 'settle', 'pk_attr': 'id', 'table_description': 'An update Settle acted on, so a redelivery (Telegram retries) is not acted on twice.'},
            bases=['Model'],
        ),
    ]
