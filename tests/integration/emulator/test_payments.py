"""Payment methods, payment intents, setup intents and cash balances through the real SDK
over HTTP: test cards and test payment methods, declines as `stripe.CardError`, 3D Secure
through the operator control, bank transfers funded by the test helper, and response shapes
against the SDK's resource classes and Stripe's published examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.core import RequestContext
from stripe_emulator.resources import payment_intents
from stripe_emulator.state import StripeObject
from tests import compat_files
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle
from tests.integration.emulator.test_fidelity import _compare as compare_with_example
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient


def _customer(client: Client) -> str:
    return client.v1.customers.create({"email": "pay@example.com"}).id


def _event_types(client: Client) -> list[str]:
    return [e.type for e in reversed(client.v1.events.list({"limit": 100}).data)]


def _card(client: Client, number: str = "4242424242424242") -> stripe.PaymentMethod:
    return client.v1.payment_methods.create(
        {
            "type": "card",
            "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"},
        }
    )


# --- payment methods ---------------------------------------------------------------------


def test_card_payment_method_has_its_card_details(stripe_client: Client) -> None:
    pm = _card(stripe_client)
    assert pm.id.startswith("pm_")
    assert (pm.type, pm.customer, pm.allow_redisplay) == ("card", None, "unspecified")
    card = pm.card
    assert card is not None
    assert (card.brand, card.last4, card.exp_month, card.exp_year) == ("visa", "4242", 12, 2034)
    assert (card.funding, card.country, card.checks and card.checks.cvc_check) == (
        "credit",
        "US",
        "pass",
    )
    again = _card(stripe_client)
    other = _card(stripe_client, "5555555555554444")
    assert again.card
    assert other.card
    assert other.card.brand == "mastercard"
    assert card.fingerprint == again.card.fingerprint != other.card.fingerprint
    assert stripe_client.v1.payment_methods.retrieve(pm.id).card == pm.card


def test_card_numbers_and_dates_are_checked(stripe_client: Client) -> None:
    with pytest.raises(stripe.CardError) as wrong:
        _card(stripe_client, "4242424242424241")
    assert wrong.value.code == "incorrect_number"
    with pytest.raises(stripe.CardError) as expired:
        stripe_client.v1.payment_methods.create(
            {
                "type": "card",
                "card": {"number": "4242424242424242", "exp_month": 1, "exp_year": 2020},
            }
        )
    assert expired.value.code == "invalid_expiry_year"
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.payment_methods.create(
            {"type": "card", "card": {"number": "4242424242424242"}}
        )
    assert missing.value.param == "card[exp_month]"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.v1.payment_methods.create({"type": "card", "colour": "red"})  # type: ignore[arg-type]
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.InvalidRequestError) as unsupported:
        stripe_client.v1.payment_methods.create({"type": "sepa_debit"})
    assert unsupported.value.param == "type"


def test_each_test_payment_method_use_mints_a_new_id(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    tokens = [
        "pm_card_visa",
        "pm_card_mastercard",
        "pm_card_authenticationRequired",
        "pm_card_authenticationRequiredOnSetup",
    ]
    attached = [
        stripe_client.v1.payment_methods.attach(t, {"customer": customer}) for t in tokens * 2
    ]
    ids = [pm.id for pm in attached]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("pm_") and i not in tokens for i in ids)
    assert [pm.card.brand for pm in attached[:2] if pm.card] == ["visa", "mastercard"]
    used = [
        stripe_client.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "payment_method": t}
        ).payment_method
        for t in ("pm_card_chargeDeclined", "pm_card_chargeDeclined")
    ]
    assert len({str(u) for u in used}) == 2


def test_attach_list_detach(stripe_client: Client, emulator: EmulatorHandle) -> None:
    customer = _customer(stripe_client)
    card = _card(stripe_client)
    attached = stripe_client.v1.payment_methods.attach(card.id, {"customer": customer})
    assert attached.customer == customer
    balance = stripe_client.v1.payment_methods.create({"type": "customer_balance"})
    stripe_client.v1.payment_methods.attach(balance.id, {"customer": customer})
    stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": _customer(stripe_client)})

    listed = stripe_client.v1.payment_methods.list({"customer": customer})
    assert [pm.id for pm in listed.data] == [balance.id, card.id]
    cards = stripe_client.v1.payment_methods.list({"customer": customer, "type": "card"})
    assert [pm.id for pm in cards.data] == [card.id]
    nested = stripe_client.v1.customers.payment_methods.list(customer, {"type": "customer_balance"})
    assert [pm.id for pm in nested.data] == [balance.id]
    assert stripe_client.v1.customers.payment_methods.retrieve(customer, card.id).id == card.id

    with pytest.raises(stripe.InvalidRequestError, match="already been attached"):
        stripe_client.v1.payment_methods.attach(card.id, {"customer": _customer(stripe_client)})
    stripe_client.v1.customers.update(
        customer, {"invoice_settings": {"default_payment_method": card.id}}
    )
    detached = stripe_client.v1.payment_methods.detach(card.id)
    assert detached.customer is None
    customer_after = stripe_client.v1.customers.retrieve(customer)
    assert customer_after.invoice_settings is not None
    assert customer_after.invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError, match="may not be used again"):
        stripe_client.v1.payment_methods.attach(card.id, {"customer": customer})
    with pytest.raises(stripe.InvalidRequestError, match="not attached"):
        stripe_client.v1.payment_methods.detach(card.id)

    events = stripe_client.v1.events.list({"type": "payment_method.detached"}).data
    assert events[0].data.object["id"] == card.id
    previous = events[0].data.previous_attributes
    assert previous is not None
    assert previous.to_dict() == {"customer": customer}
    assert _event_types(stripe_client).count("payment_method.attached") == 3


def test_update_needs_a_customer_and_records_previous_attributes(stripe_client: Client) -> None:
    card = _card(stripe_client)
    with pytest.raises(stripe.InvalidRequestError, match="save this PaymentMethod"):
        stripe_client.v1.payment_methods.update(card.id, {"metadata": {"a": "1"}})
    stripe_client.v1.payment_methods.attach(card.id, {"customer": _customer(stripe_client)})
    updated = stripe_client.v1.payment_methods.update(
        card.id, {"metadata": {"a": "1"}, "card": {"exp_year": 2040}}
    )
    assert updated.card
    assert updated.card.exp_year == 2040
    event = stripe_client.v1.events.list({"type": "payment_method.updated"}).data[0]
    assert event.data.previous_attributes is not None
    assert event.data.previous_attributes["metadata"].to_dict() == {"a": None}
    assert event.data.previous_attributes["card"]["exp_year"] == 2034


@pytest.mark.parametrize(
    ("source", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
    ],
)
def test_attaching_a_declining_card_fails_the_card_check(
    stripe_client: Client, source: str, decline_code: str
) -> None:
    pm = source if source.startswith("pm_") else _card(stripe_client, source).id
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_methods.attach(pm, {"customer": _customer(stripe_client)})
    assert declined.value.code == "card_declined"
    assert declined.value.error is not None
    assert declined.value.error.decline_code == decline_code
    assert declined.value.http_status == 402


def test_deleting_a_customer_detaches_its_payment_methods(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    pm = stripe_client.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
    stripe_client.v1.customers.delete(customer)
    assert stripe_client.v1.payment_methods.retrieve(pm.id).customer is None
    assert _event_types(stripe_client)[-2:] == ["payment_method.detached", "customer.deleted"]


# --- payment intents: cards --------------------------------------------------------------


def test_confirmed_payment_succeeds_with_a_charge(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 2000,
            "currency": "USD",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "metadata": {"order": "1"},
            "expand": ["latest_charge"],
        }
    )
    assert (intent.status, intent.amount_received, intent.currency) == ("succeeded", 2000, "usd")
    charge = intent.latest_charge
    assert isinstance(charge, stripe.Charge)
    assert (charge.status, charge.paid, charge.captured, charge.amount) == (
        "succeeded",
        True,
        True,
        2000,
    )
    assert charge.payment_intent == intent.id
    assert stripe_client.v1.charges.retrieve(charge.id).id == charge.id
    assert intent.client_secret
    assert intent.client_secret.startswith(f"{intent.id}_secret_")
    assert _event_types(stripe_client)[-3:] == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    # Used without being saved to the customer, the payment method is spent.
    with pytest.raises(stripe.InvalidRequestError, match="may not be used again"):
        stripe_client.v1.payment_intents.create(
            {"amount": 2000, "currency": "usd", "payment_method": str(intent.payment_method)}
        )


def test_status_machine_step_by_step(stripe_client: Client) -> None:
    intents = stripe_client.v1.payment_intents
    intent = intents.create({"amount": 1500, "currency": "eur"})
    assert intent.status == "requires_payment_method"
    assert intent.payment_method_types == ["card"]
    assert intent.automatic_payment_methods
    assert intent.automatic_payment_methods.enabled
    with pytest.raises(stripe.InvalidRequestError, match="missing a payment method"):
        intents.confirm(intent.id)
    updated = intents.update(intent.id, {"payment_method": "pm_card_mastercard", "amount": 1700})
    assert (updated.status, updated.amount) == ("requires_confirmation", 1700)
    confirmed = intents.confirm(intent.id)
    assert (confirmed.status, confirmed.amount_received) == ("succeeded", 1700)
    with pytest.raises(stripe.InvalidRequestError) as again:
        intents.confirm(intent.id)
    assert again.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError):
        intents.cancel(intent.id)
    with pytest.raises(stripe.InvalidRequestError):
        intents.update(intent.id, {"amount": 10})


@pytest.mark.parametrize(
    ("source", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
        ("pm_card_chargeCustomerFail", "generic_decline"),
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
    ],
)
def test_decline_is_a_card_error_and_the_intent_records_it(
    stripe_client: Client, source: str, decline_code: str
) -> None:
    pm = source if source.startswith("pm_") else _card(stripe_client, source).id
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            {"amount": 5000, "currency": "usd", "payment_method": pm, "confirm": True}
        )
    error = declined.value
    assert (error.http_status, error.code) == (402, "card_declined")
    assert error.error is not None
    assert error.error.type == "card_error"
    assert error.error.decline_code == decline_code
    embedded = error.error.payment_intent
    assert embedded is not None
    assert embedded["status"] == "requires_payment_method"
    intent = stripe_client.v1.payment_intents.retrieve(embedded["id"])
    assert intent.status == "requires_payment_method"
    assert intent.payment_method is None
    last = intent.last_payment_error
    assert last is not None
    assert (last.code, last.decline_code, last.type) == (
        "card_declined",
        decline_code,
        "card_error",
    )
    assert last.payment_method is not None
    assert last.payment_method.id.startswith("pm_")
    assert last.charge == intent.latest_charge
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    assert (charge.status, charge.failure_code) == ("failed", "card_declined")
    assert _event_types(stripe_client)[-2:] == ["charge.failed", "payment_intent.payment_failed"]
    # A new payment method makes it confirmable again.
    retried = stripe_client.v1.payment_intents.confirm(
        intent.id, {"payment_method": "pm_card_visa"}
    )
    assert retried.status == "succeeded"
    assert retried.last_payment_error is None


def test_customer_saved_card_declines_later(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    pm = stripe_client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", {"customer": customer}
    )
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            {
                "amount": 900,
                "currency": "usd",
                "customer": customer,
                "payment_method": pm.id,
                "confirm": True,
                "off_session": True,
            }
        )
    assert declined.value.error is not None
    assert declined.value.error.decline_code == "generic_decline"
    with pytest.raises(stripe.InvalidRequestError, match="belongs to Customer"):
        stripe_client.v1.payment_intents.create(
            {"amount": 900, "currency": "usd", "payment_method": pm.id}
        )


@pytest.mark.parametrize(
    "source", ["pm_card_authenticationRequired", "pm_card_authenticationRequiredOnSetup"]
)
def test_authentication_then_succeed(
    stripe_client: Client, emulator: EmulatorHandle, source: str
) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 3000, "currency": "usd", "payment_method": source, "confirm": True}
    )
    assert intent.status == "requires_action"
    assert intent.next_action is not None
    assert intent.next_action.type == "use_stripe_sdk"
    done = emulator.control.authenticate_payment_intent(intent.id, "succeed")
    assert done["status"] == "succeeded"
    after = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert (after.status, after.amount_received, after.next_action) == ("succeeded", 3000, None)
    assert _event_types(stripe_client)[-4:] == [
        "payment_intent.created",
        "payment_intent.requires_action",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]


def test_authentication_redirect_then_fail(stripe_client: Client, emulator: EmulatorHandle) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "payment_method": _card(stripe_client, "4000002760003184").id,
            "confirm": True,
            "return_url": "https://example.com/back",
        }
    )
    assert intent.next_action is not None
    assert intent.next_action.type == "redirect_to_url"
    redirect = intent.next_action.redirect_to_url
    assert redirect is not None
    assert redirect.return_url == "https://example.com/back"
    failed = emulator.control.authenticate_payment_intent(intent.id, "fail")
    assert failed["status"] == "requires_payment_method"
    after = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert after.last_payment_error is not None
    assert after.last_payment_error.code == "payment_intent_authentication_failure"
    assert _event_types(stripe_client)[-1] == "payment_intent.payment_failed"
    with pytest.raises(httpx.HTTPStatusError):
        emulator.control.authenticate_payment_intent(intent.id, "succeed")


def test_off_session_authentication_required_declines(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    pm = stripe_client.v1.payment_methods.attach(
        "pm_card_authenticationRequired", {"customer": customer}
    )
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.payment_intents.create(
            {
                "amount": 1000,
                "currency": "usd",
                "customer": customer,
                "payment_method": pm.id,
                "confirm": True,
                "off_session": True,
            }
        )
    assert declined.value.code == "authentication_required"
    assert declined.value.error is not None
    assert declined.value.error.decline_code == "authentication_required"


def test_manual_capture(stripe_client: Client) -> None:
    intents = stripe_client.v1.payment_intents
    intent = intents.create(
        {
            "amount": 4000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "capture_method": "manual",
            "confirm": True,
        }
    )
    assert (intent.status, intent.amount_capturable, intent.amount_received) == (
        "requires_capture",
        4000,
        0,
    )
    with pytest.raises(stripe.InvalidRequestError):
        intents.capture(intent.id, {"amount_to_capture": 5000})
    captured = intents.capture(intent.id, {"amount_to_capture": 3500})
    assert (captured.status, captured.amount_received, captured.amount_capturable) == (
        "succeeded",
        3500,
        0,
    )
    charge = stripe_client.v1.charges.retrieve(str(captured.latest_charge))
    assert (charge.captured, charge.amount_captured) == (True, 3500)
    assert "payment_intent.amount_capturable_updated" in _event_types(stripe_client)
    other = intents.create({"amount": 4000, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError):
        intents.capture(other.id)


@pytest.fixture
def outcomes() -> Iterator[list[tuple[str, str, bool]]]:
    """What the payment intents' outcome hooks see (the emulator runs in this process)."""
    seen: list[tuple[str, str, bool]] = []

    def hook(ctx: RequestContext, intent: StripeObject, succeeded: bool) -> None:
        seen.append((intent["id"], intent["status"], succeeded))

    payment_intents.on_intent_outcome(hook)
    yield seen
    payment_intents.INTENT_HOOKS.remove(hook)


