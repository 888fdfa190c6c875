from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('settle', '0012_notification_stages')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Project',
            name='notify_milestone_members',
            field=fields.BooleanField(default=False),
        ),
    ]
