"""The customers domain's plan rules without Stripe or a store: the fingerprint a saved plan is
compared by, and the plan of an in-sync fleet with a few accounts out of sync."""

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
from billing_reconciler.planning.plan import Action, Reason, Step

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
        last_applied={
            **last_applied_to_json(applied),
            "metadata": {"team": "billing", "tier": "gold"},
        },
    )


def _customer(index: int, fields: CustomerFields | None = None, **parts: object) -> CustomerRecord:
    org = f"org-{index}"
    record = customer_record(
        org,
        fields=_fields(index) if fields is None else fields,
        stripe_id=f"cus_{index}",
        currency="eur",
        # The account's keys (ours) and the user's own (plan, region).
        metadata={"plan": "pro", "region": "eu", "team": "billing", "tier": "gold"},
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
        replace(
            _customer(i),
            metadata={"tier": "gold", "team": "billing", "region": "eu", "plan": "pro"},
        )
        for i in reversed(range(5))
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
    "inactive customers": lambda: _observed(inactive_customers={"org-9": "cus_9"}),
    "orgs without row": lambda: _observed(orgs_without_row=frozenset({"org-1"})),
    "deleted orgs": lambda: _observed(deleted_orgs=frozenset({"org-9"})),
}


@pytest.mark.parametrize("change", CHANGES)
def test_the_fingerprint_changes_with_any_observed_value(change: str, context: PlanContext) -> None:
    assert _fingerprint(CHANGES[change](), context) != _fingerprint(_observed(), context)


# --------------------------------------------------------------------------------------------
# The plan of a fleet: the accounts in sync (skipped before the merge) plan nothing; those a
# field, the stored last-applied form or a currency sets apart each plan their write.
# --------------------------------------------------------------------------------------------


def _plan_of(context: PlanContext, index: int, **changes: object) -> tuple[Step, ...]:
    """The steps of the fleet's plan where `changes` apply to account (`account_<field>`) or
    customer (`customer_<field>`) `index`."""
    accounts = [_account(i) for i in range(5)]
    customers = [_customer(i) for i in range(5)]
    for name, value in changes.items():
        side, _, field = name.partition("_")
        if side == "account":
            accounts[index] = replace(accounts[index], **{field: value})  # type: ignore[arg-type]
        else:
            customers[index] = replace(customers[index], **{field: value})  # type: ignore[arg-type]
    plan = customers_plan({}, _observed(tuple(accounts), tuple(customers)), context)
    assert not plan.drift
    assert not plan.orphans
    assert not plan.restores
    return plan.steps


def _what(step: Step) -> tuple[Action, str, str, Reason]:
    return step.action, step.kind, step.key, step.reason


def test_an_in_sync_fleet_plans_nothing(context: PlanContext) -> None:
    plan = customers_plan({}, _observed(), context)
    assert (plan.steps, plan.restores, plan.warnings) == ((), (), ())


def test_a_remote_edit_among_in_sync_accounts_is_pulled(context: PlanContext) -> None:
    [step] = _plan_of(context, 1, customer_email="portal@example.test")
    assert _what(step) == (
        Action.UPDATE,
        "billing_account",
        "billing_account/org-1",
        Reason.REMOTE_CHANGED,
    )
    assert step.params["fields"] == {"email": "portal@example.test"}
    assert [(c.path, c.before, c.after) for c in step.changes] == [
        ("email", "billing+1@example.test", "portal@example.test")
    ]


def test_a_local_edit_among_in_sync_accounts_is_pushed(context: PlanContext) -> None:
    [step] = _plan_of(context, 4, account_fields=replace(_fields(4), name="Org Four"))
    assert _what(step) == (Action.UPDATE, "customer", "customer/org-4", Reason.DESIRED_CHANGED)
    assert step.params["update"] == {"name": "Org Four"}


