"""The agency's own details and invoice settings through the API."""

from __future__ import annotations

from typing import Any

import pytest

from settle.models.activity import ActivityEvent
from settle.models.agency import Agency, Role
from tests.fixtures.db import row_counts
from tests.fixtures.factories import Account, create_client, create_user
from tests.fixtures.graphql import GraphQLClient

AGENCY_FIELDS = """
    name address email taxId invoiceNumberPattern invoiceDueDays defaultTaxRate
    paymentProviders { currency provider }
"""

UPDATE_AGENCY = f"""
mutation UpdateAgency($input: UpdateAgencyInput!) {{
  updateAgency(input: $input) {{
    __typename
    ... on Agency {{ {AGENCY_FIELDS} }}
    ... on Error {{ code message }}
    ... on ValidationError {{ field }}
  }}
}}
"""

MY_AGENCY = f"{{ me {{ agency {{ {AGENCY_FIELDS} }} }} }}"


async def update(gql: GraphQLClient, account: Account, **values: Any) -> dict[str, Any]:
    data = await gql.execute(UPDATE_AGENCY, {"input": values}, token=account.token)
    result: dict[str, Any] = data["updateAgency"]
    return result


async def test_a_new_agency_starts_with_the_default_invoice_settings(
    gql: GraphQLClient, owner: Account
) -> None:
    # when the owner reads the agency
    data = await gql.execute(MY_AGENCY, token=owner.token)
    # then invoices are numbered INV-<year>-0001, due in 30 days, without tax
    assert data["me"]["agency"] == {
        "name": "Northwind Studio",
        "address": None,
        "email": None,
        "taxId": None,
        "invoiceNumberPattern": "INV-{YYYY}-{SEQ:4}",
        "invoiceDueDays": 30,
        "defaultTaxRate": "0",
        "paymentProviders": [],
    }


async def test_the_owner_changes_details_and_settings_and_the_timeline_records_it(
    gql: GraphQLClient, owner: Account
) -> None:
    # when the owner sets the billing details
    result = await update(
        gql,
        owner,
        address="4 Canal Street\nAmsterdam",
        email="Billing@Northwind.example",
        taxId="NL123456789B01",
        invoiceNumberPattern="NW/{YY}{MM}/{SEQ:3}",
        invoiceDueDays=14,
        defaultTaxRate="21",
    )
    # then they are stored as given (the email normalised)
    assert result == {
        "__typename": "Agency",
        "name": "Northwind Studio",
        "address": "4 Canal Street\nAmsterdam",
        "email": "billing@northwind.example",
        "taxId": "NL123456789B01",
        "invoiceNumberPattern": "NW/{YY}{MM}/{SEQ:3}",
        "invoiceDueDays": 14,
        "defaultTaxRate": "21",
        "paymentProviders": [],
    }
    # and one timeline event has the changes, invisible to client users (no client)
    event = await ActivityEvent.get(entity_type="agency", entity_id=owner.agency_id, verb="updated")
    assert event.client_id is None
    assert set(event.changes) == {
        "address",
        "default_tax_rate",
        "email",
        "invoice_due_days",
        "invoice_number_pattern",
        "tax_id",
    }


async def test_an_update_that_changes_nothing_records_nothing(
    gql: GraphQLClient, owner: Account
) -> None:
    # when the owner sends the current values again
    result = await update(gql, owner, invoiceDueDays=30, defaultTaxRate="0.000")
    # then nothing is recorded
    assert result["__typename"] == "Agency"
    assert not await ActivityEvent.filter(entity_type="agency", verb="updated").exists()


