"""The customers domain's plan rules without Stripe or a store: the fingerprint a saved plan is
compared by."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest

from billing_reconciler.desired import load_desired
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.customer_merge import last_applied_to_json
from billing_reconciler.domains.customer_rules import customers_plan
from billing_reconciler.domains.customer_types import (
    CursorState,
    CustomersObserved,
    EventPosition,
    LiveCustomers,
    StoredAccount,
)
from billing_reconciler.model_customers import (
    Address,
    CustomerFields,
    CustomerOwner,
    CustomerRecord,
    TaxId,
    customer_key,
    customer_record,
)

INSTALLATION = "test"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> PlanContext:
    root: Path = tmp_path_factory.mktemp("desired")
    (root / "plans").mkdir()
    (root / "billing.yaml").write_text(
        f"billing:\n  default_currency: eur\nreconcile:\n  installation_id: {INSTALLATION}\n"
    )
    result = load_desired(root)
    assert result.state is not None, result.diagnostics
    return PlanContext(
        state=result.state,
        options=PlanOptions(),
        applied={},
        spent_keys=frozenset(),
        key_salt="salt",
        now=1_900_000_000,
    )


def _fields(index: int) -> CustomerFields:
    return CustomerFields(
        name=f"Org {index}",
        email=f"billing+{index}@example.test",
        address=Address(line1=f"{index} Main St", city="Berlin", country="DE"),
        tax_ids=(TaxId("eu_vat", f"DE{index:09d}"),),
    ).canonical()


def _account(index: int, fields: CustomerFields | None = None) -> StoredAccount:
    applied = _fields(index)
    return StoredAccount(
        account_id=f"acct_{index}",
        org_id=f"org-{index}",
        stripe_id=f"cus_{index}",
        offline=False,
        contract=False,
        fields=applied if fields is None else fields,
        currency="eur",
        metadata={"team": "billing", "tier": "gold"},
        last_applied=last_applied_to_json(applied),
    )


def _customer(index: int, fields: CustomerFields | None = None, **parts: object) -> CustomerRecord:
    org = f"org-{index}"
    record = customer_record(
        org,
        fields=_fields(index) if fields is None else fields,
        stripe_id=f"cus_{index}",
        currency="eur",
        metadata={"plan": "pro", "region": "eu"},
        owner=CustomerOwner(installation_id=INSTALLATION, key=customer_key(org), org_id=org),
        stripe_tax_ids=((TaxId("eu_vat", f"DE{index:09d}"), f"txi_{index}"),),
    )
    return replace(record, **parts)  # type: ignore[arg-type]


def _observed(
    accounts: tuple[StoredAccount, ...] | None = None,
    customers: tuple[CustomerRecord, ...] | None = None,
    **parts: object,
) -> CustomersObserved:
    """Five linked accounts, each with its customer as last applied (all in sync)."""
    observed = CustomersObserved(
        accounts=tuple(_account(i) for i in range(5)) if accounts is None else accounts,
        live=LiveCustomers(
            customers=tuple(_customer(i) for i in range(5)) if customers is None else customers,
            deleted_ids=frozenset({"cus_gone"}),
        ),
        complete=False,
        cursor=CursorState(EventPosition("evt_1", 100), full_resync_at=50),
    )
    return replace(observed, **parts)  # type: ignore[arg-type]


def _with_account(index: int, **parts: object) -> CustomersObserved:
    accounts = [_account(i) for i in range(5)]
    accounts[index] = replace(accounts[index], **parts)  # type: ignore[arg-type]
    return _observed(accounts=tuple(accounts))


def _with_customer(index: int, **parts: object) -> CustomersObserved:
    customers = [_customer(i) for i in range(5)]
    customers[index] = replace(customers[index], **parts)  # type: ignore[arg-type]
    return _observed(customers=tuple(customers))


def _fingerprint(observed: CustomersObserved, context: PlanContext) -> str:
    return customers_plan({}, observed, context).fingerprint


def test_the_fingerprint_is_equal_for_equal_observations(context: PlanContext) -> None:
    first = _fingerprint(_observed(), context)
    assert first == _fingerprint(_observed(), context)
    # The same values in another order: the customers as Stripe lists them, mapping keys as
    # another store or Stripe returns them.
    reordered_customers = tuple(
        replace(_customer(i), metadata={"region": "eu", "plan": "pro"}) for i in reversed(range(5))
    )
    reordered_accounts = tuple(
        replace(
            _account(i),
            metadata={"tier": "gold", "team": "billing"},
            last_applied=dict(reversed(list(_account(i).last_applied.items()))),
        )
        for i in range(5)
    )
    assert first == _fingerprint(
        _observed(accounts=reordered_accounts, customers=reordered_customers), context
    )


# A changed value for every field of each record type (the fingerprint spells them out).
ACCOUNT_FIELDS: dict[str, object] = {
    "account_id": "acct_other",
    "org_id": "org-other",
    "stripe_id": None,
    "offline": True,
    "contract": True,
    "fields": replace(_fields(3), name="Local name"),
    "currency": "usd",
    "test_clock": "clock_1",
    "metadata": {"team": "billing", "tier": "silver"},
    "credit_min": 100,
    "due_in_days": 14,
    "last_applied": {**_account(3).last_applied, "email": "old@example.test"},
}
FIELDS: dict[str, object] = {
    "name": None,
    "email": "portal@example.test",
    "phone": "+49 30 1234",
    "address": Address(line1="3 Main St", city="Munich", country="DE"),
    "tax_ids": (TaxId("eu_vat", "DE1"),),
}
CUSTOMER_FIELDS: dict[str, object] = {
    **FIELDS,
    "key": "customer/org-other",
    "org_id": "org-other",
    "stripe_id": "cus_other",
    "currency": "usd",
    "metadata": {"plan": "pro", "region": "us"},
    "owner": CustomerOwner(installation_id="other", key="customer/org-2", org_id="org-2"),
    "test_clock": "clock_1",
    "deleted": True,
    "stripe_tax_ids": ((TaxId("eu_vat", "DE000000002"), "txi_other"),),
}
OWNER_FIELDS: dict[str, str] = {
    "installation_id": "other",
    "key": "customer/org-other",
    "org_id": "org-other",
    "revision": "abc123",
}


def _owner(**parts: str) -> CustomerOwner:
    return replace(
        CustomerOwner(installation_id=INSTALLATION, key="customer/org-2", org_id="org-2"), **parts
    )


def _changed_fields(**parts: object) -> CustomerFields:
    return replace(_fields(3), **parts)  # type: ignore[arg-type]


def test_the_changes_cover_every_field_of_the_records() -> None:
    assert set(ACCOUNT_FIELDS) == {f.name for f in dataclasses.fields(StoredAccount)}
    assert set(CUSTOMER_FIELDS) == {f.name for f in dataclasses.fields(CustomerRecord)}
    assert set(FIELDS) == {f.name for f in dataclasses.fields(CustomerFields)}
    assert set(OWNER_FIELDS) == {f.name for f in dataclasses.fields(CustomerOwner)}


CHANGES: dict[str, Callable[[], CustomersObserved]] = {
    **{
        f"account {name}": partial(_with_account, 3, **{name: value})
        for name, value in ACCOUNT_FIELDS.items()
    },
    **{
        f"account fields {name}": partial(_with_account, 3, fields=_changed_fields(**{name: value}))
        for name, value in FIELDS.items()
    },
    **{
        f"customer {name}": partial(_with_customer, 2, **{name: value})
        for name, value in CUSTOMER_FIELDS.items()
    },
    **{
        f"customer owner {name}": partial(_with_customer, 2, owner=_owner(**{name: value}))
        for name, value in OWNER_FIELDS.items()
    },
    "customer address part": lambda: _with_customer(
        2, address=Address(line1="2 Main St", city="Munich", country="DE")
    ),
    "customer missing": lambda: _observed(customers=tuple(_customer(i) for i in range(4))),
    "account last applied address part": lambda: _with_account(
        3,
        last_applied={
            **_account(3).last_applied,
            "address": {**_account(3).last_applied["address"], "city": "Hamburg"},
        },
    ),
    "account last applied tax ids": lambda: _with_account(
        3, last_applied={**_account(3).last_applied, "tax_ids": []}
    ),
    "account last applied key missing": lambda: _with_account(
        3, last_applied={k: v for k, v in _account(3).last_applied.items() if k != "phone"}
    ),
    "deleted ids": lambda: _observed(
        live=LiveCustomers(
            customers=tuple(_customer(i) for i in range(5)), deleted_ids=frozenset({"cus_other"})
        )
    ),
    "cursor position": lambda: _observed(cursor=CursorState(EventPosition("evt_2", 101), 50)),
    "cursor full resync": lambda: _observed(cursor=CursorState(EventPosition("evt_1", 100), 51)),
    "position to record": lambda: _observed(moved_to=EventPosition("evt_3", 102)),
    "claimed ids": lambda: _observed(claimed_ids=frozenset({"cus_9"})),
    "inactive orgs": lambda: _observed(inactive_orgs=frozenset({"org-9"})),
}


@pytest.mark.parametrize("change", CHANGES)
def test_the_fingerprint_changes_with_any_observed_value(change: str, context: PlanContext) -> None:
    assert _fingerprint(CHANGES[change](), context) != _fingerprint(_observed(), context)
