"""Tax ids and cash balances vs Stripe's published examples (`fixtures3.json`), with the
comparison of `test_fidelity.py` (field names and JSON types, recursively)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from tests.fixtures.emulator import EmulatorHandle
from tests.integration.emulator.test_fidelity import _compare, _fixtures


def _served(obj: stripe.StripeObject) -> dict[str, Any]:
    assert obj.last_response is not None
    body: dict[str, Any] = json.loads(obj.last_response.body)
    return body


def _objects(client: stripe.StripeClient, emulator: EmulatorHandle) -> dict[str, dict[str, Any]]:
    customer = client.v1.customers.create(
        {
            "address": {"country": "DE"},
            "cash_balance": {"settings": {"reconciliation_mode": "manual"}},
        }
    )
    # Funds as the payment methods module records them (the emulator's store layout).
    emu = emulator.server.emulator
    with emu.lock:
        stored = emu.store.get("cash_balance", f"cashbal_{customer.id}")
        assert stored is not None
        emu.store.replace("cash_balance", {**stored, "available": {"eur": 10000}})
    tax_id = client.v1.customers.tax_ids.create(
        customer.id, {"type": "eu_vat", "value": "DE123456789"}
    )
    other = client.v1.customers.tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE1234"})
    return {
        "tax_id": _served(tax_id),
        "deleted_tax_id": _served(client.v1.customers.tax_ids.delete(customer.id, other.id)),
        "cash_balance": _served(client.v1.customers.cash_balance.retrieve(customer.id)),
    }


@pytest.mark.parametrize("resource", ["tax_id", "deleted_tax_id", "cash_balance"])
def test_shape_matches_stripe_example(
    resource: str, stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    problems: list[str] = []
    served = _objects(stripe_client, emulator)[resource]
    _compare(resource, _fixtures()[resource], served, "", problems)
    assert problems == []


def test_tax_id_values_match_the_example(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    example = _fixtures()["tax_id"]
    served = _objects(stripe_client, emulator)["tax_id"]
    for field in ("country", "livemode", "object", "type", "value", "customer_account"):
        assert served[field] == example[field], field
    assert served["owner"]["type"] == example["owner"]["type"]
    assert served["verification"] == example["verification"]
    assert set(served["owner"]) == set(example["owner"])
