from typing import Any

from tortoise import migrations
from tortoise.migrations import operations as ops

# The payment audit log is append-only: the database itself refuses to change or
# remove a row, whatever code (or hand) tries.
POSTGRES_UP = """
CREATE FUNCTION settle_refuse_audit_change() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'payment_audit_entry is append-only' USING ERRCODE = 'restrict_violation';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payment_audit_entry_append_only
    BEFORE UPDATE OR DELETE ON payment_audit_entry
    FOR EACH ROW EXECUTE FUNCTION settle_refuse_audit_change();
"""
POSTGRES_DOWN = """
DROP TRIGGER payment_audit_entry_append_only ON payment_audit_entry;
DROP FUNCTION settle_refuse_audit_change();
"""
SQLITE_UP = """
CREATE TRIGGER payment_audit_entry_no_update BEFORE UPDATE ON payment_audit_entry
BEGIN SELECT RAISE(ABORT, 'payment_audit_entry is append-only'); END;
CREATE TRIGGER payment_audit_entry_no_delete BEFORE DELETE ON payment_audit_entry
BEGIN SELECT RAISE(ABORT, 'payment_audit_entry is append-only'); END;
"""
SQLITE_DOWN = """
DROP TRIGGER payment_audit_entry_no_update;
DROP TRIGGER payment_audit_entry_no_delete;
"""


def _postgres(schema_editor: Any) -> bool:
    return schema_editor.client.capabilities.dialect == "postgres"


async def forward(apps: Any, schema_editor: Any) -> None:
    await schema_editor.client.execute_script(
        POSTGRES_UP if _postgres(schema_editor) else SQLITE_UP
    )


async def backward(apps: Any, schema_editor: Any) -> None:
    await schema_editor.client.execute_script(
        POSTGRES_DOWN if _postgres(schema_editor) else SQLITE_DOWN
    )


class Migration(migrations.Migration):
    dependencies = [("settle", "0006_payments")]

    operations = [ops.RunPython(forward, reverse_code=backward)]
