"""Customers through the gateway against the emulator over HTTP (DESIGN §14, §15): observation
by list in ceil(N/100) calls, the events cursor, and creation replayed by its derived key."""

from __future__ import annotations

import pytest

from billing_reconciler.model_customers import (
    Address,
    CustomerFields,
    TaxId,
    creation_idempotency_key,
)
from billing_reconciler.stripe_gateway import (
    EventCursor,
    StripeGateway,
    add_tax_id,
    create_customer,
    customer_events_since,
    customers_by_id,
    delete_tax_id,
    observe_customers,
    update_customer,
)
from billing_reconciler.stripe_gateway.customers import EVENT_RETENTION_SECONDS
from tests.fixtures.emulator import EmulatorHandle, make_client

INSTALLATION = "inst-test"


def _create(gateway: StripeGateway, org_id: str, **fields: object) -> str:
    result = create_customer(
        gateway,
        org_id=org_id,
        installation_id=INSTALLATION,
        fields=CustomerFields(**fields),  # type: ignore[arg-type]
        idempotency_key=creation_idempotency_key(
            installation_id=INSTALLATION, org_id=org_id, account_id="acct_1", salt="s"
        ),
    )
    return result.stripe_id


def _gets(emu: EmulatorHandle, path: str) -> list[str]:
    return [r.path for r in emu.control.requests(method="GET") if r.path == path]


