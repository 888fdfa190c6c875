from typing import Any

from tortoise import migrations
from tortoise.indexes import Index
from tortoise.migrations import operations as ops

# Until now only an event processed against a payment knew its agency. An event whose
# processing failed, or that was ignored, gets the agency of the payment it names, found
# as processing finds it (services.payment.find_payment_for): by Settle's payment id,
# else the gateway's order id, else the gateway's payment id, among the provider's.
ATTRIBUTE = """
UPDATE webhook_event SET agency_id = COALESCE(
    (SELECT p.agency_id FROM payment p WHERE p.provider = webhook_event.provider
        AND {payment_id_text} = {event_field_payment_id}),
    (SELECT p.agency_id FROM payment p WHERE p.provider = webhook_event.provider
        AND p.provider_order_id = {event_field_provider_order_id} LIMIT 1),
    (SELECT p.agency_id FROM payment p WHERE p.provider = webhook_event.provider
        AND p.provider_payment_id = {event_field_provider_payment_id} LIMIT 1)
) WHERE agency_id IS NULL
"""


def _sql(postgres: bool) -> str:
    fields = ("payment_id", "provider_order_id", "provider_payment_id")
    if postgres:
        extract = {f"event_field_{f}": f"(webhook_event.payload -> 'event' ->> '{f}')" for f in fields}
        return ATTRIBUTE.format(payment_id_text="CAST(p.id AS TEXT)", **extract)
    extract = {f"event_field_{f}": f"json_extract(webhook_event.payload, '$.event.{f}')" for f in fields}
    return ATTRIBUTE.format(payment_id_text="p.id", **extract)


async def attribute_webhook_events(apps: Any, schema_editor: Any) -> None:
    postgres = schema_editor.client.capabilities.dialect == "postgres"
    await schema_editor.client.execute_script(_sql(postgres))


async def nothing(apps: Any, schema_editor: Any) -> None:
    return None


class Migration(migrations.Migration):
    dependencies = [('settle', '0015_exports')]

    initial = False

    operations = [
        ops.AddIndex(
            model_name='Payment',
            index=Index(fields=['agency_id', 'currency', 'succeeded_at']),
        ),
        ops.AddIndex(
            model_name='Refund',
            index=Index(fields=['agency_id', 'currency', 'settled_at']),
        ),
        ops.AddIndex(
            model_name='WebhookEvent',
            index=Index(fields=['agency_id', 'received_at']),
        ),
        ops.RunPython(attribute_webhook_events, reverse_code=nothing),
    ]
