from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("settle", "0003_delivery")]

    # One running timer per user, even when two startTimer requests race.
    operations = [
        ops.RunSQL(
            'CREATE UNIQUE INDEX "uq_time_entry_running_per_user" '
            'ON "time_entry" ("user_id") WHERE "is_running"',
            reverse_sql='DROP INDEX "uq_time_entry_running_per_user"',
        ),
    ]
