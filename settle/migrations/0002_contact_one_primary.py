from tortoise import migrations
from tortoise.migrations import operations as ops


class Migration(migrations.Migration):
    dependencies = [("settle", "0001_initial")]

    # A partial unique index is the last line of defence for "exactly one
    # primary contact": the service serialises changes per client, and this
    # makes a racing second primary impossible even if that code is bypassed.
    # The same SQL is valid on SQLite and PostgreSQL.
    operations = [
        ops.RunSQL(
            'CREATE UNIQUE INDEX "uq_contact_primary_per_client" '
            'ON "contact" ("client_id") WHERE "is_primary"',
            reverse_sql='DROP INDEX "uq_contact_primary_per_client"',
        ),
    ]