def test_a_last_applied_form_that_differs_is_rewritten_as_bookkeeping(
    context: PlanContext,
) -> None:
    """Equal fields on both sides, but the stored last-applied record is not in the form the
    merge writes (a key missing, tax ids in another order): a bookkeeping restore records it,
    never an update step with no change (the plan is converged)."""
    two = (TaxId("eu_vat", "DE2"), TaxId("eu_vat", "DE1"))
    fields = replace(_fields(2), tax_ids=tuple(sorted(two)))
    stored = {
        **_account(2).last_applied,
        **last_applied_to_json(fields),
        "tax_ids": [{"type": t.type, "value": t.value} for t in two],
    }
    del stored["phone"]
    accounts = [_account(i) for i in range(5)]
    accounts[2] = replace(accounts[2], fields=fields, last_applied=stored)
    customers = [_customer(i) for i in range(5)]
    customers[2] = replace(customers[2], tax_ids=fields.tax_ids)
    plan = customers_plan({}, _observed(tuple(accounts), tuple(customers)), context)
    assert plan.steps == ()
    assert plan.converged
    [restore] = plan.restores
    assert (restore.kind, restore.key, restore.reason) == (
        "billing_account",
        "billing_account/org-2",
        Reason.BOOKKEEPING,
    )
    assert restore.params == {
        "fields": {},
        "last_applied": {
            "phone": None,
            "tax_ids": [{"type": "eu_vat", "value": "DE1"}, {"type": "eu_vat", "value": "DE2"}],
        },
    }


def test_a_currency_stripe_set_is_pulled(context: PlanContext) -> None:
    [step] = _plan_of(context, 0, account_currency=None, customer_currency="usd")
    assert _what(step) == (
        Action.UPDATE,
        "billing_account",
        "billing_account/org-0",
        Reason.REMOTE_CHANGED,
    )
    assert step.params["currency"] == "usd"


def test_another_currency_in_stripe_is_refused(context: PlanContext) -> None:
    accounts = tuple(_account(i) for i in range(5))
    customers = tuple(replace(_customer(i), currency="usd" if i == 3 else "eur") for i in range(5))
    plan = customers_plan({}, _observed(accounts, customers), context)
    assert plan.steps == ()
    [warning] = plan.warnings
    assert "customer/org-3" in warning
    assert "in usd, the account's currency is eur" in warning


# --------------------------------------------------------------------------------------------
# Plan quality: per org at most one Stripe update carrying every pushed field, metadata key
# and tax id, and one store step of the pulls; no step without a change.
# --------------------------------------------------------------------------------------------


def test_every_pushed_field_and_key_of_an_org_is_one_stripe_update(context: PlanContext) -> None:
    local = replace(
        _fields(1),
        name="Org One",
        phone="+49 30 1",
        address=Address(line1="9 Main St", city="Berlin", country="DE"),
        tax_ids=(TaxId("eu_vat", "DE999"),),
    )
    [step] = _plan_of(
        context,
        1,
        account_fields=local,
        account_metadata={"team": "finance", "cost_center": "42"},  # tier removed
    )
    assert _what(step) == (Action.UPDATE, "customer", "customer/org-1", Reason.DESIRED_CHANGED)
    assert step.params["update"] == {
        "name": "Org One",
        "phone": "+49 30 1",
        "address": {
            "line1": "9 Main St",
            "line2": "",
            "city": "Berlin",
            "state": "",
            "postal_code": "",
            "country": "DE",
        },
        # Only the keys we own: the user's `plan` and `region` are not sent.
        "metadata": {"cost_center": "42", "team": "finance", "tier": ""},
    }
    assert step.params["add_tax_ids"] == [{"type": "eu_vat", "value": "DE999"}]
    assert step.params["delete_tax_ids"] == [
        {"id": "txi_1", "type": "eu_vat", "value": "DE000000001"}
    ]
    assert step.params["last_applied"]["metadata"] == {
        "cost_center": "42",
        "team": "finance",
        "tier": None,
    }
    assert [c.path for c in step.changes] == [
        "name",
        "phone",
        "address",
        "tax_ids",
        "metadata.cost_center",
        "metadata.team",
        "metadata.tier",
    ]


def test_pushes_and_pulls_of_one_org_are_one_stripe_step_and_one_store_step(
    context: PlanContext,
) -> None:
    steps = _plan_of(
        context,
        3,
        account_fields=replace(_fields(3), name="Local name"),
        account_metadata={"team": "billing", "tier": "gold", "new": "1"},
        customer_email="portal@example.test",
        customer_metadata={"plan": "pro", "region": "eu", "team": "sales", "tier": "gold"},
    )
    assert [_what(s) for s in steps] == [
        (Action.UPDATE, "customer", "customer/org-3", Reason.DESIRED_CHANGED),
        (Action.UPDATE, "billing_account", "billing_account/org-3", Reason.REMOTE_CHANGED),
    ]
    push, pull = steps
    assert push.params["update"] == {"name": "Local name", "metadata": {"new": "1"}}
    assert pull.params["fields"] == {"email": "portal@example.test"}
    assert pull.params["metadata"] == {"team": "sales"}
    assert [c.path for c in pull.changes] == ["email", "metadata.team"]
    assert all(s.changes for s in steps)


