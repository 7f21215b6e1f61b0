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
    merge_metadata,
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


def test_never_applied_pulls_what_the_store_leaves_unset_and_reports_a_conflict() -> None:
    """No last-applied record (a fresh link to an existing customer, as after a lost store):
    a field the store does not set is pulled, never pushed as a clear; one both sides set
    differently is a conflict (local wins); one only the store sets is pushed."""
    result = merge_customer(
        local=CustomerFields(name="Acme", email="a@acme.test"),
        remote=CustomerFields(
            name="Other", phone="+1555", address=Address(city="Paris", country="FR")
        ),
        last_applied=None,
    )
    by_field = {c.field: (c.direction, c.reason) for c in result.changes}
    assert by_field == {
        "name": (Direction.PUSH, Reason.BOTH_CHANGED),
        "email": (Direction.PUSH, Reason.NEVER_APPLIED),
        "phone": (Direction.PULL, Reason.NEVER_APPLIED),
        "address": (Direction.PULL, Reason.NEVER_APPLIED),
    }
    assert [c.field for c in result.conflicts] == ["name"]
    assert update_params(result.push) == {"name": "Acme", "email": "a@acme.test"}


def test_contract_wins_for_what_it_declares_and_merges_the_rest_three_ways() -> None:
    """A field the YAML leaves out is not the contract's: merged from the store's value like
    an ordinary account's (a Stripe edit pulled, an API edit pushed), never cleared by it."""
    last = {"name": "Contract Co", "email": "a@co.test", "phone": None}
    result = merge_customer(
        local=CustomerFields(name="Contract Co", email="api@co.test"),
        remote=CustomerFields(name="Edited", email="a@co.test", phone="+1555"),
        last_applied=last,
        declared=CustomerFields(name="Contract Co"),
    )
    by_field = {c.field: (c.direction, c.reason, c.new) for c in result.changes}
    assert by_field == {
        "name": (Direction.PUSH, Reason.CONTRACT, "Contract Co"),
        "email": (Direction.PUSH, Reason.LOCAL_CHANGED, "api@co.test"),
        "phone": (Direction.PULL, Reason.REMOTE_CHANGED, "+1555"),
    }
    # Applied, it is in sync: the contract's undeclared field no longer moves.
    again = merge_customer(
        local=result.merged,
        remote=result.merged,
        last_applied=_last(result.merged),
        declared=CustomerFields(name="Contract Co"),
    )
    assert again.in_sync


def test_contract_address_parts_it_leaves_out_are_merged_three_ways() -> None:
    declared = CustomerFields(
        name="Co", address=Address(line1="1 Main St", city="Berlin", country="DE")
    )
    applied = declared.address
    assert applied is not None
    # Stripe added line2 (a part the YAML leaves out): pulled, nothing pushed.
    edited = replace(applied, line2="Building 7")
    result = merge_customer(
        local=declared,
        remote=replace(declared, address=edited),
        last_applied=_last(declared),
        declared=declared,
    )
    assert [(c.field, c.direction, c.new) for c in result.changes] == [
        ("address", Direction.PULL, edited)
    ]
    # Stripe also moved a declared part: the YAML's part is pushed back, line2 kept, and the
    # store takes line2.
    result = merge_customer(
        local=declared,
        remote=replace(declared, address=replace(edited, city="Munich")),
        last_applied=_last(declared),
        declared=declared,
    )
    assert [(c.field, c.direction, c.reason, c.new) for c in result.changes] == [
        ("address", Direction.PUSH, Reason.CONTRACT, edited),
        ("address", Direction.PULL, Reason.REMOTE_CHANGED, edited),
    ]
    assert update_params(result.push)["address"]["line2"] == "Building 7"