@pytest.mark.parametrize(
    ("values", "field", "code"),
    [
        ({"invoiceNumberPattern": "INV-{YYYY}"}, "invoiceNumberPattern", "INVALID_PATTERN"),
        ({"invoiceNumberPattern": "{SEQ}-{SEQ}"}, "invoiceNumberPattern", "INVALID_PATTERN"),
        ({"invoiceNumberPattern": "INV {SEQ}"}, "invoiceNumberPattern", "INVALID_PATTERN"),
        ({"invoiceNumberPattern": ""}, "invoiceNumberPattern", "REQUIRED"),
        ({"invoiceDueDays": -1}, "invoiceDueDays", "OUT_OF_RANGE"),
        ({"invoiceDueDays": 366}, "invoiceDueDays", "OUT_OF_RANGE"),
        ({"defaultTaxRate": "100.5"}, "defaultTaxRate", "OUT_OF_RANGE"),
        ({"defaultTaxRate": "18.0005"}, "defaultTaxRate", "TOO_PRECISE"),
        ({"defaultTaxRate": "eighteen"}, "defaultTaxRate", "VALIDATION_ERROR"),
        ({"email": "not an email"}, "email", "INVALID_EMAIL"),
        ({"name": "  "}, "name", "REQUIRED"),
        (
            {"paymentProviders": [{"currency": "XYZ", "provider": "stripe"}]},
            "paymentProviders.currency",
            "INVALID_CURRENCY",
        ),
        (
            {"paymentProviders": [{"currency": "INR", "provider": "paypal"}]},
            "paymentProviders.provider",
            "INVALID_PROVIDER",
        ),
    ],
)
async def test_bad_settings_are_refused_and_change_nothing(
    gql: GraphQLClient, owner: Account, values: dict[str, Any], field: str, code: str
) -> None:
    # given the rows as they are
    before = await row_counts(Agency)
    # when a bad value is sent beside a good one
    result = await update(gql, owner, address="Somewhere", **values)
    # then the field is named, with its code, and nothing changed
    assert (result["__typename"], result["field"], result["code"]) == (
        "ValidationError",
        field,
        code,
    )
    assert await row_counts(Agency) == before
    agency = await Agency.get(id=owner.agency_id)
    assert agency.address is None


@pytest.mark.parametrize("role", [Role.MEMBER, Role.CLIENT_LEAD])
async def test_only_owners_and_admins_change_the_agency(
    gql: GraphQLClient, owner: Account, role: Role
) -> None:
    # given a member, or a client's lead
    client = await create_client(owner) if role.is_client else None
    user = await create_user(owner, role=role, client=client)
    # when they try to change the settings
    result = await update(gql, user, defaultTaxRate="18")
    # then they are refused and the rate is unchanged
    assert result["__typename"] == "PermissionDeniedError"
    agency = await Agency.get(id=owner.agency_id)
    assert agency.default_tax_rate == 0


async def test_an_admin_may_change_the_agency(gql: GraphQLClient, owner: Account) -> None:
    # given an admin
    admin = await create_user(owner, role=Role.ADMIN)
    # when the admin changes the due days
    result = await update(gql, admin, invoiceDueDays=7)
    # then it is stored
    assert result["invoiceDueDays"] == 7


async def test_the_gateway_per_currency_is_set_as_a_whole(
    gql: GraphQLClient, owner: Account
) -> None:
    # when the owner routes INR to Razorpay and USD to Stripe
    first = await update(
        gql,
        owner,
        paymentProviders=[
            {"currency": "usd", "provider": "stripe"},
            {"currency": "INR", "provider": "razorpay"},
        ],
    )
    # then both are kept, codes upper-cased
    assert first["paymentProviders"] == [
        {"currency": "INR", "provider": "razorpay"},
        {"currency": "USD", "provider": "stripe"},
    ]
    # and a later map replaces the whole of it
    second = await update(gql, owner, paymentProviders=[{"currency": "INR", "provider": "sandbox"}])
    assert second["paymentProviders"] == [{"currency": "INR", "provider": "sandbox"}]
    agency = await Agency.get(id=owner.agency_id)
    assert agency.payment_providers == {"INR": "sandbox"}