def test_manual_capture_runs_the_outcome_hooks_and_emits_stripes_events(
    stripe_client: Client, outcomes: list[tuple[str, str, bool]]
) -> None:
    intents = stripe_client.v1.payment_intents
    params: dict[str, Any] = {
        "amount": 4000,
        "currency": "usd",
        "payment_method": "pm_card_visa",
        "capture_method": "manual",
        "confirm": True,
    }
    intent = intents.create(params)  # type: ignore[arg-type]
    assert _event_types(stripe_client) == [
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.amount_capturable_updated",
    ]
    assert outcomes == []  # an authorization is not yet a successful payment
    intents.capture(intent.id)
    assert _event_types(stripe_client)[3:] == ["charge.captured", "payment_intent.succeeded"]
    assert outcomes == [(intent.id, "succeeded", True)]

    held = intents.create(params)  # type: ignore[arg-type]
    canceled = intents.cancel(held.id, {"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.amount_capturable) == ("canceled", 0)
    assert _event_types(stripe_client)[-2:] == ["charge.refunded", "payment_intent.canceled"]
    charge = stripe_client.v1.charges.retrieve(str(canceled.latest_charge))
    assert (charge.captured, charge.refunded, charge.amount_refunded) == (False, True, 4000)
    assert outcomes[-1] == (held.id, "canceled", False)


def test_cancel_and_list(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    intents = stripe_client.v1.payment_intents
    first = intents.create({"amount": 1000, "currency": "usd", "customer": customer})
    second = intents.create({"amount": 1000, "currency": "usd", "customer": customer})
    intents.create({"amount": 1000, "currency": "usd"})
    canceled = intents.cancel(first.id, {"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert canceled.canceled_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        intents.confirm(first.id, {"payment_method": "pm_card_visa"})
    listed = intents.list({"customer": customer})
    assert [i.id for i in listed.data] == [second.id, first.id]
    assert len(intents.list({"limit": 2}).data) == 2
    assert _event_types(stripe_client)[-1] == "payment_intent.canceled"


def test_unset_references_expand_to_null(stripe_client: Client) -> None:
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "expand": ["customer", "payment_method", "latest_charge"],
        }
    )
    assert (intent.customer, intent.payment_method, intent.latest_charge) == (None, None, None)
    customer = _customer(stripe_client)
    paid = stripe_client.v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "expand": ["customer", "payment_method"],
        }
    )
    assert isinstance(paid.customer, stripe.Customer)
    assert isinstance(paid.payment_method, stripe.PaymentMethod)
    setup = stripe_client.v1.setup_intents.create({"expand": ["customer", "payment_method"]})
    assert (setup.customer, setup.payment_method) == (None, None)
    pm = stripe_client.v1.payment_methods.retrieve("pm_card_visa", {"expand": ["customer"]})
    assert pm.customer is None


def test_intent_parameters_are_validated(stripe_client: Client) -> None:
    intents = stripe_client.v1.payment_intents
    with pytest.raises(stripe.InvalidRequestError) as refused:
        intents.create(
            {"amount": 1000, "currency": "usd", "payment_method_types": ["card"]}  # type: ignore[typeddict-unknown-key]
        )
    assert (refused.value.code, refused.value.param) == (
        "payment_method_types_no_longer_supported",
        "payment_method_types",
    )
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        intents.create({"amount": 1000, "currency": "usd", "colour": "red"})  # type: ignore[typeddict-unknown-key]
    assert (unknown.value.code, unknown.value.param) == ("parameter_unknown", "colour")
    with pytest.raises(stripe.InvalidRequestError) as missing:
        intents.create({"currency": "usd"})  # type: ignore[typeddict-item]
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "amount")
    with pytest.raises(stripe.InvalidRequestError) as bad_currency:
        intents.create({"amount": 1000, "currency": "xyz"})
    assert bad_currency.value.param == "currency"
    with pytest.raises(stripe.InvalidRequestError) as small:
        intents.create({"amount": 10, "currency": "usd"})
    assert small.value.code == "amount_too_small"
    with pytest.raises(stripe.InvalidRequestError) as enum:
        intents.create({"amount": 1000, "currency": "usd", "capture_method": "later"})
    assert enum.value.param == "capture_method"
    allowed = intents.create(
        {"amount": 1000, "currency": "usd", "allowed_payment_method_types": ["card"]}
    )
    assert (allowed.payment_method_types, allowed.automatic_payment_methods) == (["card"], None)
    balance = stripe_client.v1.payment_methods.create({"type": "customer_balance"})
    with pytest.raises(stripe.InvalidRequestError) as incompatible:
        intents.update(allowed.id, {"payment_method": balance.id})
    assert incompatible.value.code == "payment_intent_incompatible_payment_method"
    with pytest.raises(stripe.InvalidRequestError) as refused_update:
        intents.update(allowed.id, {"payment_method_types": ["card"]})  # type: ignore[arg-type]
    assert refused_update.value.code == "payment_method_types_no_longer_supported"