def test_metadata_is_merged_per_key_for_the_keys_we_own() -> None:
    last = {"team": "billing", "tier": "gold", "region": "eu"}
    changes, merged = merge_metadata(
        # tier dropped locally, plan new, team unchanged, region unchanged locally
        local={"team": "billing", "plan": "pro", "region": "eu", "br_key": "x", "org_id": "y"},
        # team edited in Stripe, region removed in Stripe, crm_id the user's own key
        remote={"team": "sales", "tier": "gold", "crm_id": "42", "br_key": "customer/a"},
        last=last,
    )
    by_key = {c.field: (c.direction, c.reason, c.old, c.new) for c in changes}
    assert by_key == {
        "metadata.plan": (Direction.PUSH, Reason.NEVER_APPLIED, None, "pro"),
        "metadata.region": (Direction.PULL, Reason.REMOTE_CHANGED, "eu", None),
        "metadata.team": (Direction.PULL, Reason.REMOTE_CHANGED, "billing", "sales"),
        "metadata.tier": (Direction.PUSH, Reason.LOCAL_CHANGED, "gold", None),
    }
    assert merged == {"plan": "pro", "team": "sales"}
    pushed = tuple(c for c in changes if c.direction is Direction.PUSH)
    # Only our keys, "" removing one; never a marker, never the user's crm_id.
    assert update_params(pushed) == {"metadata": {"plan": "pro", "tier": ""}}


def test_a_new_metadata_key_stripe_holds_otherwise_is_a_conflict_local_wins() -> None:
    changes, merged = merge_metadata(local={"plan": "pro"}, remote={"plan": "free"}, last={})
    assert [(c.field, c.direction, c.conflict) for c in changes] == [
        ("metadata.plan", Direction.PUSH, True)
    ]
    assert merged == {"plan": "pro"}


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


@given(
    local=_fields,
    remote=_fields,
    last=_last_applied,
    declared=st.one_of(st.none(), _fields),
)
def test_applying_the_merge_converges(
    local: CustomerFields,
    remote: CustomerFields,
    last: dict[str, FieldValue] | None,
    declared: CustomerFields | None,
) -> None:
    first = merge_customer(local=local, remote=remote, last_applied=last, declared=declared)
    # Both sides hold `merged` after apply, and it becomes the last-applied value.
    again = merge_customer(
        local=first.merged, remote=first.merged, last_applied=_last(first.merged), declared=declared
    )
    assert again.in_sync
    # Pushes make Stripe equal `merged`, pulls make the store equal it.
    for change in first.changes:
        assert change.new == getattr(first.merged, change.field)
        other = remote if change.direction is Direction.PUSH else local
        assert change.old == getattr(other.canonical(), change.field)
    both = {c.field for c in first.push} & {c.field for c in first.pull}
    # Only a contract's address is written to both sides at once (its declared parts
    # pushed, a part it leaves out pulled from Stripe).
    assert both <= ({"address"} if declared is not None else set())


_meta = st.dictionaries(
    st.sampled_from(["a", "b", "c", "br_key", "org_id"]), st.sampled_from(["", "1", "2"])
)


@given(local=_meta, remote=_meta, last=_meta)
def test_applying_the_metadata_merge_converges_and_leaves_foreign_keys(
    local: dict[str, str], remote: dict[str, str], last: dict[str, str]
) -> None:
    changes, merged = merge_metadata(local=local, remote=remote, last=last)
    pushed = update_params(tuple(c for c in changes if c.direction is Direction.PUSH))
    sent = pushed.get("metadata", {})
    assert not {"br_key", "org_id"} & set(sent)
    # A key neither the account holds nor we wrote is never sent.
    owned = {k for k, v in last.items() if v} | {k for k, v in local.items() if v}
    assert set(sent) <= owned
    # Stripe merges the keys sent ("" removes); the store takes the pulls: then in sync.
    after_remote = {k: v for k, v in {**remote, **sent}.items() if v}
    after_local = dict(local)
    for change in changes:
        if change.direction is Direction.PULL:
            key = change.field.removeprefix("metadata.")
            after_local.pop(key, None)
            if change.new:
                after_local[key] = str(change.new)
    again, merged_again = merge_metadata(local=after_local, remote=after_remote, last=merged)
    assert again == []
    assert merged_again == merged


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
    declared = fields if contract else None
    assert merge_customer(local=fields, remote=fields, last_applied=last, declared=declared).in_sync


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
