"""Routing Stripe events to targeted reconciles, with Stripe's published objects as payloads."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from billing_reconciler.domains.event_routes import EventRoute, owning_customer
from billing_reconciler.runtime.events import (
    EventRouter,
    ReconcileRequest,
    registered_router,
    route_event,
)
from tests import compat_files

# Stripe's published example objects, vendored from ../shared/compat (tests/compat/).
FIXTURES = compat_files.STRIPE_FIXTURES

OURS = {"managed_by": "billing-reconciler", "br_installation": "default"}


@pytest.fixture(scope="module")
def resources() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return loaded


def stripe_object(resources: dict[str, Any], name: str, **changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(resources[name])
    obj.update(changes)
    return obj


def event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1") -> dict[str, Any]:
    return {"id": event_id, "object": "event", "type": event_type, "data": {"object": obj}}


# The types of our billing docs that domains not built yet (subscriptions, checkouts,
# invoices) will route, each to the owning customer: (event type, fixture resource, domain).
CUSTOMER_OWNED = [
    ("invoice.created", "invoice", "invoice"),
    ("invoice.finalized", "invoice", "invoice"),
    ("invoice.paid", "invoice", "invoice"),
    ("invoice.payment_failed", "invoice", "invoice"),
    ("customer.subscription.created", "subscription", "subscription"),
    ("customer.subscription.updated", "subscription", "subscription"),
    ("customer.subscription.deleted", "subscription", "subscription"),
    ("checkout.session.completed", "checkout.session", "checkout"),
    ("payment_intent.succeeded", "payment_intent", "invoice"),
    ("payment_intent.payment_failed", "payment_intent", "invoice"),
]


class _Future:
    """A domain of a later issue, declaring its routes as every domain does."""

    def __init__(self, name: str, *event_types: str) -> None:
        self.name = name
        self.event_routes = tuple(EventRoute(t, owning_customer) for t in event_types)


def _future_router() -> EventRouter:
    by_domain: dict[str, list[str]] = {}
    for event_type, _, domain in CUSTOMER_OWNED:
        by_domain.setdefault(domain, []).append(event_type)
    return EventRouter(_Future(name, *types) for name, types in by_domain.items())


@pytest.mark.parametrize("event_type", ["customer.created", "customer.updated", "customer.deleted"])
def test_customer_events_target_that_customer(resources: dict[str, Any], event_type: str) -> None:
    customer = stripe_object(
        resources, "customer", metadata={**OURS, "br_key": "customer/acme", "org_id": "acme"}
    )
    assert route_event(event(event_type, customer, "evt_c")) == ReconcileRequest(
        domain="customers",
        scope=frozenset({"customer/acme"}),
        reason=f"webhook {event_type} evt_c",
    )


@pytest.mark.parametrize("event_type", ["customer.updated", "customer.deleted"])
def test_a_foreign_customer_is_ignored(resources: dict[str, Any], event_type: str) -> None:
    assert route_event(event(event_type, stripe_object(resources, "customer"))) is None


def test_a_tax_id_event_asks_for_the_customers_domain() -> None:
    tax_id = {"id": "txi_1", "object": "tax_id", "customer": "cus_1"}
    request = route_event(event("customer.tax_id.created", tax_id))
    assert request is not None
    assert (request.domain, request.scope) == ("customers", None)


@pytest.mark.parametrize(("event_type", "resource", "domain"), CUSTOMER_OWNED)
def test_customer_owned_events_target_the_owning_customer(
    resources: dict[str, Any], event_type: str, resource: str, domain: str
) -> None:
    # Stripe's examples of sessions and payment intents carry no customer; ours always do.
    obj = stripe_object(resources, resource, customer="cus_QXg1o8vcGmoR32")
    request = _future_router().route(event(event_type, obj))
    assert request is not None
    assert (request.domain, request.scope) == (domain, frozenset({"cus_QXg1o8vcGmoR32"}))


def test_an_expanded_customer_counts_by_its_id(resources: dict[str, Any]) -> None:
    customer = stripe_object(resources, "customer")
    invoice = stripe_object(resources, "invoice", customer=customer)
    request = _future_router().route(event("invoice.paid", invoice))
    assert request is not None
    assert request.scope == frozenset({customer["id"]})


@pytest.mark.parametrize(
    ("event_type", "resource"),
    [
        ("checkout.session.completed", "checkout.session"),
        ("payment_intent.succeeded", "payment_intent"),
    ],
)
def test_objects_without_a_customer_are_not_routed(
    resources: dict[str, Any], event_type: str, resource: str
) -> None:
    obj = stripe_object(resources, resource)
    assert obj["customer"] is None  # as in Stripe's published example
    assert _future_router().route(event(event_type, obj)) is None


def test_the_thirteen_documented_types_are_routed_once_their_domains_exist() -> None:
    """Our billing docs' 13 types: the customers and subscriptions domains route six today;
    the other seven wait for their domains (issues 12-13), stored and ignored until then."""
    documented = {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "checkout.session.completed",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
    }
    routed_today = registered_router().event_types

    def routed(event_type: str) -> bool:
        return any(
            event_type == r or (r.endswith(".") and event_type.startswith(r)) for r in routed_today
        )

    subscription_types = {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
    customer_types = {"customer.created", "customer.updated", "customer.deleted"}
    # The credits domain's overdraft part credits a paid overdraft invoice back.
    credit_types = {"invoice.paid"}
    routed_types = customer_types | subscription_types | credit_types
    assert {t for t in documented if routed(t)} == routed_types
    assert {t for t in documented if not routed(t)} == {
        t for t, _, _ in CUSTOMER_OWNED
    } - subscription_types - credit_types
    assert routed_today == {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "customer.tax_id.",
        "customer.subscription.",
        "subscription_schedule.",
        "product.",
        "price.",
        "entitlements.feature.",
        "billing.meter.",
        "invoice.paid",
        "invoice.voided",
        "invoice.marked_uncollectible",
    }


def test_events_of_a_domain_not_built_yet_ask_for_nothing(resources: dict[str, Any]) -> None:
    invoice = stripe_object(resources, "invoice", customer="cus_1")
    assert route_event(event("invoice.paid", invoice)) is None


def test_two_domains_may_not_route_one_event_type() -> None:
    with pytest.raises(ValueError, match=r"'invoice\.paid' is routed by both invoice and billing"):
        EventRouter([_Future("invoice", "invoice.paid"), _Future("billing", "invoice.paid")])


def test_the_longest_prefix_wins() -> None:
    router = EventRouter([_Future("broad", "customer."), _Future("narrow", "customer.tax_id.")])
    obj = {"customer": "cus_1"}
    narrow = router.route(event("customer.tax_id.created", obj))
    broad = router.route(event("customer.discount.created", obj))
    assert narrow is not None
    assert narrow.domain == "narrow"
    assert broad is not None
    assert broad.domain == "broad"


@pytest.mark.parametrize("event_type", ["product.created", "product.updated", "product.deleted"])
def test_our_product_targets_its_catalog_entry(resources: dict[str, Any], event_type: str) -> None:
    product = stripe_object(resources, "product", metadata={**OURS, "br_key": "product/team"})
    request = route_event(event(event_type, product))
    assert request is not None
    assert (request.domain, request.scope) == ("catalog", frozenset({"product/team"}))


@pytest.mark.parametrize("event_type", ["price.created", "price.updated", "price.deleted"])
def test_our_price_targets_its_product(resources: dict[str, Any], event_type: str) -> None:
    price = stripe_object(resources, "price", metadata={**OURS, "br_key": "price/team/monthly"})
    request = route_event(event(event_type, price))
    assert request is not None
    assert (request.domain, request.scope) == ("catalog", frozenset({"product/team"}))


@pytest.mark.parametrize(
    ("event_type", "resource"), [("product.updated", "product"), ("price.updated", "price")]
)
def test_catalog_objects_without_our_marker_are_not_ours(
    resources: dict[str, Any], event_type: str, resource: str
) -> None:
    unmarked = stripe_object(resources, resource)
    assert route_event(event(event_type, unmarked)) is None
    someone_else = stripe_object(
        resources, resource, metadata={"managed_by": "terraform", "br_key": "product/team"}
    )
    assert route_event(event(event_type, someone_else)) is None


@pytest.mark.parametrize("br_key", [None, "", "feature/sso", "nonsense"])
def test_our_marker_without_a_product_key_reconciles_the_whole_catalog(
    resources: dict[str, Any], br_key: str | None
) -> None:
    metadata = dict(OURS) if br_key is None else {**OURS, "br_key": br_key}
    product = stripe_object(resources, "product", metadata=metadata)
    request = route_event(event("product.updated", product))
    assert request is not None
    assert (request.domain, request.scope) == ("catalog", None)


@pytest.mark.parametrize(
    ("event_type", "resource"),
    [
        ("billing.meter.created", "billing.meter"),
        ("billing.meter.deactivated", "billing.meter"),
        ("entitlements.feature.updated", "entitlements.feature"),
    ],
)
def test_meters_and_features_reconcile_the_whole_catalog(
    resources: dict[str, Any], event_type: str, resource: str
) -> None:
    request = route_event(event(event_type, stripe_object(resources, resource)))
    assert request is not None
    assert (request.domain, request.scope) == ("catalog", None)


@pytest.mark.parametrize(
    "event_type",
    [
        "charge.succeeded",
        "plan.updated",  # emitted beside price.updated for the same price, which routes
        "customer.source.created",
        "invoiceitem.created",
        "test_helpers.test_clock.ready",
        "productx.updated",
    ],
)
def test_unknown_types_are_not_routed(resources: dict[str, Any], event_type: str) -> None:
    obj = stripe_object(resources, "customer", metadata={**OURS, "br_key": "product/team"})
    assert route_event(event(event_type, obj)) is None


@pytest.mark.parametrize(
    "malformed",
    [
        {},
        {"type": 7},
        {"type": "customer.updated"},
        {"type": "customer.updated", "data": None},
        {"type": "customer.updated", "data": {"object": "cus_1"}},
        {"type": "invoice.paid", "data": {"object": {"customer": ""}}},
        {"type": "product.updated", "data": {"object": {"metadata": "x"}}},
    ],
)
def test_malformed_events_are_not_routed(malformed: dict[str, Any]) -> None:
    assert route_event(malformed) is None


@pytest.mark.parametrize(
    "event_type", ["invoice.paid", "invoice.voided", "invoice.marked_uncollectible"]
)
def test_our_overdraft_invoice_targets_its_org_in_the_credits_domain(
    resources: dict[str, Any], event_type: str
) -> None:
    """Paid, voided or marked uncollectible in the Dashboard: the org's credits pass records
    it at once (not at the next whole check); another invoice of the customer is not ours."""
    metadata = {**OURS, "br_key": "invoice/overdraft/acme/2027-01-01T00:00:00Z", "org_id": "acme"}
    invoice = stripe_object(resources, "invoice", customer="cus_1", metadata=metadata)
    request = route_event(event(event_type, invoice))
    assert request is not None
    assert (request.domain, request.scope) == ("credits", frozenset({"customer/acme"}))
    plain = stripe_object(resources, "invoice", customer="cus_1", metadata={})
    assert route_event(event(event_type, plain)) is None