def test_listing_250_customers_takes_3_calls_and_keeps_only_ours(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    for index in range(248):
        _create(gateway, f"org-{index}", name=f"Org {index}")
    sdk = make_client(emu.url)
    sdk.v1.customers.create({"name": "foreign, unmarked"})
    sdk.v1.customers.create(
        {
            "metadata": {
                "managed_by": "billing-reconciler",
                "br_key": "customer/x",
                "br_installation": "other",
            }
        }
    )
    emu.control.clear_requests()

    observed = observe_customers(gateway, installation_id=INSTALLATION)

    assert len(_gets(emu, "/v1/customers")) == 3
    assert len(emu.control.requests()) == 3
    assert sorted(r.org_id for r in observed.customers) == sorted(f"org-{i}" for i in range(248))
    one = next(r for r in observed.customers if r.org_id == "org-7")
    assert (one.key, one.name, one.owner and one.owner.installation_id) == (
        "customer/org-7",
        "Org 7",
        INSTALLATION,
    )


def test_observed_fields_markers_and_tax_ids(emu: EmulatorHandle, gateway: StripeGateway) -> None:
    address = Address(line1="1 Main St", city="Berlin", postal_code="10115", country="DE")
    vat = TaxId("eu_vat", "DE123456789")
    cus = _create(
        gateway,
        "acme",
        name="Acme",
        email="ap@acme.test",
        phone="+4930123",
        address=address,
        tax_ids=(vat,),
    )
    live = make_client(emu.url).v1.customers.retrieve(cus)
    assert live.metadata is not None
    assert live.metadata.to_dict() == {
        "managed_by": "billing-reconciler",
        "br_key": "customer/acme",
        "br_installation": INSTALLATION,
        "org_id": "acme",
    }
    (record,) = observe_customers(gateway, installation_id=INSTALLATION).customers
    assert record.fields == CustomerFields(
        name="Acme", email="ap@acme.test", phone="+4930123", address=address, tax_ids=(vat,)
    )
    assert record.stripe_id == cus
    assert [tax for tax, _ in record.stripe_tax_ids] == [vat]

    update_customer(
        gateway, stripe_id=cus, params={"phone": "", "name": "Acme Inc"}, idempotency_key="u1"
    )
    gb = TaxId("gb_vat", "GB123456789")
    add_tax_id(gateway, stripe_id=cus, tax_id=gb, idempotency_key="t1")
    ((_, txi),) = record.stripe_tax_ids
    delete_tax_id(gateway, stripe_id=cus, tax_id_id=txi, idempotency_key="t2")
    # A lost response retried: already gone counts as done.
    assert delete_tax_id(gateway, stripe_id=cus, tax_id_id=txi, idempotency_key="t3").replayed

    (after,) = customers_by_id(gateway, [cus], installation_id=INSTALLATION).customers
    assert (after.name, after.phone, after.tax_ids) == ("Acme Inc", None, (gb,))


def test_creation_replayed_with_the_same_key_is_one_customer(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    first = _create(gateway, "org-1", name="One")
    second = _create(gateway, "org-1", name="One")
    assert first == second
    posts = [r for r in emu.control.requests(method="POST") if r.path == "/v1/customers"]
    assert [r.replayed for r in posts] == [False, True]
    assert len(observe_customers(gateway, installation_id=INSTALLATION).customers) == 1


def test_events_cursor(emu: EmulatorHandle, gateway: StripeGateway) -> None:
    # No cursor yet: a full resync, and the cursor to follow afterwards.
    first = customer_events_since(gateway, None)
    assert first.full_resync
    assert first.cursor is None
    a = _create(gateway, "a", name="A")
    c = _create(gateway, "c", name="C")
    start = customer_events_since(gateway, None)
    assert start.cursor is not None

    emu.control.clear_requests()
    quiet = customer_events_since(gateway, start.cursor)
    assert (quiet.customer_ids, quiet.cursor, quiet.full_resync) == ((), start.cursor, False)
    assert len(emu.control.requests()) == 1

    b = _create(gateway, "b", name="B")
    update_customer(gateway, stripe_id=a, params={"name": "A2"}, idempotency_key="ua")
    add_tax_id(gateway, stripe_id=c, tax_id=TaxId("eu_vat", "DE123456789"), idempotency_key="tc")
    changed = customer_events_since(gateway, start.cursor)
    # A tax id added in the portal emits only `customer.tax_id.created`.
    assert set(changed.customer_ids) == {a, b, c}
    assert changed.cursor is not None
    assert changed.cursor != start.cursor
    assert customer_events_since(gateway, changed.cursor).customer_ids == ()


def test_events_cursor_pages_forward(emu: EmulatorHandle, gateway: StripeGateway) -> None:
    _create(gateway, "seed")
    start = customer_events_since(gateway, None).cursor
    assert start is not None
    ids = {_create(gateway, f"org-{i}") for i in range(150)}
    emu.control.clear_requests()
    changed = customer_events_since(gateway, start)
    assert set(changed.customer_ids) == ids
    assert len(emu.control.requests()) == 2
    assert customer_events_since(gateway, changed.cursor).customer_ids == ()


def test_an_expired_or_purged_cursor_forces_a_full_resync(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    _create(gateway, "a")
    cursor = customer_events_since(gateway, None).cursor
    assert cursor is not None
    expired = customer_events_since(
        gateway, cursor, now=lambda: cursor.created + EVENT_RETENTION_SECONDS
    )
    assert expired.full_resync
    assert expired.cursor == cursor
    purged = customer_events_since(gateway, EventCursor("evt_purged", cursor.created))
    assert purged.full_resync
    assert purged.cursor == cursor


def test_a_deleted_customer_is_named_deleted(emu: EmulatorHandle, gateway: StripeGateway) -> None:
    cus = _create(gateway, "gone")
    cursor = customer_events_since(gateway, None).cursor
    make_client(emu.url).v1.customers.delete(cus)
    changed = customer_events_since(gateway, cursor)
    assert changed.customer_ids == (cus,)
    observed = customers_by_id(gateway, [cus, "cus_never"], installation_id=INSTALLATION)
    assert observed.customers == ()
    assert observed.deleted_ids == {cus, "cus_never"}
    assert observe_customers(gateway, installation_id=INSTALLATION).customers == ()


def test_writes_need_an_idempotency_key(gateway: StripeGateway) -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        update_customer(gateway, stripe_id="cus_x", params={}, idempotency_key="")