def test_a_metadata_key_removed_in_stripe_is_removed_from_the_store(context: PlanContext) -> None:
    [step] = _plan_of(context, 0, customer_metadata={"plan": "pro", "team": "billing"})
    assert _what(step)[1:] == ("billing_account", "billing_account/org-0", Reason.REMOTE_CHANGED)
    assert step.params["metadata"] == {"tier": None}
    assert step.params["last_applied"] == {"metadata": {"tier": None}}


def test_user_metadata_keys_in_stripe_alone_plan_nothing(context: PlanContext) -> None:
    assert (
        _plan_of(
            context,
            0,
            customer_metadata={"team": "billing", "tier": "gold", "crm": "7", "br_other": "x"},
        )
        == ()
    )


def _contract(context: PlanContext, tmp: Path, yaml: str) -> PlanContext:
    root = tmp / "desired"
    (root / "plans").mkdir(parents=True)
    (root / "customers").mkdir()
    (root / "billing.yaml").write_text(
        f"billing:\n  default_currency: eur\nreconcile:\n  installation_id: {INSTALLATION}\n"
    )
    (root / "customers" / "c.yaml").write_text(yaml)
    result = load_desired(root)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    return replace(context, state=result.state)


CONTRACT_YAML = """\
customers:
  - org_id: org-1
    name: Org 1
    email: billing+1@example.test
    credit_min: -100
    currency: eur
"""


def test_a_contract_org_gets_one_store_step_for_the_yaml_and_one_for_pulls(
    context: PlanContext, tmp_path: Path
) -> None:
    """Settings and fields the YAML writes into the account are one step (they used to be
    one step each); a Stripe edit of a field the YAML leaves out (phone) is a pull."""
    ctx = _contract(context, tmp_path, CONTRACT_YAML)
    specs = {s.org_id: s for s in ctx.state.customers}
    accounts = [_account(i) for i in range(5)]
    accounts[1] = replace(accounts[1], contract=False, fields=replace(_fields(1), name="API name"))
    customers = [_customer(i) for i in range(5)]
    customers[1] = replace(customers[1], phone="+1 555")
    plan = customers_plan(specs, _observed(tuple(accounts), tuple(customers)), ctx)
    steps = [s for s in plan.steps if s.key.endswith("org-1")]
    assert [_what(s) for s in steps] == [
        (Action.UPDATE, "billing_account", "billing_account/org-1", Reason.DESIRED_CHANGED),
        (Action.UPDATE, "billing_account", "billing_account/org-1", Reason.REMOTE_CHANGED),
    ]
    desired, pull = steps
    assert desired.params == {
        "settings": {"contract": True, "credit_min": -100},
        "fields": {"name": "Org 1"},
        "last_applied": {},
    }
    assert pull.params["fields"] == {"phone": "+1 555"}
    assert pull.params["last_applied"] == {"phone": "+1 555"}


def test_a_contract_converges_after_a_stripe_edit_of_an_undeclared_field(
    context: PlanContext, tmp_path: Path
) -> None:
    ctx = _contract(context, tmp_path, CONTRACT_YAML)
    specs = {s.org_id: s for s in ctx.state.customers}
    applied = replace(_fields(1), name="Org 1", phone="+1 555")
    accounts = [_account(i) for i in range(5)]
    accounts[1] = replace(
        accounts[1],
        contract=True,
        credit_min=-100,
        fields=applied,
        last_applied={**accounts[1].last_applied, **last_applied_to_json(applied)},
    )
    customers = [_customer(i) for i in range(5)]
    customers[1] = replace(customers[1], name="Org 1", phone="+1 555")
    plan = customers_plan(specs, _observed(tuple(accounts), tuple(customers)), ctx)
    assert plan.steps == ()
    assert plan.restores == ()


def test_two_customers_of_one_org_are_reported_unless_a_disabled_account_holds_one(
    context: PlanContext,
) -> None:
    old = replace(_customer(0), stripe_id="cus_old")
    customers = (old, *(_customer(i) for i in range(5)))
    reported = customers_plan({}, _observed(customers=customers), context).warnings
    assert [w for w in reported if "carry br_key customer/org-0" in w], reported
    # The org's disabled account holds cus_old (its invoices): the new account has its own.
    held = _observed(customers=customers, claimed_ids=frozenset({"cus_old"}))
    assert not [w for w in customers_plan({}, held, context).warnings if "carry br_key" in w]
