from tortoise import migrations
from tortoise.migrations import operations as ops
from tortoise import fields

class Migration(migrations.Migration):
    dependencies = [('settle', '0011_notifications')]

    initial = False

    operations = [
        ops.AddField(
            model_name='Agency',
            name='payment_reminder_days',
            field=fields.CharField(default='3,7,14', max_length=100),
        ),
        ops.AddField(
            model_name='Agency',
            name='overdue_reminder_days',
            field=fields.CharField(default='1,7,14', max_length=100),
        ),
        ops.AddField(
            model_name='Agency',
            name='digest_hour',
            field=fields.SmallIntField(default=8),
        ),
    ]