def test_declines_replay_with_their_idempotency_key(emulator: EmulatorHandle) -> None:
    http = httpx.Client(base_url=emulator.url, auth=(TEST_API_KEY, ""))
    data = {
        "amount": "1000",
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": "true",
    }
    first = http.post("/v1/payment_intents", data=data, headers={"Idempotency-Key": "k1"})
    again = http.post("/v1/payment_intents", data=data, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 402
    assert again.headers["Idempotent-Replayed"] == "true"
    assert first.json() == again.json()
    assert first.json()["error"]["payment_intent"]["id"].startswith("pi_")


# --- setup intents -----------------------------------------------------------------------


def test_setup_intent_succeeds_and_attaches(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    setup = stripe_client.v1.setup_intents.create({"customer": customer, "usage": "on_session"})
    assert (setup.status, setup.usage) == ("requires_payment_method", "on_session")
    setup = stripe_client.v1.setup_intents.update(setup.id, {"payment_method": "pm_card_visa"})
    assert setup.status == "requires_confirmation"
    done = stripe_client.v1.setup_intents.confirm(setup.id)
    assert done.status == "succeeded"
    pm = stripe_client.v1.payment_methods.retrieve(str(done.payment_method))
    assert pm.customer == customer
    assert _event_types(stripe_client)[-3:] == [
        "setup_intent.created",
        "payment_method.attached",
        "setup_intent.succeeded",
    ]
    assert [s.id for s in stripe_client.v1.setup_intents.list({"customer": customer}).data] == [
        setup.id
    ]
    with pytest.raises(stripe.InvalidRequestError) as late:
        stripe_client.v1.setup_intents.cancel(setup.id)
    assert late.value.code == "setup_intent_unexpected_state"


def test_setup_decline_and_cancel(stripe_client: Client) -> None:
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.setup_intents.create(
            {"payment_method": "pm_card_chargeDeclined", "confirm": True}
        )
    error = declined.value.error
    assert error is not None
    assert (error.code, error.decline_code) == ("card_declined", "generic_decline")
    assert error.setup_intent is not None
    setup = stripe_client.v1.setup_intents.retrieve(error.setup_intent["id"])
    assert setup.status == "requires_payment_method"
    assert setup.last_setup_error is not None
    assert setup.last_setup_error.decline_code == "generic_decline"
    canceled = stripe_client.v1.setup_intents.cancel(setup.id, {"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert _event_types(stripe_client)[-2:] == [
        "setup_intent.setup_failed",
        "setup_intent.canceled",
    ]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.setup_intents.create({"payment_method_types": ["card"]})  # type: ignore[arg-type]
    assert refused.value.code == "payment_method_types_no_longer_supported"


def test_authentication_on_setup_then_off_session_payments_succeed(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client)
    setup = stripe_client.v1.setup_intents.create(
        {
            "customer": customer,
            "payment_method": "pm_card_authenticationRequiredOnSetup",
            "confirm": True,
        }
    )
    assert setup.status == "requires_action"
    assert setup.next_action is not None
    assert setup.next_action.type == "use_stripe_sdk"
    assert emulator.control.authenticate_setup_intent(setup.id)["status"] == "succeeded"
    pm = str(stripe_client.v1.setup_intents.retrieve(setup.id).payment_method)
    assert stripe_client.v1.payment_methods.retrieve(pm).customer == customer
    paid = stripe_client.v1.payment_intents.create(
        {
            "amount": 1200,
            "currency": "usd",
            "customer": customer,
            "payment_method": pm,
            "confirm": True,
            "off_session": True,
        }
    )
    assert paid.status == "succeeded"
    assert "setup_intent.requires_action" in _event_types(stripe_client)


def test_always_authenticate_card_needs_it_even_after_setup(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client)
    setup = stripe_client.v1.setup_intents.create(
        {"customer": customer, "payment_method": "pm_card_authenticationRequired", "confirm": True}
    )
    emulator.control.authenticate_setup_intent(setup.id)
    pm = str(stripe_client.v1.setup_intents.retrieve(setup.id).payment_method)
    on_session = stripe_client.v1.payment_intents.create(
        {
            "amount": 1200,
            "currency": "usd",
            "customer": customer,
            "payment_method": pm,
            "confirm": True,
        }
    )
    assert on_session.status == "requires_action"
    failed = stripe_client.v1.setup_intents.create(
        {"customer": customer, "payment_method": "pm_card_authenticationRequired", "confirm": True}
    )
    after = emulator.control.authenticate_setup_intent(failed.id, "fail")
    assert after["status"] == "requires_payment_method"
    assert after["last_setup_error"]["code"] == "setup_intent_authentication_failure"


# --- customer balance (bank transfers) ---------------------------------------------------


def _bank_transfer_intent(client: Client, customer: str, amount: int) -> stripe.PaymentIntent:
    return client.v1.payment_intents.create(
        {
            "amount": amount,
            "currency": "usd",
            "customer": customer,
            "allowed_payment_method_types": ["customer_balance"],
            "payment_method_data": {"type": "customer_balance"},
            "payment_method_options": {
                "customer_balance": {
                    "funding_type": "bank_transfer",
                    "bank_transfer": {"type": "us_bank_transfer"},
                }
            },
            "confirm": True,
        }
    )


def test_bank_transfer_instructions_then_funding_completes(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client)
    intent = _bank_transfer_intent(stripe_client, customer, 5000)
    assert intent.status == "requires_action"
    assert intent.next_action is not None
    assert intent.next_action.type == "display_bank_transfer_instructions"
    instructions = intent.next_action.display_bank_transfer_instructions
    assert instructions is not None
    assert (instructions.amount_remaining, instructions.currency, instructions.type) == (
        5000,
        "usd",
        "us_bank_transfer",
    )
    assert instructions.financial_addresses is not None
    address = instructions.financial_addresses[0]
    assert address.type == "aba"
    assert address.aba is not None
    assert address.aba.routing_number
    assert address.aba.account_number

    funded = stripe_client.v1.test_helpers.customers.fund_cash_balance(
        customer, {"amount": 2000, "currency": "usd", "reference": "REF1"}
    )
    assert (funded.type, funded.net_amount, funded.ending_balance) == ("funded", 2000, 2000)
    partial = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert partial.status == "requires_action"
    assert partial.next_action
    assert partial.next_action.display_bank_transfer_instructions
    assert partial.next_action.display_bank_transfer_instructions.amount_remaining == 3000

    emulator.control.fund_cash_balance(customer, 4000, "usd")
    done = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert (done.status, done.amount_received, done.next_action) == ("succeeded", 5000, None)
    types_ = _event_types(stripe_client)
    assert "payment_intent.partially_funded" in types_
    assert types_[-1] == "cash_balance.funds_available"
    assert types_.index("payment_intent.succeeded") > types_.index(
        "payment_intent.partially_funded"
    )
    # The 1000 left over pays the next intent at confirmation.
    stripe_client.v1.test_helpers.customers.fund_cash_balance(
        customer, {"amount": 500, "currency": "usd"}
    )
    next_one = _bank_transfer_intent(stripe_client, customer, 1500)
    assert next_one.status == "succeeded"


def test_manual_reconciliation_waits_for_apply_customer_balance(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create(
        {"cash_balance": {"settings": {"reconciliation_mode": "manual"}}}
    ).id
    intent = _bank_transfer_intent(stripe_client, customer, 5000)
    emulator.control.fund_cash_balance(customer, 6000, "usd")
    waiting = stripe_client.v1.payment_intents.retrieve(intent.id)
    assert waiting.status == "requires_action"
    assert _event_types(stripe_client)[-1] == "cash_balance.funds_available"
    intents = stripe_client.v1.payment_intents
    partial = intents.apply_customer_balance(intent.id, {"amount": 2000, "currency": "usd"})
    assert partial.next_action is not None
    assert partial.next_action.display_bank_transfer_instructions is not None
    assert partial.next_action.display_bank_transfer_instructions.amount_remaining == 3000
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        intents.apply_customer_balance(intent.id, {"amount": 4000})
    assert too_much.value.param == "amount"
    done = intents.apply_customer_balance(intent.id)
    assert (done.status, done.amount_received) == ("succeeded", 5000)
    with pytest.raises(stripe.InvalidRequestError) as late:
        intents.apply_customer_balance(intent.id)
    assert late.value.code == "payment_intent_unexpected_state"
    balance = stripe_client.v1.customers.cash_balance.retrieve(customer)
    assert balance.available is not None
    assert balance.available["usd"] == 1000


def test_customer_balance_needs_a_customer_and_canceling_returns_funds(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        stripe_client.v1.payment_intents.create(
            {
                "amount": 1000,
                "currency": "usd",
                "payment_method_data": {"type": "customer_balance"},
                "confirm": True,
            }
        )
    assert no_customer.value.param == "customer"
    customer = _customer(stripe_client)
    intent = _bank_transfer_intent(stripe_client, customer, 3000)
    emulator.control.fund_cash_balance(customer, 1000, "usd")
    stripe_client.v1.payment_intents.cancel(intent.id)
    unapplied = next(
        e.data.object
        for e in stripe_client.v1.events.list(
            {"type": "customer_cash_balance_transaction.created"}
        ).data
    )
    assert (unapplied["type"], unapplied["net_amount"], unapplied["ending_balance"]) == (
        "unapplied_from_payment",
        1000,
        1000,
    )
    with pytest.raises(httpx.HTTPStatusError):
        emulator.control.fund_cash_balance("cus_missing", 100, "usd")


def test_objects_of_a_test_clock_customer_live_in_its_time(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    clock = stripe_client.v1.test_helpers.test_clocks.create({"frozen_time": 1_700_000_000})
    customer = stripe_client.v1.customers.create({"test_clock": clock.id}).id
    intent = stripe_client.v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    charge = stripe_client.v1.charges.retrieve(str(intent.latest_charge))
    setup = stripe_client.v1.setup_intents.create({"customer": customer})
    funded = emulator.control.fund_cash_balance(customer, 100, "usd")
    assert {intent.created, charge.created, setup.created, funded["created"]} == {1_700_000_000}


# --- events and webhooks -----------------------------------------------------------------


def test_payment_events_reach_webhook_endpoints(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    stripe_client.v1.webhook_endpoints.create(
        {"url": "http://127.0.0.1:9/hook", "enabled_events": ["payment_intent.succeeded"]}
    )
    intent = stripe_client.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    event = stripe_client.v1.events.list({"type": "payment_intent.succeeded"}).data[0]
    assert event.data.object["id"] == intent.id
    emulator.control.wait_webhooks_idle()
    delivered = {d["event_id"] for d in emulator.control.webhook_deliveries()}
    assert delivered == {event.id}


# --- shapes ------------------------------------------------------------------------------


class Raw:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, auth=(TEST_API_KEY, ""))

    def post(self, path: str, data: dict[str, str]) -> dict[str, Any]:
        response = self.http.post(path, data=data)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def get(self, path: str) -> dict[str, Any]:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def _served(raw: Raw) -> dict[str, tuple[dict[str, Any], type[stripe.StripeObject]]]:
    customer = raw.post("/v1/customers", {"email": "s@example.com"})["id"]
    card = raw.post(
        "/v1/payment_methods",
        {
            "type": "card",
            "card[number]": "4242424242424242",
            "card[exp_month]": "8",
            "card[exp_year]": "2030",
            "billing_details[email]": "jenny@example.com",
            "metadata[order_id]": "1",
        },
    )
    raw.post(f"/v1/payment_methods/{card['id']}/attach", {"customer": customer})
    succeeded = raw.post(
        "/v1/payment_intents",
        {
            "amount": "1099",
            "currency": "usd",
            "customer": customer,
            "payment_method": card["id"],
            "confirm": "true",
        },
    )
    action = raw.post(
        "/v1/payment_intents",
        {
            "amount": "1099",
            "currency": "usd",
            "payment_method": "pm_card_authenticationRequired",
            "confirm": "true",
        },
    )
    transfer = raw.post(
        "/v1/payment_intents",
        {
            "amount": "1099",
            "currency": "eur",
            "customer": customer,
            "payment_method_data[type]": "customer_balance",
            "confirm": "true",
        },
    )
    declined = raw.http.post(
        "/v1/payment_intents",
        data={
            "amount": "1099",
            "currency": "usd",
            "payment_method": "pm_card_chargeDeclined",
            "confirm": "true",
        },
    ).json()["error"]["payment_intent"]
    setup = raw.post(
        "/v1/setup_intents",
        {"customer": customer, "payment_method": "pm_card_visa", "confirm": "true"},
    )
    funded = raw.post(
        f"/v1/test_helpers/customers/{customer}/fund_cash_balance",
        {"amount": "500", "currency": "eur"},
    )
    return {
        "payment_method": (raw.get(f"/v1/payment_methods/{card['id']}"), stripe.PaymentMethod),
        "customer_balance_method": (
            raw.post("/v1/payment_methods", {"type": "customer_balance"}),
            stripe.PaymentMethod,
        ),
        "payment_intent": (succeeded, stripe.PaymentIntent),
        "payment_intent_requires_action": (action, stripe.PaymentIntent),
        "payment_intent_bank_transfer": (transfer, stripe.PaymentIntent),
        "payment_intent_declined": (declined, stripe.PaymentIntent),
        "setup_intent": (setup, stripe.SetupIntent),
        "charge": (
            raw.get(f"/v1/charges/{succeeded['latest_charge']}?expand[]=refunds"),
            stripe.Charge,
        ),
        "customer_cash_balance_transaction": (funded, stripe.CustomerCashBalanceTransaction),
    }


@pytest.fixture
def served(emulator: EmulatorHandle) -> dict[str, tuple[dict[str, Any], type[stripe.StripeObject]]]:
    return _served(Raw(emulator.url))


def test_objects_have_exactly_the_sdk_fields(
    served: dict[str, tuple[dict[str, Any], type[stripe.StripeObject]]],
) -> None:
    # tests/sdk_shapes.py: no unknown field, every non-Optional field, JSON types, nested.
    problems = [p for name, (obj, cls) in served.items() for p in shape_problems(obj, cls, name)]
    assert problems == []


def test_lists_and_event_objects_have_the_sdk_fields(
    emulator: EmulatorHandle, served: dict[str, tuple[dict[str, Any], type[stripe.StripeObject]]]
) -> None:
    raw = Raw(emulator.url)
    customer = served["payment_intent"][0]["customer"]
    listed: list[tuple[dict[str, Any], type[stripe.StripeObject]]] = [
        (raw.get(f"/v1/customers/{customer}/payment_methods"), stripe.PaymentMethod),
        (raw.get("/v1/payment_methods"), stripe.PaymentMethod),
        (raw.get("/v1/payment_intents"), stripe.PaymentIntent),
        (raw.get("/v1/setup_intents"), stripe.SetupIntent),
    ]
    problems = [p for body, cls in listed for p in shape_problems(body, cls, listed=True)]
    classes: dict[str, type[stripe.StripeObject]] = {
        "payment_method": stripe.PaymentMethod,
        "payment_intent": stripe.PaymentIntent,
        "setup_intent": stripe.SetupIntent,
        "charge": stripe.Charge,
        "customer_cash_balance_transaction": stripe.CustomerCashBalanceTransaction,
        "cash_balance": stripe.CashBalance,
    }
    events = raw.get("/v1/events?limit=100")["data"]
    seen = set()
    for event in events:
        obj = event["data"]["object"]
        if obj["object"] in classes:
            seen.add(obj["object"])
            problems += shape_problems(obj, classes[obj["object"]], event["type"])
    assert problems == []
    assert seen == set(classes) - {"cash_balance"}


@pytest.mark.parametrize(
    ("resource", "served_as"),
    [
        ("payment_method", "payment_method"),
        ("payment_intent", "payment_intent"),
        ("payment_intent", "payment_intent_requires_action"),
        ("payment_intent", "payment_intent_bank_transfer"),
        ("payment_intent", "payment_intent_declined"),
        ("setup_intent", "setup_intent"),
        ("charge", "charge"),
        ("customer_cash_balance_transaction", "customer_cash_balance_transaction"),
    ],
)
def test_shape_matches_stripe_example(
    served: dict[str, tuple[dict[str, Any], type[stripe.StripeObject]]],
    resource: str,
    served_as: str,
) -> None:
    # Recursively: every field of Stripe's example with the same JSON type (null fits all).
    example = json.loads(compat_files.STRIPE_FIXTURES.read_text())["resources"][resource]
    problems: list[str] = []
    compare_with_example(resource, example, served[served_as][0], "", problems)
    assert problems == []


# --- parameters not emulated are refused by name ----------------------------------------

PI_REFUSED: dict[str, Any] = {
    "confirmation_token": "ctoken_123",
    "customer_account": "acct_123",
    "mandate": "mandate_123",
    "mandate_data": {"customer_acceptance": {"type": "offline"}},
    "payment_method_configuration": "pmc_123",
    "on_behalf_of": "acct_123",
    "transfer_data": {"destination": "acct_123"},
    "application_fee_amount": 10,
    "hooks": {"inputs": {"tax": {"calculation": "taxcalc_123"}}},
    "payment_details": {"customer_reference": "ref"},
    "radar_options": {"session": "rs_123"},
    "amount_details": {"discount_amount": 1},
    "payment_method_types": ["card"],
}
SI_REFUSED: dict[str, Any] = {
    "confirmation_token": "ctoken_123",
    "customer_account": "acct_123",
    "mandate_data": {"customer_acceptance": {"type": "offline"}},
    "payment_method_configuration": "pmc_123",
    "on_behalf_of": "acct_123",
    "single_use": {"amount": 100, "currency": "usd"},
    "payment_method_types": ["card"],
}


def test_intent_parameters_not_emulated_are_refused_by_name(stripe_client: Client) -> None:
    base = {"amount": 1000, "currency": "usd"}
    for name, value in PI_REFUSED.items():
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_client.v1.payment_intents.create({**base, name: value})  # type: ignore[misc]
        assert (refused.value.http_status, refused.value.param) == (400, name), name
    intent = stripe_client.v1.payment_intents.create(base)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.payment_intents.confirm(intent.id, {"amount_to_confirm": 1000})
    assert refused.value.param == "amount_to_confirm"
    for name, value in SI_REFUSED.items():
        with pytest.raises(stripe.InvalidRequestError) as refused:
            stripe_client.v1.setup_intents.create({name: value})  # type: ignore[misc]
        assert (refused.value.http_status, refused.value.param) == (400, name), name
