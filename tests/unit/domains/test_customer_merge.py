"""The three-way customer field merge (DESIGN §15): rules by example, then properties."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from billing_reconciler.domains.customer_merge import (
    CurrencyOutcome,
    CustomerMerge,
    Direction,
    FieldValue,
    Reason,
    last_applied_from_json,
    last_applied_to_json,
    merge_currency,
    merge_customer,
    tax_id_changes,
    update_params,
)
from billing_reconciler.model_customers import (
    MERGED_FIELDS,
    Address,
    CustomerFields,
    TaxId,
    canonical_tax_ids,
    normalize_address,
)

BASE = CustomerFields(name="Acme", email="billing@acme.test", phone=None)


def _last(fields: CustomerFields) -> dict[str, FieldValue]:
    return {name: getattr(fields.canonical(), name) for name in MERGED_FIELDS}


def _only(result: CustomerMerge) -> tuple[str, Direction, Reason]:
    (change,) = result.changes
    return change.field, change.direction, change.reason


def test_only_local_changed_pushes() -> None:
    result = merge_customer(
        local=replace(BASE, name="Acme Inc"), remote=BASE, last_applied=_last(BASE)
    )
    assert _only(result) == ("name", Direction.PUSH, Reason.LOCAL_CHANGED)
    assert update_params(result.push) == {"name": "Acme Inc"}
    assert result.merged.name == "Acme Inc"


def test_only_remote_changed_pulls() -> None:
    result = merge_customer(
        local=BASE, remote=replace(BASE, email="ap@acme.test"), last_applied=_last(BASE)
    )
    assert _only(result) == ("email", Direction.PULL, Reason.REMOTE_CHANGED)
    assert result.merged.email == "ap@acme.test"
    assert not result.conflicts


def test_both_changed_local_wins_as_a_conflict() -> None:
    result = merge_customer(
        local=replace(BASE, name="Local"),
        remote=replace(BASE, name="Portal"),
        last_applied=_last(BASE),
    )
    assert _only(result) == ("name", Direction.PUSH, Reason.BOTH_CHANGED)
    (conflict,) = result.conflicts
    assert (conflict.old, conflict.new) == ("Portal", "Local")


def test_both_changed_alike_writes_nothing() -> None:
    same = replace(BASE, phone="+4930123")
    result = merge_customer(local=same, remote=same, last_applied=_last(BASE))
    assert result.in_sync
    assert result.merged == same.canonical()


def test_never_applied_local_wins_if_set_else_pull() -> None:
    result = merge_customer(
        local=CustomerFields(name="Acme"),
        remote=CustomerFields(name="Other", phone="+1555"),
        last_applied=None,
    )
    by_field = {c.field: (c.direction, c.reason) for c in result.changes}
    assert by_field == {
        "name": (Direction.PUSH, Reason.NEVER_APPLIED),
        "phone": (Direction.PULL, Reason.NEVER_APPLIED),
    }


def test_contract_wins_even_over_a_remote_edit_and_never_clears() -> None:
    result = merge_customer(
        local=CustomerFields(name="Contract Co"),
        remote=CustomerFields(name="Edited", phone="+1555"),
        last_applied={"name": "Contract Co", "phone": None},
        contract=True,
    )
    by_field = {c.field: (c.direction, c.reason) for c in result.changes}
    assert by_field == {
        "name": (Direction.PUSH, Reason.CONTRACT),
        "phone": (Direction.PULL, Reason.REMOTE_CHANGED),
    }


def test_tax_ids_and_address_compare_as_values() -> None:
    a, b, c = TaxId("eu_vat", "DE1"), TaxId("eu_vat", "DE2"), TaxId("gb_vat", "GB3")
    last = _last(replace(BASE, tax_ids=(a, b)))
    # Order means nothing; an empty address is no address.
    same = merge_customer(
        local=replace(BASE, tax_ids=(b, a), address=Address()),
        remote=replace(BASE, tax_ids=(a, b)),
        last_applied=last,
    )
    assert same.in_sync
    pushed = merge_customer(
        local=replace(BASE, tax_ids=(a, c)), remote=replace(BASE, tax_ids=(a, b)), last_applied=last
    )
    assert tax_id_changes(pushed.push) == ((c,), (b,))
    moved = merge_customer(
        local=replace(BASE, address=Address(city="Berlin", country="DE")),
        remote=BASE,
        last_applied=last,
    )
    assert update_params(moved.push)["address"]["city"] == "Berlin"


def test_clearing_a_field_pushes_an_empty_string() -> None:
    last = _last(replace(BASE, phone="+1555"))
    result = merge_customer(local=BASE, remote=replace(BASE, phone="+1555"), last_applied=last)
    assert update_params(result.push) == {"phone": ""}


def test_currency_is_set_once() -> None:
    assert merge_currency(local=None, remote="eur").outcome is CurrencyOutcome.PULL
    assert merge_currency(local="usd", remote=None).outcome is CurrencyOutcome.UNCHANGED
    assert merge_currency(local="USD", remote="usd").outcome is CurrencyOutcome.UNCHANGED
    refused = merge_currency(local="usd", remote="eur")
    assert refused.outcome is CurrencyOutcome.REFUSED
    assert refused.value == "usd"


def test_last_applied_json_round_trip() -> None:
    fields = CustomerFields(
        name="Acme", address=Address(line1="1 Main", country="US"), tax_ids=(TaxId("us_ein", "1"),)
    )
    assert last_applied_from_json(last_applied_to_json(fields)) == _last(fields)
    assert last_applied_from_json({"currency": "usd"}) == {}


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_text = st.one_of(st.none(), st.sampled_from(["", "a", "b", "Acme"]))
_address = st.one_of(
    st.none(),
    st.builds(Address, city=st.sampled_from([None, "", "Berlin", "Paris"]), country=_text),
)
_tax_ids = st.lists(
    st.builds(TaxId, type=st.sampled_from(["eu_vat", "gb_vat"]), value=st.sampled_from(["1", "2"])),
    max_size=3,
).map(tuple)
_fields = st.builds(
    CustomerFields, name=_text, email=_text, phone=_text, address=_address, tax_ids=_tax_ids
)
_last_applied = st.one_of(
    st.none(),
    st.builds(
        lambda f, keep: {k: v for k, v in _last(f).items() if k in keep},
        _fields,
        st.sets(st.sampled_from(MERGED_FIELDS)),
    ),
)


@given(local=_fields, remote=_fields, last=_last_applied, contract=st.booleans())
def test_applying_the_merge_converges(
    local: CustomerFields,
    remote: CustomerFields,
    last: dict[str, FieldValue] | None,
    contract: bool,
) -> None:
    first = merge_customer(local=local, remote=remote, last_applied=last, contract=contract)
    # Both sides hold `merged` after apply, and it becomes the last-applied value.
    again = merge_customer(
        local=first.merged, remote=first.merged, last_applied=_last(first.merged), contract=contract
    )
    assert again.in_sync
    # Pushes make Stripe equal `merged`, pulls make the store equal it.
    for change in first.changes:
        assert change.new == getattr(first.merged, change.field)
        other = remote if change.direction is Direction.PUSH else local
        assert change.old == getattr(other.canonical(), change.field)
    assert not ({c.field for c in first.push} & {c.field for c in first.pull})


@given(local=_fields, remote=_fields, last=_last_applied)
def test_symmetry_without_conflicts(
    local: CustomerFields, remote: CustomerFields, last: dict[str, FieldValue] | None
) -> None:
    """Swapping the sides swaps push and pull, except where both changed (local wins) or a
    field was never applied (local wins if set): the two asymmetric rules of §15."""
    forward = merge_customer(local=local, remote=remote, last_applied=last)
    backward = merge_customer(local=remote, remote=local, last_applied=last)
    symmetric = {Reason.LOCAL_CHANGED, Reason.REMOTE_CHANGED}
    forward_by = {c.field: c for c in forward.changes if c.reason in symmetric}
    backward_by = {c.field: c for c in backward.changes if c.reason in symmetric}
    assert forward_by.keys() == backward_by.keys()
    for name, change in forward_by.items():
        assert backward_by[name].direction is not change.direction
        assert backward_by[name].new == change.new
    for change in forward.conflicts:
        assert change.direction is Direction.PUSH


@given(fields=_fields, last=_last_applied, contract=st.booleans())
def test_equal_sides_never_change(
    fields: CustomerFields, last: dict[str, FieldValue] | None, contract: bool
) -> None:
    assert merge_customer(local=fields, remote=fields, last_applied=last, contract=contract).in_sync


@given(fields=_fields)
def test_canonical_fields_are_normalized_once(fields: CustomerFields) -> None:
    """`canonical()` returns a value already canonical as it is (the plan of a fleet asks for
    it several times per account), and normalizes any other."""
    normalized = CustomerFields(
        name=fields.name or None,
        email=fields.email or None,
        phone=fields.phone or None,
        address=normalize_address(fields.address),
        tax_ids=canonical_tax_ids(fields.tax_ids),
    )
    assert fields.canonical() == normalized
    assert normalized.canonical() is normalized


def test_tax_ids_given_as_pairs_or_a_list_are_normalized() -> None:
    pairs = CustomerFields(tax_ids=(("eu_vat", "DE1"),))  # type: ignore[arg-type]
    listed = CustomerFields(tax_ids=[TaxId("eu_vat", "DE1")])  # type: ignore[arg-type]
    assert pairs.canonical().tax_ids == listed.canonical().tax_ids == (TaxId("eu_vat", "DE1"),)
