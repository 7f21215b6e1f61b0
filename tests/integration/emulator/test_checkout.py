"""Checkout Sessions and billing portal sessions through the real SDK over HTTP: a session in
each mode completed by the operator control (the hosted page) with 4242 and refused with
0002, 3155 requiring action, subscription metadata from `subscription_data`, expiry by
`expire` and by the clock, the pinned version's `payment_method_types` refusal, the payment
intent success hook paying an invoice that needed authentication, and the served shapes
against the SDK's resource classes (tests/sdk_shapes.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import stripe

from stripe_emulator.server import EmbeddedEmulator
from tests import compat_files
from tests.fixtures.emulator import TEST_API_KEY, EmulatorHandle, make_client
from tests.integration.emulator.test_fidelity import _compare as compare_with_example
from tests.sdk_shapes import shape_problems

Client = stripe.StripeClient

VISA = "4242424242424242"
DECLINE = "4000000000000002"
THREE_DS = "4000002500003155"


def _price(client: Client, amount: int = 1500, *, recurring: bool = False) -> stripe.Price:
    product = client.v1.products.create({"name": "Seat"})
    params: dict[str, Any] = {"product": product.id, "currency": "usd", "unit_amount": amount}
    if recurring:
        params["recurring"] = {"interval": "month"}
    return client.v1.prices.create(params)  # type: ignore[arg-type]


def _session(client: Client, mode: str, **extra: Any) -> stripe.checkout.Session:
    params: dict[str, Any] = {
        "mode": mode,
        "success_url": "https://example.com/ok",
        "cancel_url": "https://example.com/cancel",
        **extra,
    }
    if mode == "payment" and "line_items" not in extra:
        params["line_items"] = [{"price": _price(client).id, "quantity": 2}]
    if mode == "subscription" and "line_items" not in extra:
        params["line_items"] = [{"price": _price(client, 1000, recurring=True).id, "quantity": 1}]
    if mode == "setup":
        params.setdefault("currency", "usd")
    return client.v1.checkout.sessions.create(params)  # type: ignore[arg-type]


def _event_types(client: Client) -> list[str]:
    return [e.type for e in reversed(client.v1.events.list({"limit": 100}).data)]


def _complete(emulator: EmulatorHandle, session: str, **body: Any) -> tuple[int, dict[str, Any]]:
    response = emulator.control.complete_checkout_session(session, **body)
    result: dict[str, Any] = response.json()
    return response.status_code, result


# --- payment mode ------------------------------------------------------------------------


def test_payment_session_completes_with_4242(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(
        stripe_client,
        "payment",
        customer_creation="always",
        metadata={"order": "o-1"},
        client_reference_id="ref-1",
    )
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "payment")
    assert session.url
    assert session.id in session.url
    assert session.amount_total == 3000
    assert session.expires_at == session.created + 24 * 3600
    status, body = _complete(emulator, session.id, card=VISA, email="buyer@example.com")
    assert status == 200, body
    done = stripe_client.v1.checkout.sessions.retrieve(session.id, {"expand": ["payment_intent"]})
    assert (done.status, done.payment_status, done.url) == ("complete", "paid", None)
    assert done.customer
    assert done.customer_details
    assert done.customer_details.email == "buyer@example.com"
    intent = done.payment_intent
    assert isinstance(intent, stripe.PaymentIntent)
    assert (intent.status, intent.amount, intent.customer) == ("succeeded", 3000, done.customer)
    assert ((done.metadata or stripe.StripeObject()).to_dict(), done.client_reference_id) == (
        {"order": "o-1"},
        "ref-1",
    )
    types = _event_types(stripe_client)
    assert types[-1] == "checkout.session.completed"
    assert types.index("customer.created") < types.index("payment_method.attached")
    assert types.index("payment_intent.created") < types.index("payment_intent.succeeded")


def test_payment_session_declined_card_stays_open(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "payment")
    status, body = _complete(emulator, session.id, card=DECLINE)
    assert status == 402
    assert (body["error"]["code"], body["error"]["decline_code"]) == (
        "card_declined",
        "generic_decline",
    )
    again = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (again.status, again.payment_status) == ("open", "unpaid")
    assert again.url is not None
    assert "checkout.session.completed" not in _event_types(stripe_client)
    # A second try with a good card completes the same session.
    status, body = _complete(emulator, session.id, payment_method="pm_card_visa")
    assert status == 200, body
    assert body["status"] == "complete"


def test_3155_requires_action_then_the_authentication_completes_the_session(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "payment")
    status, body = _complete(emulator, session.id, card=THREE_DS)
    assert status == 402
    assert body["requires_action"] is True
    assert body["error"]["code"] == "authentication_required"
    intent = body["payment_intent"]
    assert intent["status"] == "requires_action"
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    emulator.control.authenticate_payment_intent(intent["id"])
    done = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status, done.payment_intent) == (
        "complete",
        "paid",
        intent["id"],
    )
    assert _event_types(stripe_client)[-1] == "checkout.session.completed"


def test_payment_session_with_invoice_creation_gets_a_paid_invoice(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "payment", invoice_creation={"enabled": True})
    status, body = _complete(emulator, session.id, card=VISA)
    assert status == 200, body
    invoice = stripe_client.v1.invoices.retrieve(body["invoice"])
    assert (invoice.status, invoice.amount_paid, invoice.customer) == (
        "paid",
        3000,
        body["customer"],
    )
    assert _event_types(stripe_client)[-1] == "checkout.session.completed"


def test_adjustable_quantity_and_line_items(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    price = _price(stripe_client, 500)
    session = _session(
        stripe_client,
        "payment",
        line_items=[
            {
                "price": price.id,
                "quantity": 1,
                "adjustable_quantity": {"enabled": True, "minimum": 1, "maximum": 5},
            }
        ],
    )
    status, body = _complete(emulator, session.id, card=VISA, quantity=9)
    assert status == 400
    status, body = _complete(emulator, session.id, card=VISA, quantity=3)
    assert status == 200, body
    items = stripe_client.v1.checkout.sessions.line_items.list(session.id)
    assert [(i.quantity, i.amount_total) for i in items.data] == [(3, 1500)]
    assert items.data[0].price
    assert items.data[0].price.id == price.id
    assert body["amount_total"] == 1500


# --- subscription and setup mode ------------------------------------------------------------


def test_subscription_session_creates_a_subscription_with_the_sessions_metadata(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(
        stripe_client,
        "subscription",
        customer_email="sub@example.com",
        subscription_data={"metadata": {"org": "acme", "plan": "pro"}},
    )
    status, body = _complete(emulator, session.id, card=VISA)
    assert status == 200, body
    assert (body["status"], body["payment_status"]) == ("complete", "paid")
    sub = stripe_client.v1.subscriptions.retrieve(body["subscription"])
    assert sub.status == "active"
    assert sub.metadata.to_dict() == {"org": "acme", "plan": "pro"}
    assert sub.customer == body["customer"]
    assert sub.default_payment_method is not None
    customer = stripe_client.v1.customers.retrieve(body["customer"])
    assert customer.email == "sub@example.com"
    types = _event_types(stripe_client)
    assert types[-1] == "checkout.session.completed"
    assert types.index("customer.subscription.created") < types.index("invoice.paid")


def test_subscription_session_with_trial_needs_no_payment(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "subscription", subscription_data={"trial_period_days": 14})
    status, body = _complete(emulator, session.id, payment_method="pm_card_visa")
    assert status == 200, body
    assert body["payment_status"] == "no_payment_required"
    assert stripe_client.v1.subscriptions.retrieve(body["subscription"]).status == "trialing"


def test_subscription_session_declined_leaves_no_subscription(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "subscription")
    status, body = _complete(emulator, session.id, card=DECLINE)
    assert status == 402
    assert body["error"]["decline_code"] == "generic_decline"
    assert stripe_client.v1.subscriptions.list({"status": "all"}).data == []
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"


def test_subscription_session_3155_completes_after_authentication(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "subscription")
    status, body = _complete(emulator, session.id, card=THREE_DS)
    assert status == 402
    assert body["requires_action"] is True
    opened = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert opened.status == "open"
    assert opened.subscription
    assert stripe_client.v1.subscriptions.retrieve(opened.subscription).status == "incomplete"
    emulator.control.authenticate_payment_intent(body["payment_intent"]["id"])
    done = stripe_client.v1.checkout.sessions.retrieve(session.id)
    assert (done.status, done.payment_status) == ("complete", "paid")
    assert stripe_client.v1.subscriptions.retrieve(opened.subscription).status == "active"


def test_setup_session_saves_the_card_and_refuses_a_decline(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({"email": "s@example.com"})
    session = _session(stripe_client, "setup", customer=customer.id)
    assert session.payment_status == "no_payment_required"
    status, body = _complete(emulator, session.id, card=DECLINE)
    assert status == 402
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    status, body = _complete(emulator, session.id, card=VISA)
    assert status == 200, body
    intent = stripe_client.v1.setup_intents.retrieve(body["setup_intent"])
    assert (intent.status, intent.customer) == ("succeeded", customer.id)
    pms = stripe_client.v1.customers.payment_methods.list(customer.id)
    assert len(pms.data) == 1


def test_setup_session_3155_requires_action(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    session = _session(stripe_client, "setup")
    status, body = _complete(emulator, session.id, card=THREE_DS)
    assert status == 402
    assert body["requires_action"] is True
    assert body["setup_intent"]["status"] == "requires_action"
    status, body = _complete(emulator, session.id, card=THREE_DS, authenticate="succeed")
    assert status == 200, body
    assert body["status"] == "complete"


def test_customer_update_address_auto_saves_the_address(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({"email": "t@example.com"})
    session = _session(
        stripe_client,
        "payment",
        customer=customer.id,
        customer_update={"address": "auto"},
        automatic_tax={"enabled": True},
    )
    assert session.automatic_tax.status == "requires_location_inputs"
    address = {"country": "US", "postal_code": "94103", "line1": "1 Main St"}
    status, body = _complete(emulator, session.id, card=VISA, address=address)
    assert status == 200, body
    assert body["automatic_tax"]["status"] == "complete"
    saved = stripe_client.v1.customers.retrieve(customer.id)
    assert saved.address
    assert saved.address.postal_code == "94103"


# --- expiry, list, refusals --------------------------------------------------------------


def test_expire_and_expiry_by_the_clock(stripe_client: Client, emulator: EmulatorHandle) -> None:
    first = _session(stripe_client, "payment")
    expired = stripe_client.v1.checkout.sessions.expire(first.id)
    assert (expired.status, expired.url) == ("expired", None)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.checkout.sessions.expire(first.id)
    second = _session(stripe_client, "payment", expires_at=int(emulator.control.now()) + 3600)
    emulator.control.advance(3601)
    assert stripe_client.v1.checkout.sessions.retrieve(second.id).status == "expired"
    status, _ = _complete(emulator, second.id, card=VISA)
    assert status == 400
    assert _event_types(stripe_client).count("checkout.session.expired") == 2


def test_expiry_by_the_clock_reaches_a_webhook_without_touching_the_session(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    received: list[dict[str, Any]] = []
    arrived = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            arrived.set()
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stripe_client.v1.webhook_endpoints.create(
            {
                "url": f"http://127.0.0.1:{server.server_address[1]}/hooks",
                "enabled_events": ["checkout.session.expired"],
            }
        )
        session = _session(stripe_client, "payment")
        emulator.control.advance(25 * 3600)
        assert arrived.wait(5)
        emulator.control.wait_webhooks_idle()
        emulator.control.advance(3600)  # a later move does not expire it again
        emulator.control.wait_webhooks_idle()
    finally:
        server.shutdown()
        server.server_close()
    assert [e["data"]["object"]["id"] for e in received] == [session.id]
    event = received[0]
    assert event["type"] == "checkout.session.expired"
    assert event["created"] == session.expires_at
    assert event["data"]["object"]["status"] == "expired"
    assert _event_types(stripe_client).count("checkout.session.expired") == 1


def test_sessions_survive_a_restart_and_still_expire(tmp_path: pytest.TempPathFactory) -> None:
    state = tmp_path / "stripe.json"  # type: ignore[operator]
    with EmbeddedEmulator(state_file=state) as first:
        session = _session(make_client(first.url), "payment")
    with EmbeddedEmulator(state_file=state) as second:
        client = make_client(second.url)
        assert client.v1.checkout.sessions.retrieve(session.id).status == "open"
        second.control.advance(24 * 3600 + 1)
        expired = client.v1.checkout.sessions.list({"status": "expired"})
        assert [s.id for s in expired.data] == [session.id]


def test_expires_at_bounds(stripe_client: Client, emulator: EmulatorHandle) -> None:
    now = int(emulator.control.now())
    for bad in (now + 60, now + 25 * 3600):
        with pytest.raises(stripe.InvalidRequestError) as error:
            _session(stripe_client, "payment", expires_at=bad)
        assert error.value.param == "expires_at"


def test_list_filters(stripe_client: Client, emulator: EmulatorHandle) -> None:
    customer = stripe_client.v1.customers.create({})
    mine = _session(stripe_client, "payment", customer=customer.id)
    other = _session(stripe_client, "payment")
    stripe_client.v1.checkout.sessions.expire(other.id)
    listed = stripe_client.v1.checkout.sessions.list({"customer": customer.id})
    assert [s.id for s in listed.data] == [mine.id]
    expired = stripe_client.v1.checkout.sessions.list({"status": "expired"})
    assert [s.id for s in expired.data] == [other.id]


def test_payment_method_types_is_refused_with_the_pinned_versions_error(
    stripe_client: Client,
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.checkout.sessions.create(
            {  # type: ignore[typeddict-unknown-key]
                "mode": "payment",
                "line_items": [{"price": _price(stripe_client).id, "quantity": 1}],
                "payment_method_types": ["card"],
            }
        )
    assert (error.value.code, error.value.param) == (
        "payment_method_types_no_longer_supported",
        "payment_method_types",
    )
    session = _session(stripe_client, "payment", allowed_payment_method_types=["card"])
    assert session.payment_method_types == ["card"]


def test_mode_rules(stripe_client: Client) -> None:
    recurring = _price(stripe_client, recurring=True)
    with pytest.raises(stripe.InvalidRequestError):
        _session(stripe_client, "payment", line_items=[{"price": recurring.id, "quantity": 1}])
    with pytest.raises(stripe.InvalidRequestError):
        _session(
            stripe_client,
            "subscription",
            line_items=[{"price": _price(stripe_client).id, "quantity": 1}],
        )
    with pytest.raises(stripe.InvalidRequestError):
        _session(stripe_client, "subscription", customer_creation="always")


# --- the payment intent success hook on invoices ---------------------------------------------


def test_invoice_needing_authentication_is_paid_when_its_intent_succeeds(
    stripe_client: Client, emulator: EmulatorHandle
) -> None:
    customer = stripe_client.v1.customers.create({"email": "i@example.com"})
    pm = stripe_client.v1.payment_methods.attach(
        "pm_card_authenticationRequired", {"customer": customer.id}
    )
    stripe_client.v1.invoice_items.create(
        {"customer": customer.id, "amount": 2500, "currency": "usd"}
    )
    invoice = stripe_client.v1.invoices.create(
        {"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    stripe_client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.pay(invoice.id, {"payment_method": pm.id, "off_session": False})
    waiting = stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    assert waiting.status == "open"
    assert waiting.payments
    payment = waiting.payments.data[0].payment
    assert payment.payment_intent
    intent_id = str(payment.payment_intent)
    emulator.control.authenticate_payment_intent(intent_id)
    paid = stripe_client.v1.invoices.retrieve(invoice.id, {"expand": ["payments"]})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 2500, 0)
    assert paid.payments
    assert paid.payments.data[0].status == "paid"
    types = _event_types(stripe_client)
    assert types.index("invoice.payment_action_required") < types.index("invoice.paid")
    assert types[-1] == "invoice.payment_succeeded"


# --- billing portal ----------------------------------------------------------------------


def test_billing_portal_session(stripe_client: Client) -> None:
    customer = stripe_client.v1.customers.create({})
    portal = stripe_client.v1.billing_portal.sessions.create(
        {"customer": customer.id, "return_url": "https://example.com/account"}
    )
    assert portal.url.startswith("https://billing.stripe.com/")
    assert (portal.customer, portal.return_url) == (customer.id, "https://example.com/account")
    assert _event_types(stripe_client) == ["customer.created", "billing_portal.session.created"]
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.billing_portal.sessions.create({"customer": "cus_missing"})


# --- shapes ------------------------------------------------------------------------------


def _example(resource: str) -> Any:
    return json.loads(compat_files.STRIPE_FIXTURES.read_text())["resources"][resource]


def test_shapes(stripe_client: Client, emulator: EmulatorHandle) -> None:
    http = httpx.Client(base_url=emulator.url, auth=(TEST_API_KEY, ""))

    def get(path: str) -> dict[str, Any]:
        response = http.get(path)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    session = _session(stripe_client, "subscription", customer_email="shape@example.com")
    raw_open = get(f"/v1/checkout/sessions/{session.id}")
    _, done = _complete(emulator, session.id, card=VISA)
    expanded = get(f"/v1/checkout/sessions/{session.id}?expand[]=line_items")
    listed = get("/v1/checkout/sessions")
    items = get(f"/v1/checkout/sessions/{session.id}/line_items")
    response = http.post("/v1/billing_portal/sessions", data={"customer": done["customer"]})
    portal = response.json()
    problems = (
        shape_problems(raw_open, stripe.checkout.Session)
        + shape_problems(done, stripe.checkout.Session)
        + shape_problems(expanded, stripe.checkout.Session)
        + shape_problems(listed, stripe.checkout.Session, listed=True)
        + shape_problems(items, stripe.LineItem, listed=True)
        + shape_problems(portal, stripe.billing_portal.Session)
    )
    compare_with_example("checkout.session", _example("checkout.session"), done, "", problems)
    compare_with_example(
        "billing_portal.session", _example("billing_portal.session"), portal, "", problems
    )
    assert problems == []


def test_session_parameters_not_emulated_are_refused_by_name(stripe_client: Client) -> None:
    refused_params: dict[str, Any] = {
        "branding_settings": {"display_name": "Shop"},
        "excluded_payment_method_types": ["customer_balance"],
        "name_collection": {"business": {"enabled": True}},
        "optional_items": [{"price": "price_123", "quantity": 1}],
        "payment_intent_data": {"description": "x"},
        "payment_method_configuration": "pmc_123",
        "payment_method_data": {"allow_redisplay": "always"},
        "redirect_on_completion": "never",
        "tax_id_collection": {"enabled": True},
        "consent_collection": {"terms_of_service": "required"},
        "custom_fields": [{"key": "k", "label": {"custom": "K", "type": "custom"}, "type": "text"}],
        "phone_number_collection": {"enabled": True},
        "ui_mode": "embedded",
        "discounts": [{"coupon": "c_123"}],
        "shipping_address_collection": {"allowed_countries": ["US"]},
        "payment_method_options": {"card": {"request_three_d_secure": "any"}},
    }
    for name, value in refused_params.items():
        with pytest.raises(stripe.InvalidRequestError) as refused:
            _session(stripe_client, "payment", **{name: value})
        assert (refused.value.http_status, refused.value.param) == (400, name), name
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _session(stripe_client, "setup", setup_intent_data={"description": "x"})
    assert refused.value.param == "setup_intent_data"
