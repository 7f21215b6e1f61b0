"""Customers, tax ids, the customer's tax location, default payment method, cash balance and
deletion hooks, through the real SDK over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripe_emulator.core import RequestContext
from stripe_emulator.resources import customers as customers_module
from stripe_emulator.state import StripeObject
from tests.fixtures.emulator import EmulatorHandle


def _event_types(client: stripe.StripeClient) -> list[str]:
    return [e.type for e in reversed(client.v1.events.list({"limit": 100}).data)]


def _error(excinfo: pytest.ExceptionInfo[stripe.StripeError]) -> Any:
    error = excinfo.value.error
    assert error is not None
    return error


# --- tax ids --------------------------------------------------------------------------------


def test_tax_id_data_on_create(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(
        {
            "name": "Acme GmbH",
            "tax_id_data": [
                {"type": "eu_vat", "value": "DE123456789"},
                {"type": "us_ein", "value": "12-3456789"},
            ],
        }
    )
    assert "tax_ids" not in customer  # includable: absent unless expanded
    full = stripe_client.v1.customers.retrieve(customer.id, {"expand": ["tax_ids"]})
    assert full.tax_ids is not None
    listed = [(t.type, t.value, t.country) for t in full.tax_ids.data]
    assert listed == [("us_ein", "12-3456789", "US"), ("eu_vat", "DE123456789", "DE")]
    assert full.tax_ids.url == f"/v1/customers/{customer.id}/tax_ids"
    eu = full.tax_ids.data[1]
    assert eu.verification is not None
    assert eu.verification.status == "pending"
    assert full.tax_ids.data[0].verification.status == "unavailable"  # type: ignore[union-attr]
    assert eu.owner is not None
    assert (eu.owner.type, eu.owner.customer, eu.customer) == ("customer", customer.id, customer.id)
    assert _event_types(stripe_client) == [
        "customer.created",
        "customer.tax_id.created",
        "customer.tax_id.created",
    ]


def test_invalid_tax_id_data_creates_nothing(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create(
            {
                "tax_id_data": [
                    {"type": "gb_vat", "value": "GB123456789"},
                    {"type": "in_gst", "value": "12345"},
                ]
            }
        )
    error = _error(excinfo)
    assert (error.code, error.param) == ("tax_id_invalid", "tax_id_data[1][value]")
    assert "Invalid value for in_gst" in str(error.message)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create({"tax_id_data": [{"type": "xx_vat", "value": "1"}]})
    assert _error(excinfo).param == "tax_id_data[0][type]"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.create({"tax_id_data": [{"type": "unknown", "value": "1"}]})
    assert stripe_client.v1.customers.list().data == []
    assert _event_types(stripe_client) == []


@pytest.mark.parametrize(
    ("type_", "good", "bad", "country"),
    [
        ("eu_vat", "FR12345678901", "US123456789", "FR"),
        ("eu_vat", "EL123456789", "DE", "GR"),
        ("gb_vat", "GB123456789012", "GB12345", "GB"),
        ("us_ein", "12-3456789", "123456789", "US"),
        ("in_gst", "12ABCDE3456FGZH", "12ABCDE3456FGXH", "IN"),
        ("au_abn", "12345678912", "1234567891", "AU"),
        ("ch_vat", "CHE-123.456.789 MWST", "CHE123456789", "CH"),
        ("jp_trn", "T1234567891234", "1234567891234", "JP"),
        ("br_cnpj", "01.234.456/5432-10", " ", "BR"),
    ],
)
def test_tax_id_formats(
    stripe_client: stripe.StripeClient, type_: str, good: str, bad: str, country: str
) -> None:
    customer = stripe_client.v1.customers.create({})
    tax_ids = stripe_client.v1.customers.tax_ids
    created = tax_ids.create(customer.id, {"type": type_, "value": good})  # type: ignore[typeddict-item]
    assert (created.country, created.value) == (country, good)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        tax_ids.create(customer.id, {"type": type_, "value": bad})  # type: ignore[typeddict-item]
    assert (_error(excinfo).code, _error(excinfo).param) == ("tax_id_invalid", "value")


def test_customer_tax_ids_round_trip(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({})
    other = stripe_client.v1.customers.create({})
    tax_ids = stripe_client.v1.customers.tax_ids
    first = tax_ids.create(customer.id, {"type": "au_abn", "value": "12345678912"})
    second = tax_ids.create(customer.id, {"type": "gb_vat", "value": "GB123456789"})
    tax_ids.create(other.id, {"type": "gb_vat", "value": "GB987654321"})
    assert first.id.startswith("txi_")
    assert tax_ids.retrieve(customer.id, first.id).value == "12345678912"
    page = tax_ids.list(customer.id, {"limit": 1})
    assert ([t.id for t in page.data], page.has_more) == ([second.id], True)
    rest = tax_ids.list(customer.id, {"starting_after": second.id})
    assert [t.id for t in rest.data] == [first.id]
    with pytest.raises(stripe.InvalidRequestError, match="No such tax_id") as excinfo:
        tax_ids.retrieve(other.id, first.id)
    assert excinfo.value.http_status == 404
    deleted = tax_ids.delete(customer.id, first.id)
    assert (deleted.id, deleted.deleted) == (first.id, True)
    assert [t.id for t in tax_ids.list(customer.id).data] == [second.id]
    with pytest.raises(stripe.InvalidRequestError):
        tax_ids.retrieve(customer.id, first.id)
    event = stripe_client.v1.events.list({"type": "customer.tax_id.deleted"}).data[0]
    assert event.data.object["id"] == first.id
    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        tax_ids.create("cus_missing", {"type": "au_abn", "value": "12345678912"})


def test_verification_magic_values_update_the_tax_id(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({})
    tax_ids = stripe_client.v1.customers.tax_ids
    verified = tax_ids.create(customer.id, {"type": "eu_vat", "value": "DE000000000"})
    assert verified.verification.status == "pending"  # type: ignore[union-attr]
    refreshed = tax_ids.retrieve(customer.id, verified.id)
    assert refreshed.verification.status == "verified"  # type: ignore[union-attr]
    event = stripe_client.v1.events.list({"type": "customer.tax_id.updated"}).data[0]
    assert event.data.object["verification"]["status"] == "verified"
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["verification"]["status"] == "pending"
    failed = tax_ids.create(customer.id, {"type": "gb_vat", "value": "GB111111111"})
    assert tax_ids.retrieve(customer.id, failed.id).verification.status == "unverified"  # type: ignore[union-attr]
    plain = tax_ids.create(customer.id, {"type": "au_abn", "value": "12345678912"})
    assert tax_ids.retrieve(customer.id, plain.id).verification.status == "pending"  # type: ignore[union-attr]


def test_top_level_tax_ids(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({})
    own = stripe_client.v1.tax_ids.create({"type": "gb_vat", "value": "GB123456789"})
    assert own.owner is not None
    assert (own.owner.type, own.customer) == ("self", None)
    theirs = stripe_client.v1.tax_ids.create(
        {
            "type": "eu_vat",
            "value": "NL123456789B01",
            "owner": {"type": "customer", "customer": customer.id},
        }
    )
    assert theirs.customer == customer.id
    assert [t.id for t in stripe_client.v1.tax_ids.list().data] == [own.id]
    by_customer = stripe_client.v1.tax_ids.list(
        {"owner": {"type": "customer", "customer": customer.id}}
    )
    assert [t.id for t in by_customer.data] == [theirs.id]
    assert [t.id for t in stripe_client.v1.customers.tax_ids.list(customer.id).data] == [theirs.id]
    assert stripe_client.v1.tax_ids.retrieve(theirs.id).value == "NL123456789B01"
    assert stripe_client.v1.tax_ids.delete(own.id).deleted is True
    assert stripe_client.v1.tax_ids.list().data == []
    # The account's own tax ids emit no events (the SDK's Event.type has no `tax_id.*`).
    assert _event_types(stripe_client) == ["customer.created", "customer.tax_id.created"]
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.tax_ids.create(
            {
                "type": "gb_vat",
                "value": "GB123456789",
                "owner": {"type": "account", "account": "acct_1"},
            }
        )
    assert _error(excinfo).param == "owner[type]"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.tax_ids.create(
            {"type": "gb_vat", "value": "GB123456789", "owner": {"type": "customer"}}
        )
    assert _error(excinfo).param == "owner[customer]"


# --- tax location ---------------------------------------------------------------------------


def _tax(client: stripe.StripeClient, customer_id: str) -> Any:
    return client.v1.customers.retrieve(customer_id, {"expand": ["tax"]}).tax


@pytest.mark.parametrize(
    ("params", "status", "location"),
    [
        ({}, "unrecognized_location", None),
        ({"address": {"country": "DE"}}, "supported", ("DE", None, "billing_address")),
        ({"address": {"country": "US", "state": "CA"}}, "unrecognized_location", None),
        (
            {"address": {"country": "US", "postal_code": "94103", "state": "CA"}},
            "supported",
            ("US", "CA", "billing_address"),
        ),
        (
            {"address": {"country": "US", "postal_code": "10001"}},
            "supported",
            ("US", "NY", "billing_address"),
        ),
        ({"address": {"country": "BR"}}, "not_collecting", ("BR", None, "billing_address")),
        (
            {"address": {"country": "DE"}, "shipping": {"name": "x", "address": {"country": "FR"}}},
            "supported",
            ("FR", None, "shipping_destination"),
        ),
        ({"tax": {"ip_address": "203.0.113.7"}}, "supported", ("GB", None, "ip_address")),
        ({"tax": {"ip_address": "8.8.8.8"}}, "unrecognized_location", None),
    ],
)
def test_customer_tax_location(
    stripe_client: stripe.StripeClient,
    params: dict[str, Any],
    status: str,
    location: tuple[str, str | None, str] | None,
) -> None:
    customer = stripe_client.v1.customers.create(params)  # type: ignore[arg-type]
    assert "tax" not in customer
    tax = _tax(stripe_client, customer.id)
    assert (tax.automatic_tax, tax.provider) == (status, "stripe")
    got = (
        None
        if tax.location is None
        else (tax.location.country, tax.location.state, tax.location.source)
    )
    assert got == location


def test_tax_follows_updates_and_lists(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({"email": "t@example.com"})
    updated = stripe_client.v1.customers.update(
        customer.id, {"address": {"country": "JP"}, "expand": ["tax"]}
    )
    assert updated.tax is not None
    assert updated.tax.location is not None
    assert (updated.tax.automatic_tax, updated.tax.location.country) == ("supported", "JP")
    event = stripe_client.v1.events.list({"type": "customer.updated"}).data[0]
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["address"] is None
    stripe_client.v1.customers.update(customer.id, {"tax": {"ip_address": "192.0.2.1"}})
    cleared = stripe_client.v1.customers.update(customer.id, {"address": "", "expand": ["tax"]})
    assert cleared.tax is not None
    assert cleared.tax.location is not None
    assert (cleared.tax.location.source, cleared.tax.location.state) == ("ip_address", "CA")
    assert cleared.tax.ip_address == "192.0.2.1"
    listed = stripe_client.v1.customers.list({"expand": ["data.tax", "data.tax_ids"]}).data[0]
    assert listed.tax is not None
    assert listed.tax.automatic_tax == "supported"
    assert listed.tax_ids is not None
    assert listed.tax_ids.data == []
    assert "tax" not in stripe_client.v1.customers.list().data[0]


def test_validate_location_immediately(stripe_client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create({"tax": {"validate_location": "immediately"}})
    assert _error(excinfo).code == "customer_tax_location_invalid"
    ok = stripe_client.v1.customers.create(
        {"address": {"country": "IN"}, "tax": {"validate_location": "immediately"}}
    )
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.update(
            ok.id, {"address": "", "tax": {"validate_location": "immediately"}}
        )
    assert _error(excinfo).code == "customer_tax_location_invalid"
    assert stripe_client.v1.customers.retrieve(ok.id).address is not None  # unchanged


def test_expanding_unknown_nested_paths_is_refused(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create({})
    for path in ("tax.location", "tax_ids.url", "invoice_settings.footer"):
        with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
            stripe_client.v1.customers.retrieve(customer.id, {"expand": [path]})


# --- default payment method -----------------------------------------------------------------


def _insert_payment_method(emulator: EmulatorHandle, customer: str | None) -> str:
    """A payment method as the payment methods module stores it (kind `payment_method`)."""
    store = emulator.server.emulator.store
    pm_id = f"pm_test{len(store.collection('payment_method')) + 1}"
    with emulator.server.emulator.lock:
        store.insert(
            "payment_method",
            {
                "id": pm_id,
                "object": "payment_method",
                "customer": customer,
                "type": "card",
                "created": 1,
                "livemode": False,
                "metadata": {},
            },
        )
    return pm_id


def test_default_payment_method_must_be_attached(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({})
    attached = _insert_payment_method(emulator, customer.id)
    loose = _insert_payment_method(emulator, None)
    updated = stripe_client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": attached}}
    )
    assert updated.invoice_settings is not None
    assert updated.invoice_settings.default_payment_method == attached
    expanded = stripe_client.v1.customers.retrieve(
        customer.id, {"expand": ["invoice_settings.default_payment_method"]}
    )
    assert expanded.invoice_settings is not None
    pm = expanded.invoice_settings.default_payment_method
    assert isinstance(pm, stripe.PaymentMethod)
    assert pm.id == attached
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": loose}}
        )
    error = _error(excinfo)
    assert (error.code, error.param) == (
        "resource_missing",
        "invoice_settings[default_payment_method]",
    )
    assert f"The customer does not have a payment method with the ID {loose}" in str(error.message)
    with pytest.raises(
        stripe.InvalidRequestError, match="No such PaymentMethod: 'pm_nope'"
    ) as excinfo:
        stripe_client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": "pm_nope"}}
        )
    assert _error(excinfo).param == "invoice_settings[default_payment_method]"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.customers.create(
            {"invoice_settings": {"default_payment_method": attached}}
        )
    unset = stripe_client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": ""}}
    )
    assert unset.invoice_settings is not None
    assert unset.invoice_settings.default_payment_method is None
    event = stripe_client.v1.events.list({"type": "customer.updated"}).data[0]
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["invoice_settings"]["default_payment_method"] == attached


def test_default_payment_method_through_the_payment_methods_api(
    stripe_client: stripe.StripeClient,
) -> None:
    customer = stripe_client.v1.customers.create({})
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    updated = stripe_client.v1.customers.update(
        customer.id, {"invoice_settings": {"default_payment_method": pm.id}}
    )
    assert updated.invoice_settings is not None
    assert updated.invoice_settings.default_payment_method == pm.id
    elsewhere = stripe_client.v1.payment_methods.attach(
        "pm_card_mastercard", {"customer": stripe_client.v1.customers.create({}).id}
    )
    with pytest.raises(stripe.InvalidRequestError, match="does not have a payment method"):
        stripe_client.v1.customers.update(
            customer.id, {"invoice_settings": {"default_payment_method": elsewhere.id}}
        )


def test_payment_method_on_create_attaches_it(stripe_client: stripe.StripeClient) -> None:
    pm = stripe_client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2040, "cvc": "123"},
        }
    )
    customer = stripe_client.v1.customers.create(
        {"payment_method": pm.id, "invoice_settings": {"default_payment_method": pm.id}}
    )
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method == pm.id
    assert stripe_client.v1.payment_methods.retrieve(pm.id).customer == customer.id
    assert _event_types(stripe_client)[-2:] == ["customer.created", "payment_method.attached"]
    with pytest.raises(stripe.InvalidRequestError, match="already been attached"):
        stripe_client.v1.customers.create({"payment_method": pm.id})
    minted = stripe_client.v1.customers.create({"payment_method": "pm_card_visa"})
    attached = stripe_client.v1.customers.payment_methods.list(minted.id).data
    assert [p.card.last4 for p in attached] == ["4242"]  # type: ignore[union-attr]
    before = len(stripe_client.v1.customers.list({"limit": 100}).data)
    with pytest.raises(stripe.CardError) as excinfo:
        stripe_client.v1.customers.create({"payment_method": "pm_card_chargeDeclined"})
    assert excinfo.value.code == "card_declined"
    with pytest.raises(stripe.InvalidRequestError, match="No such PaymentMethod") as missing:
        stripe_client.v1.customers.create({"payment_method": "pm_nope"})
    assert _error(missing).param == "payment_method"
    assert len(stripe_client.v1.customers.list({"limit": 100}).data) == before


def test_invoice_settings_and_refused_legacy_params(stripe_client: stripe.StripeClient) -> None:
    customer = stripe_client.v1.customers.create(
        {"invoice_settings": {"rendering_options": {"amount_tax_display": "include_inclusive_tax"}}}
    )
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.rendering_options is not None
    assert customer.invoice_settings.rendering_options.to_dict() == {
        "amount_tax_display": "include_inclusive_tax",
        "template": None,
    }
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create({"source": "tok_visa"})
    assert _error(excinfo).param == "source"
    customer = stripe_client.v1.customers.create({})
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.update(customer.id, {"default_source": "card_1"})
    assert _error(excinfo).param == "default_source"
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create({"invoice_prefix": "ab"})
    assert _error(excinfo).param == "invoice_prefix"
    assert stripe_client.v1.customers.create({"invoice_prefix": "ACME1"}).invoice_prefix == "ACME1"


# --- test clock, cash balance, deletion -----------------------------------------------------


def test_customer_on_a_test_clock_lives_in_its_time(stripe_client: stripe.StripeClient) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 1_600_000_000})
    customer = stripe_client.v1.customers.create({"test_clock": clock.id})
    assert (customer.test_clock, customer.created) == (clock.id, 1_600_000_000)
    expanded = stripe_client.v1.customers.retrieve(customer.id, {"expand": ["test_clock"]})
    assert isinstance(expanded.test_clock, stripe.test_helpers.TestClock)
    with pytest.raises(stripe.InvalidRequestError, match="No such test_clock") as excinfo:
        stripe_client.v1.customers.create({"test_clock": "clock_nope"})
    assert _error(excinfo).param == "test_clock"


def test_cash_balance(stripe_client: stripe.StripeClient, emulator: EmulatorHandle) -> None:
    plain = stripe_client.v1.customers.create({})
    balance = stripe_client.v1.customers.cash_balance.retrieve(plain.id)
    assert balance.available is not None
    assert (balance.customer, balance.available.to_dict()) == (plain.id, {})
    assert (balance.settings.reconciliation_mode, balance.settings.using_merchant_default) == (
        "automatic",
        True,
    )
    manual = stripe_client.v1.customers.create(
        {"cash_balance": {"settings": {"reconciliation_mode": "manual"}}}
    )
    settings = stripe_client.v1.customers.cash_balance.retrieve(manual.id).settings
    assert (settings.reconciliation_mode, settings.using_merchant_default) == ("manual", False)
    back = stripe_client.v1.customers.cash_balance.update(
        manual.id, {"settings": {"reconciliation_mode": "merchant_default"}}
    )
    assert (back.settings.reconciliation_mode, back.settings.using_merchant_default) == (
        "automatic",
        True,
    )
    expanded = stripe_client.v1.customers.retrieve(manual.id, {"expand": ["cash_balance"]})
    assert isinstance(expanded.cash_balance, stripe.CashBalance)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.cash_balance.update(
            manual.id, {"settings": {"reconciliation_mode": "sometimes"}}
        )
    assert _error(excinfo).param == "settings[reconciliation_mode]"
    before = len(stripe_client.v1.customers.list().data)
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        stripe_client.v1.customers.create(
            {"cash_balance": {"settings": {"reconciliation_mode": "sometimes"}}}
        )
    assert _error(excinfo).param == "cash_balance[settings][reconciliation_mode]"
    assert len(stripe_client.v1.customers.list().data) == before
    # Funds (as the payment methods module records them) block deletion, even at zero.
    store = emulator.server.emulator.store
    with emulator.server.emulator.lock:
        stored = store.get("cash_balance", f"cashbal_{manual.id}")
        assert stored is not None
        store.replace("cash_balance", {**stored, "available": {"eur": 0}})
    with pytest.raises(stripe.InvalidRequestError, match="cash balance"):
        stripe_client.v1.customers.delete(manual.id)
    assert stripe_client.v1.customers.delete(plain.id).deleted is True


@pytest.fixture
def deletion_log() -> Iterator[list[tuple[str, bool]]]:
    log: list[tuple[str, bool]] = []

    def hook(ctx: RequestContext, customer: StripeObject) -> None:
        # Runs before the customer goes: it is still in the store.
        log.append((customer["id"], ctx.store.get("customer", customer["id"]) is not None))
        ctx.emit("customer.subscription.deleted", {"id": "sub_x", "object": "subscription"})

    customers_module.on_customer_deleted(hook)
    customers_module.on_customer_deleted(hook)  # idempotent
    assert customers_module.DELETION_HOOKS.count(hook) == 1
    yield log
    customers_module.DELETION_HOOKS.remove(hook)


def test_deleting_a_customer_runs_the_hooks_and_removes_its_tax_ids(
    stripe_client: stripe.StripeClient, deletion_log: list[tuple[str, bool]]
) -> None:
    customer = stripe_client.v1.customers.create(
        {"tax_id_data": [{"type": "au_abn", "value": "12345678912"}]}
    )
    tax_id = stripe_client.v1.customers.tax_ids.list(customer.id).data[0]
    assert stripe_client.v1.customers.delete(customer.id).deleted is True
    assert deletion_log == [(customer.id, True)]
    assert _event_types(stripe_client)[-2:] == ["customer.subscription.deleted", "customer.deleted"]
    with pytest.raises(stripe.InvalidRequestError, match="No such tax_id"):
        stripe_client.v1.tax_ids.retrieve(tax_id.id)
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
    on_clock = stripe_client.v1.customers.create({"test_clock": clock.id})
    stripe_client.v1.test_helpers.test_clocks.delete(clock.id)
    assert deletion_log[-1] == (on_clock.id, True)


def _insert_cash_transaction(emulator: EmulatorHandle, customer: str, amount: int) -> str:
    """A `funded` transaction as the payment methods module records it."""
    emu = emulator.server.emulator
    tx_id = f"ccsbtxn_test{len(emu.store.collection('customer_cash_balance_transaction')) + 1}"
    with emu.lock:
        emu.store.insert(
            "customer_cash_balance_transaction",
            {
                "id": tx_id,
                "object": "customer_cash_balance_transaction",
                "adjusted_for_overdraft": None,
                "applied_to_payment": None,
                "created": 1_700_000_000,
                "currency": "eur",
                "customer": customer,
                "customer_account": None,
                "ending_balance": amount,
                "funded": {
                    "bank_transfer": {
                        "eu_bank_transfer": None,
                        "gb_bank_transfer": None,
                        "jp_bank_transfer": None,
                        "reference": "REF",
                        "type": "eu_bank_transfer",
                        "us_bank_transfer": None,
                    }
                },
                "livemode": False,
                "net_amount": amount,
                "refunded_from_payment": None,
                "transferred_to_balance": None,
                "type": "funded",
                "unapplied_from_payment": None,
            },
        )
    return tx_id


def test_cash_balance_transactions(
    stripe_client: stripe.StripeClient, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({})
    other = stripe_client.v1.customers.create({})
    first = _insert_cash_transaction(emulator, customer.id, 500)
    _insert_cash_transaction(emulator, other.id, 700)
    second = _insert_cash_transaction(emulator, customer.id, 900)
    txns = stripe_client.v1.customers.cash_balance_transactions
    listed = txns.list(customer.id)
    assert [t.id for t in listed.data] == [second, first]
    assert listed.url == f"/v1/customers/{customer.id}/cash_balance_transactions"
    assert txns.retrieve(customer.id, first).net_amount == 500
    with pytest.raises(stripe.InvalidRequestError) as excinfo:
        txns.retrieve(other.id, first)
    assert excinfo.value.http_status == 404
