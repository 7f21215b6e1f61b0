"""Invoices and invoice items through the real SDK over HTTP: manual invoices and their
status machine, pending invoice items, the customer balance applied at finalization,
payments through payment intents, previews, events, and the served shapes
(tests/sdk_shapes.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import stripe

from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient


def _customer(client: Client, *, card: str | None = "pm_card_visa", balance: int = 0) -> str:
    params: dict[str, Any] = {"email": "inv@example.com"}
    if balance:
        params["balance"] = balance
    customer = client.v1.customers.create(params).id  # type: ignore[arg-type]
    if card is not None:
        pm = client.v1.payment_methods.attach(card, {"customer": customer})
        client.v1.customers.update(
            customer, {"invoice_settings": {"default_payment_method": pm.id}}
        )
    return customer


def _item(client: Client, customer: str, amount: int, **extra: Any) -> stripe.InvoiceItem:
    params: dict[str, Any] = {
        "customer": customer,
        "amount": amount,
        "currency": "usd",
        "description": f"Item {amount}",
        **extra,
    }
    return client.v1.invoice_items.create(params)  # type: ignore[arg-type]


def _types(client: Client, prefix: str) -> list[str]:
    events = reversed(client.v1.events.list({"limit": 100}).data)
    return [e.type for e in events if e.type.startswith(prefix)]


def test_a_manual_invoice_is_a_draft_that_takes_pending_items_only_when_asked(
    stripe_client: Client,
) -> None:
    customer = _customer(stripe_client)
    first = _item(stripe_client, customer, 700)
    assert (first.invoice, first.proration, first.amount) == (None, False, 700)
    empty = stripe_client.v1.invoices.create({"customer": customer})
    assert (empty.status, empty.auto_advance, empty.total, empty.lines.data) == (
        "draft",
        False,
        0,
        [],
    )
    assert empty.automatically_finalizes_at is None
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    assert [li.amount for li in invoice.lines.data] == [700]
    line = invoice.lines.data[0]
    assert line.parent
    assert line.parent.invoice_item_details
    assert line.parent.invoice_item_details.invoice_item == first.id
    assert stripe_client.v1.invoice_items.retrieve(first.id).invoice == invoice.id
    added = _item(stripe_client, customer, 300, invoice=invoice.id)
    again = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (again.subtotal, again.total, again.amount_due) == (1000, 1000, 1000)
    assert added.invoice == invoice.id


def test_finalize_and_pay_with_the_default_payment_method(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    _item(stripe_client, customer, 1250)
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    finalized = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "open"
    assert finalized.number is not None
    assert finalized.status_transitions.finalized_at is not None
    assert (finalized.amount_due, finalized.amount_remaining) == (1250, 1250)
    paid = stripe_client.v1.invoices.pay(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining, paid.attempt_count) == (
        "paid",
        1250,
        0,
        1,
    )
    assert paid.status_transitions.paid_at is not None
    expanded = stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    assert expanded.payments
    payment = expanded.payments.data[0]
    assert (payment.status, payment.amount_paid, payment.payment.type) == (
        "paid",
        1250,
        "payment_intent",
    )
    intent = stripe_client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert (intent.status, intent.amount) == ("succeeded", 1250)
    assert _types(stripe_client, "invoice.") == [
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.void_invoice(invoice.id)


def test_a_declined_payment_answers_402_and_leaves_the_invoice_open(
    stripe_client: Client,
) -> None:
    customer = _customer(stripe_client, card="pm_card_chargeCustomerFail")
    _item(stripe_client, customer, 500)
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    with pytest.raises(stripe.CardError):
        stripe_client.v1.invoices.pay(invoice.id)
    after = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (after.status, after.attempted, after.attempt_count, after.amount_remaining) == (
        "open",
        True,
        1,
        500,
    )
    assert "invoice.payment_failed" in _types(stripe_client, "invoice.")


def test_void_uncollectible_and_delete_follow_the_status_machine(stripe_client: Client) -> None:
    customer = _customer(stripe_client, card=None)
    _item(stripe_client, customer, 400)
    a = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.void_invoice(a.id)
    stripe_client.v1.invoices.finalize_invoice(a.id)
    voided = stripe_client.v1.invoices.void_invoice(a.id)
    assert voided.status == "void"
    assert voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.pay(a.id)

    _item(stripe_client, customer, 900)
    b = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.finalize_invoice(b.id)
    lost = stripe_client.v1.invoices.mark_uncollectible(b.id)
    assert lost.status == "uncollectible"
    paid = stripe_client.v1.invoices.pay(b.id, {"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 900, 0)

    ii = _item(stripe_client, customer, 100)
    c = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    deleted = stripe_client.v1.invoices.delete(c.id)
    assert deleted.deleted is True
    assert stripe_client.v1.invoice_items.retrieve(ii.id).invoice is None
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.delete(a.id)
    assert _types(stripe_client, "invoice.") == [
        "invoice.created",
        "invoice.finalized",
        "invoice.voided",
        "invoice.created",
        "invoice.finalized",
        "invoice.marked_uncollectible",
        "invoice.paid",
        "invoice.created",
        "invoice.deleted",
    ]


def test_the_customer_balance_is_applied_at_finalization(stripe_client: Client) -> None:
    customer = _customer(stripe_client, balance=-300)
    _item(stripe_client, customer, 1000)
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    finalized = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert (
        finalized.total,
        finalized.starting_balance,
        finalized.ending_balance,
        finalized.amount_due,
    ) == (1000, -300, 0, 700)
    assert stripe_client.v1.customers.retrieve(customer).balance == 0
    paid = stripe_client.v1.invoices.pay(invoice.id)
    assert (paid.amount_paid, paid.amount_remaining) == (700, 0)

    rich = _customer(stripe_client, card=None, balance=-1500)
    _item(stripe_client, rich, 1000)
    covered = stripe_client.v1.invoices.create(
        {"customer": rich, "pending_invoice_items_behavior": "include"}
    )
    done = stripe_client.v1.invoices.finalize_invoice(covered.id)
    assert (done.status, done.amount_due, done.starting_balance, done.ending_balance) == (
        "paid",
        0,
        -1500,
        -500,
    )
    assert stripe_client.v1.customers.retrieve(rich).balance == -500


def test_send_invoice_gets_a_due_date(stripe_client: Client) -> None:
    customer = _customer(stripe_client, card=None)
    _item(stripe_client, customer, 100)
    invoice = stripe_client.v1.invoices.create(
        {
            "customer": customer,
            "collection_method": "send_invoice",
            "days_until_due": 14,
            "pending_invoice_items_behavior": "include",
        }
    )
    finalized = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status_transitions.finalized_at is not None
    assert finalized.due_date == finalized.status_transitions.finalized_at + 14 * 86400
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.create(
            {"customer": customer, "collection_method": "send_invoice"}
        )


def test_invoice_items_list_and_delete(stripe_client: Client) -> None:
    customer = _customer(stripe_client, card=None)
    a = _item(stripe_client, customer, 100)
    b = _item(stripe_client, customer, 200, metadata={"k": "v"})
    listed = stripe_client.v1.invoice_items.list({"customer": customer}).data
    assert [ii.id for ii in listed] == [b.id, a.id]
    assert b.metadata is not None
    assert b.metadata.to_dict() == {"k": "v"}
    gone = stripe_client.v1.invoice_items.delete(a.id)
    assert gone.deleted is True
    assert [ii.id for ii in stripe_client.v1.invoice_items.list({"pending": True}).data] == [b.id]
    assert _types(stripe_client, "invoiceitem.") == [
        "invoiceitem.created",
        "invoiceitem.created",
        "invoiceitem.deleted",
    ]


def test_a_customer_preview_shows_pending_items_without_saving(stripe_client: Client) -> None:
    customer = _customer(stripe_client, card=None, balance=-50)
    _item(stripe_client, customer, 300)
    preview = stripe_client.v1.invoices.create_preview({"customer": customer})
    assert preview.id.startswith("upcoming_")
    assert (preview.total, preview.amount_due, preview.starting_balance) == (300, 250, -50)
    assert stripe_client.v1.invoices.list({"customer": customer}).data == []
    assert stripe_client.v1.invoice_items.list({"pending": True}).data[0].invoice is None


class Raw:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, auth=(TEST_API_KEY, ""))

    def get(self, path: str) -> dict[str, Any]:
        response = self.http.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def test_served_invoices_have_the_sdk_fields(
    emulator: EmulatorHandle, stripe_client: Client
) -> None:
    customer = _customer(stripe_client)
    _item(stripe_client, customer, 100)
    paid = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.pay(paid.id)
    draft = stripe_client.v1.invoices.create({"customer": customer})
    raw = Raw(emulator.url)
    served = [
        (raw.get(f"/v1/invoices/{paid.id}?expand[]=payments"), stripe.Invoice, False),
        (raw.get(f"/v1/invoices/{draft.id}"), stripe.Invoice, False),
        (raw.get("/v1/invoices?expand[]=data.payments"), stripe.Invoice, True),
        (raw.get("/v1/invoiceitems"), stripe.InvoiceItem, True),
    ]
    problems = [p for body, cls, listed in served for p in shape_problems(body, cls, listed=listed)]
    for payment in served[0][0]["payments"]["data"]:
        problems += shape_problems(payment, stripe.InvoicePayment)
    assert problems == []
    assert "payments" not in served[1][0]


def test_an_amount_below_the_minimum_charge_moves_to_the_customer_balance(
    stripe_client: Client,
) -> None:
    customer = _customer(stripe_client)
    _item(stripe_client, customer, 30)
    small = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    done = stripe_client.v1.invoices.finalize_invoice(small.id)
    assert (done.status, done.total, done.amount_due, done.ending_balance) == ("paid", 30, 0, 30)
    assert stripe_client.v1.customers.retrieve(customer).balance == 30
    assert stripe_client.v1.payment_intents.list({"customer": customer}).data == []
    _item(stripe_client, customer, 1000)
    nxt = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    paid = stripe_client.v1.invoices.pay(nxt.id)
    assert (paid.total, paid.starting_balance, paid.amount_paid) == (1000, 30, 1030)
    assert stripe_client.v1.customers.retrieve(customer).balance == 0


def _send_invoice(client: Client, customer: str, amount: int, **extra: Any) -> stripe.Invoice:
    _item(client, customer, amount)
    params: dict[str, Any] = {
        "customer": customer,
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "pending_invoice_items_behavior": "include",
        **extra,
    }
    if "due_date" in extra:
        del params["days_until_due"]
    return client.v1.invoices.create(params)  # type: ignore[arg-type]


def test_send_emits_invoice_sent_for_finalized_send_invoice_invoices(
    stripe_client: Client,
) -> None:
    customer = _customer(stripe_client)
    invoice = _send_invoice(stripe_client, customer, 800)
    with pytest.raises(stripe.InvalidRequestError) as draft:
        stripe_client.v1.invoices.send_invoice(invoice.id)
    assert draft.value.code == "invoice_not_editable"
    stripe_client.v1.invoices.finalize_invoice(invoice.id)
    sent = stripe_client.v1.invoices.send_invoice(invoice.id, {"expand": ["customer"]})
    assert sent.status == "open"
    assert isinstance(sent.customer, stripe.Customer)
    # A paid invoice can be sent again (the SDK's `send_invoice` docstring).
    stripe_client.v1.invoices.pay(invoice.id, {"paid_out_of_band": True})
    assert stripe_client.v1.invoices.send_invoice(invoice.id).status == "paid"
    assert _types(stripe_client, "invoice.sent") == ["invoice.sent", "invoice.sent"]

    _item(stripe_client, customer, 300)
    automatic = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.finalize_invoice(automatic.id)
    with pytest.raises(stripe.InvalidRequestError) as wrong:
        stripe_client.v1.invoices.send_invoice(automatic.id)
    assert "send_invoice" in str(wrong.value.user_message)
    voided = _send_invoice(stripe_client, customer, 200)
    stripe_client.v1.invoices.finalize_invoice(voided.id)
    stripe_client.v1.invoices.void_invoice(voided.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.send_invoice(voided.id)
    with pytest.raises(stripe.InvalidRequestError) as missing:
        stripe_client.v1.invoices.send_invoice("in_missing")
    assert missing.value.http_status == 404


def test_payment_settings_are_served_and_refused_by_name(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer, "payment_settings": {"payment_method_types": ["card"]}}
    )
    assert invoice.payment_settings.payment_method_types == ["card"]
    assert invoice.payment_settings.payment_method_options is None
    updated = stripe_client.v1.invoices.update(
        invoice.id, {"payment_settings": {"payment_method_types": ""}}
    )
    assert updated.payment_settings.payment_method_types is None
    refused: list[tuple[dict[str, Any], str]] = [
        ({"payment_method_types": ["sepa_debit"]}, "payment_settings[payment_method_types][0]"),
        ({"default_mandate": "mandate_1"}, "payment_settings[default_mandate]"),
        (
            {"payment_method_options": {"card": {"request_three_d_secure": "any"}}},
            "payment_settings[payment_method_options][card]",
        ),
        ({"payment_method_types": ["customer_balance"]}, "payment_settings[payment_method_types]"),
    ]
    for settings, param in refused:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            stripe_client.v1.invoices.update(invoice.id, {"payment_settings": settings})  # type: ignore[typeddict-item]
        assert caught.value.param == param, settings
    stripe_client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError) as finalized:
        stripe_client.v1.invoices.update(
            invoice.id, {"payment_settings": {"payment_method_types": ["card"]}}
        )
    assert finalized.value.param == "payment_settings"


def test_customer_balance_on_a_send_invoice_invoice_is_paid_by_a_bank_transfer(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = _customer(stripe_client, card=None)
    options = {
        "customer_balance": {
            "funding_type": "bank_transfer",
            "bank_transfer": {"type": "us_bank_transfer"},
        }
    }
    invoice = _send_invoice(
        stripe_client,
        customer,
        2500,
        payment_settings={
            "payment_method_types": ["customer_balance"],
            "payment_method_options": options,
        },
    )
    settings = invoice.payment_settings
    assert settings.payment_method_types == ["customer_balance"]
    assert settings.payment_method_options is not None
    balance = settings.payment_method_options.customer_balance
    assert balance is not None
    assert balance.funding_type == "bank_transfer"
    assert balance.bank_transfer is not None
    assert balance.bank_transfer.type == "us_bank_transfer"
    finalized = stripe_client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "open"
    waiting = stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    assert waiting.payments is not None
    payment = waiting.payments.data[0]
    assert payment.status == "open"
    intent = stripe_client.v1.payment_intents.retrieve(str(payment.payment.payment_intent))
    assert (intent.status, intent.amount, intent.payment_method_types) == (
        "requires_action",
        2500,
        ["customer_balance"],
    )
    emulator.control.fund_cash_balance(customer, 1000, "usd")
    assert stripe_client.v1.invoices.retrieve(invoice.id).status == "open"
    stripe_client.v1.test_helpers.customers.fund_cash_balance(
        customer, {"amount": 1500, "currency": "usd"}
    )
    paid = stripe_client.v1.invoices.retrieve(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 2500, 0)
    assert _types(stripe_client, "invoice.pa") == ["invoice.paid", "invoice.payment_succeeded"]
    raw = Raw(emulator.url).get(f"/v1/invoices/{invoice.id}?expand[]=payments")
    assert shape_problems(raw, stripe.Invoice) == []
    # Not on charge_automatically invoices (the emulator collects those by card only).
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.invoices.create(
            {
                "customer": customer,
                "payment_settings": {"payment_method_types": ["customer_balance"]},
            }
        )
    assert refused.value.param == "payment_settings[payment_method_types]"


def test_pay_out_of_band_with_a_payment_method_and_after_uncollectible(
    stripe_client: Client,
) -> None:
    customer = _customer(stripe_client, card=None)
    _item(stripe_client, customer, 600)
    oob = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    # A draft is finalized by `pay`; out of band, no payment is recorded.
    paid = stripe_client.v1.invoices.pay(oob.id, {"paid_out_of_band": True, "expand": ["payments"]})
    assert (
        paid.status,
        paid.amount_paid,
        paid.attempted,
        paid.payments is not None and list(paid.payments.data),
    ) == ("paid", 600, False, [])
    assert _types(stripe_client, "invoice.pa") == ["invoice.paid"]  # no payment_succeeded

    _item(stripe_client, customer, 700)
    by_pm = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.finalize_invoice(by_pm.id)
    with pytest.raises(stripe.InvalidRequestError) as no_pm:
        stripe_client.v1.invoices.pay(by_pm.id)
    assert no_pm.value.param == "payment_method"
    lost = stripe_client.v1.invoices.mark_uncollectible(by_pm.id)
    assert lost.status == "uncollectible"
    assert lost.status_details is not None
    assert lost.status_details.uncollectible is not None
    assert lost.status_details.uncollectible.reason == "user_forgiven"
    charged = stripe_client.v1.invoices.pay(
        by_pm.id, {"payment_method": "pm_card_visa", "expand": ["payments"]}
    )
    # The refused `pay` without a payment method counted as a (failed) attempt.
    assert (charged.status, charged.amount_paid, charged.attempt_count) == ("paid", 700, 2)
    assert charged.payments is not None
    assert charged.payments.data[0].status == "paid"
    assert "status_details" not in charged
    # `payment_method` (a test token) is attached to the invoice's customer.
    pms = stripe_client.v1.customers.payment_methods.list(customer)
    assert len(pms.data) == 1
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.invoices.pay(by_pm.id)
    assert again.value.code == "invoice_not_open"


def test_every_sdk_parameter_is_implemented_or_refused_by_name(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    invoice = stripe_client.v1.invoices.create({"customer": customer})
    cases: list[tuple[str, dict[str, Any]]] = [
        ("create", {"customer": customer, "number": "X-1"}),
        ("create", {"customer": customer, "automatically_finalizes_at": 2000000000}),
        ("create", {"customer": customer, "discounts": ""}),
        ("create", {"customer": customer, "transfer_data": {"destination": "acct_1"}}),
        ("update", {"custom_fields": ""}),
        ("update", {"collection_method": "send_invoice"}),
        ("update", {"rendering": {"pdf": {"page_size": "a4"}}}),
        ("pay", {"forgive": True}),
        ("pay", {"source": "src_1"}),
        ("pay", {"mandate": "mandate_1"}),
        ("list", {"customer_account": "acct_1"}),
    ]
    invoices = stripe_client.v1.invoices
    calls: dict[str, Any] = {
        "create": invoices.create,
        "update": lambda params: invoices.update(invoice.id, params),
        "pay": lambda params: invoices.pay(invoice.id, params),
        "list": invoices.list,
    }
    for call, params in cases:
        name = next(k for k in params if k != "customer" or call != "create")
        with pytest.raises(stripe.InvalidRequestError) as caught:
            calls[call](params)
        assert caught.value.param == name, (call, params)


def test_list_filters_by_due_date_and_pages_lines(stripe_client: Client) -> None:
    customer = _customer(stripe_client)
    due = _send_invoice(stripe_client, customer, 100, due_date=2_000_000_000)
    _item(stripe_client, customer, 200)
    _item(stripe_client, customer, 300)
    _item(stripe_client, customer, 400)
    other = stripe_client.v1.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    listed = stripe_client.v1.invoices.list({"due_date": {"gte": 1_999_999_999}})
    assert [i.id for i in listed.data] == [due.id]
    assert stripe_client.v1.invoices.list({"due_date": {"lt": 1_999_999_999}}).data == []
    first = stripe_client.v1.invoices.line_items.list(other.id, {"limit": 2})
    assert ([li.amount for li in first.data], first.has_more) == ([200, 300], True)
    rest = stripe_client.v1.invoices.line_items.list(
        other.id, {"limit": 2, "starting_after": first.data[-1].id}
    )
    assert ([li.amount for li in rest.data], rest.has_more) == ([400], False)
    before = stripe_client.v1.invoices.line_items.list(
        other.id, {"ending_before": rest.data[0].id, "limit": 1}
    )
    assert ([li.amount for li in before.data], before.has_more) == ([300], True)
