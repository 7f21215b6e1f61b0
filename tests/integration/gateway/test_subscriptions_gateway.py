"""Subscriptions and schedules through the gateway against the emulator over HTTP (DESIGN §14,
§16): observation by list in ceil(N/100) calls, the targeted read, the events cursor, each
write mapped back, replays by key, and a two-phase schedule carried past the period end by a
test clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import stripe

from billing_reconciler.model_subscriptions import DesiredItem, PhaseItem, SubscriptionOwner
from billing_reconciler.stripe_gateway import (
    DEFAULT_PAYMENT_BEHAVIOR,
    EventCursor,
    ItemChange,
    PermanentStripeError,
    PhaseSpec,
    StripeGateway,
    cancel_schedule,
    cancel_subscription,
    create_schedule_from_subscription,
    create_subscription,
    observe_subscriptions,
    release_schedule,
    retrieve_subscription,
    subscription_events_since,
    subscriptions_of_customer,
    update_schedule,
    update_subscription,
)
from billing_reconciler.stripe_gateway.customers import EVENT_RETENTION_SECONDS
from tests.fixtures.emulator import EmulatorHandle, make_client

INSTALLATION = "inst-test"
T0 = 1768435200  # 2026-01-15T00:00:00Z
DAY = 86400
FEB_15 = T0 + 31 * DAY


@dataclass(frozen=True, slots=True)
class Item:
    price_id: str
    quantity: int | None


def _owner(org_id: str, plan: str = "pro", intent: str = "int_1") -> SubscriptionOwner:
    return SubscriptionOwner(
        installation_id=INSTALLATION, org_id=org_id, plan=plan, intent_id=intent
    )


def _price(sdk: stripe.StripeClient, amount: int, name: str = "Seat") -> str:
    product = sdk.v1.products.create({"name": name})
    return sdk.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
        }
    ).id


def _metered_price(sdk: stripe.StripeClient) -> str:
    meter = sdk.v1.billing.meters.create(
        {
            "display_name": "calls",
            "event_name": "api_calls",
            "default_aggregation": {"formula": "sum"},
        }
    ).id
    product = sdk.v1.products.create({"name": "API calls"})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "unit_amount": 2,
        "recurring": {"interval": "month", "usage_type": "metered", "meter": meter},
    }
    return sdk.v1.prices.create(params).id  # type: ignore[arg-type]


def _customer(
    sdk: stripe.StripeClient, *, card: bool = True, clock: str | None = None, **extra: Any
) -> str:
    params: dict[str, Any] = {"email": "billing@example.com", **extra}
    if clock is not None:
        params["test_clock"] = clock
    customer = sdk.v1.customers.create(params).id  # type: ignore[arg-type]
    if card:
        pm = sdk.v1.payment_methods.attach("pm_card_visa", {"customer": customer})
        sdk.v1.customers.update(customer, {"invoice_settings": {"default_payment_method": pm.id}})
    return customer


def _gets(emu: EmulatorHandle, path: str) -> int:
    return sum(1 for r in emu.control.requests(method="GET") if r.path == path)


def _create(
    gateway: StripeGateway, customer: str, price: str, key: str, org: str = "org-1", **kw: Any
) -> Any:
    return create_subscription(
        gateway,
        customer_id=customer,
        owner=_owner(org),
        items=[Item(price, 1)],
        currency="usd",
        idempotency_key=key,
        **kw,
    )


# --- observation ----------------------------------------------------------------------------


def test_listing_250_subscriptions_takes_3_calls_with_status_all_and_foreign_unowned(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    free = _price(sdk, 0, "Free")
    customer = _customer(sdk, card=False)
    for index in range(247):
        sdk.v1.subscriptions.create(
            {
                "customer": customer,
                "items": [{"price": free}],
                "metadata": _owner(f"org-{index}").as_metadata(),
            }
        )
    canceled = sdk.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": free}], "metadata": _owner("gone").as_metadata()}
    ).id
    sdk.v1.subscriptions.cancel(canceled)
    sdk.v1.subscriptions.create({"customer": customer, "items": [{"price": free}]})
    other = SubscriptionOwner(installation_id="other", org_id="org-x", plan="pro")
    sdk.v1.subscriptions.create(
        {"customer": customer, "items": [{"price": free}], "metadata": other.as_metadata()}
    )
    emu.control.clear_requests()

    observed = observe_subscriptions(gateway, installation_id=INSTALLATION)

    assert _gets(emu, "/v1/subscriptions") == 3
    assert _gets(emu, "/v1/subscription_schedules") == 1
    assert len(emu.control.requests()) == 4
    assert len(observed.subscriptions) == 250
    ours = [s for s in observed.subscriptions if s.owner is not None]
    assert len(ours) == 248
    gone = next(s for s in ours if s.owner is not None and s.owner.org_id == "gone")
    assert (gone.status, gone.live, gone.stripe_id) == ("canceled", False, canceled)
    one = next(s for s in ours if s.owner is not None and s.owner.org_id == "org-7")
    assert (one.status, one.customer_id, one.owner and one.owner.key) == (
        "active",
        customer,
        "subscription/org-7",
    )
    assert one.items[0].price_id == free
    assert one.items[0].current_period_end is not None
    assert observed.schedules == ()


def test_targeted_read_lists_one_customers_subscriptions_and_schedules(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    mine, theirs = _customer(sdk), _customer(sdk)
    sub = _create(gateway, mine, price, "k-mine").record.stripe_id
    _create(gateway, theirs, price, "k-theirs", org="org-2")
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub, installation_id=INSTALLATION, idempotency_key="k-sched"
    ).record.stripe_id
    emu.control.clear_requests()

    observed = subscriptions_of_customer(gateway, mine, installation_id=INSTALLATION)

    assert len(emu.control.requests()) == 2
    assert [s.stripe_id for s in observed.subscriptions] == [sub]
    assert observed.subscriptions[0].schedule_id == schedule
    assert [(s.stripe_id, s.subscription_id, s.status) for s in observed.schedules] == [
        (schedule, sub, "active")
    ]


# --- writes -----------------------------------------------------------------------------------


def test_create_maps_items_seats_metered_periods_and_markers(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    seat, metered = _price(sdk, 1000), _metered_price(sdk)
    customer = _customer(sdk)

    written = create_subscription(
        gateway,
        customer_id=customer,
        owner=_owner("org-1", plan="team"),
        items=[
            DesiredItem(price_key="price/seat/m", price_id=seat, quantity=3, per_seat=True),
            DesiredItem(price_key="price/calls/m", price_id=metered, quantity=None),
        ],
        currency="USD",
        pending_invoice_item_interval=("month", 1),
        metadata={"note": "hello"},
        idempotency_key="create-1",
    )

    record = written.record
    assert (written.replayed, written.request_id is not None) == (False, True)
    assert (record.status, record.currency, record.customer_id) == ("active", "usd", customer)
    assert [(i.price_id, i.quantity) for i in record.items] == [(seat, 3), (metered, None)]
    assert all(i.item_id and i.item_id.startswith("si_") for i in record.items)
    start, end = record.current_period_start, record.current_period_end
    assert start is not None
    assert end is not None
    assert 28 * DAY <= end - start <= 31 * DAY
    assert record.pending_invoice_item_interval == ("month", 1)
    assert (record.collection_method, record.automatic_tax) == ("charge_automatically", False)
    assert record.owner == _owner("org-1", plan="team")
    assert record.metadata == {"note": "hello"}
    assert record.latest_invoice_id is not None
    assert record.live
    live = sdk.v1.subscriptions.retrieve(record.stripe_id)
    assert live.metadata["br_key"] == "subscription/org-1"


def test_send_invoice_trial_with_cancel_behavior_and_cancel_at_period_end(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    customer = _customer(sdk, card=False)

    record = _create(
        gateway,
        customer,
        price,
        "create-trial",
        collection_method="send_invoice",
        days_until_due=14,
        trial_period_days=7,
        trial_missing_payment_method="cancel",
        cancel_at_period_end=True,
    ).record

    assert (record.status, record.collection_method, record.days_until_due) == (
        "trialing",
        "send_invoice",
        14,
    )
    assert record.trial_start is not None
    assert record.trial_end == record.trial_start + 7 * DAY
    assert record.trial_missing_payment_method == "cancel"
    assert (record.cancel_at_period_end, record.cancel_at) == (True, record.trial_end)


def test_free_default_plan_without_payment_method_is_active_at_once_paid_one_is_refused(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    free, paid = _price(sdk, 0, "Free"), _price(sdk, 1000, "Pro")
    customer = _customer(sdk, card=False)
    assert DEFAULT_PAYMENT_BEHAVIOR == "error_if_incomplete"

    record = _create(gateway, customer, free, "free-1").record
    assert (record.status, record.live) == ("active", True)

    with pytest.raises(PermanentStripeError) as refused:
        _create(gateway, customer, paid, "paid-1", org="org-2")
    assert refused.value.http_status in (400, 402)
    listed = sdk.v1.subscriptions.list({"customer": customer, "status": "all"}).data
    assert [s.id for s in listed] == [record.stripe_id]


def test_same_key_twice_is_one_subscription_replayed(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    customer = _customer(sdk)

    first = _create(gateway, customer, price, "same-key")
    second = _create(gateway, customer, price, "same-key")

    assert (first.replayed, second.replayed) == (False, True)
    assert first.record.stripe_id == second.record.stripe_id
    assert len(sdk.v1.subscriptions.list({"customer": customer, "status": "all"}).data) == 1


def test_update_quantity_tax_cancel_at_period_end_and_plan_marker(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    seat, extra = _price(sdk, 1000), _price(sdk, 500, "Extra")
    address = {"line1": "1 Main St", "city": "Berlin", "postal_code": "10115", "country": "DE"}
    customer = _customer(sdk, address=address)
    created = _create(gateway, customer, seat, "c-1").record
    item = created.items[0].item_id

    updated = update_subscription(
        gateway,
        subscription_id=created.stripe_id,
        installation_id=INSTALLATION,
        idempotency_key="u-1",
        items=[ItemChange(item_id=item, quantity=5), ItemChange(price_id=extra, quantity=1)],
        proration_behavior="none",
        automatic_tax=True,
        cancel_at_period_end=True,
        owner=_owner("org-1", plan="business"),
        metadata={"note": "x"},
    ).record

    assert sorted((i.price_id, i.quantity) for i in updated.items) == sorted(
        [(seat, 5), (extra, 1)]
    )
    assert (updated.automatic_tax, updated.cancel_at_period_end) == (True, True)
    assert updated.cancel_at == updated.current_period_end
    assert updated.owner is not None
    assert updated.owner.plan == "business"
    assert updated.metadata == {"note": "x"}
    pending = sdk.v1.invoice_items.list({"customer": customer, "pending": True}).data
    assert pending == []  # proration_behavior=none

    removed = update_subscription(
        gateway,
        subscription_id=created.stripe_id,
        installation_id=INSTALLATION,
        idempotency_key="u-2",
        items=[
            ItemChange(
                item_id=next(i.item_id for i in updated.items if i.price_id == extra), deleted=True
            )
        ],
        cancel_at_period_end=False,
        pending_invoice_item_interval=None,
        metadata={"note": ""},
    ).record
    assert [(i.price_id, i.quantity) for i in removed.items] == [(seat, 5)]
    assert (removed.cancel_at_period_end, removed.cancel_at, removed.metadata) == (False, None, {})


def test_cancel_now_invoices_and_prorates_and_a_repeat_is_replayed(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    price = _price(sdk, 3100)
    customer = _customer(sdk, clock=clock)
    sub = _create(gateway, customer, price, "c-cancel").record.stripe_id
    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": T0 + 10 * DAY})

    canceled = cancel_subscription(
        gateway,
        subscription_id=sub,
        installation_id=INSTALLATION,
        idempotency_key="cancel-1",
        invoice_now=True,
        prorate=True,
    )

    assert (canceled.record.status, canceled.replayed) == ("canceled", False)
    assert canceled.record.canceled_at == T0 + 10 * DAY
    assert canceled.record.cancellation_reason == "cancellation_requested"
    invoices = sdk.v1.invoices.list({"subscription": sub}).data
    credit = [inv for inv in invoices if inv.billing_reason == "subscription_update"]
    assert len(credit) == 1
    assert credit[0].total == -2100

    again = cancel_subscription(
        gateway, subscription_id=sub, installation_id=INSTALLATION, idempotency_key="cancel-2"
    )
    assert (again.record.status, again.replayed) == ("canceled", True)


# --- the events cursor --------------------------------------------------------------------------


def test_events_cursor_names_customers_subscriptions_and_schedules(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    first, second = _customer(sdk), _customer(sdk)
    _create(gateway, first, price, "e-1")

    start = subscription_events_since(gateway, None)
    assert start.full_resync
    assert start.cursor is not None
    emu.control.clear_requests()
    quiet = subscription_events_since(gateway, start.cursor)
    assert (quiet.full_resync, quiet.customer_ids, quiet.cursor) == (False, (), start.cursor)
    assert len(emu.control.requests()) == 1

    sub = _create(gateway, second, price, "e-2", org="org-2").record.stripe_id
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub, installation_id=INSTALLATION, idempotency_key="e-3"
    ).record.stripe_id
    sdk.v1.customers.update(first, {"name": "not a subscription event"})

    changed = subscription_events_since(gateway, start.cursor)

    assert (changed.full_resync, changed.customer_ids) == (False, (second,))
    assert changed.subscription_ids == (sub,)
    assert changed.schedule_ids == (schedule,)
    assert changed.cursor is not None
    assert changed.cursor != start.cursor
    assert subscription_events_since(gateway, changed.cursor).customer_ids == ()


def test_events_cursor_past_retention_or_purged_forces_a_full_resync(
    gateway: StripeGateway,
) -> None:
    old = EventCursor("evt_old", 1_000)
    assert subscription_events_since(gateway, old, now=lambda: 1_000 + EVENT_RETENTION_SECONDS)
    purged = subscription_events_since(gateway, EventCursor("evt_missing", 10**10), now=lambda: 0)
    assert purged.full_resync
    with pytest.raises(ValueError, match="20"):
        subscription_events_since(gateway, None, types=tuple(f"t.{i}" for i in range(21)))


# --- schedules --------------------------------------------------------------------------------


def test_two_phase_schedule_moves_the_plan_at_the_period_end(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    basic, pro = _price(sdk, 1000, "Basic"), _price(sdk, 3000, "Pro")
    customer = _customer(sdk, clock=clock)
    sub = _create(gateway, customer, basic, "s-1").record
    period_start, period_end = sub.current_period_start, sub.current_period_end
    assert (period_start, period_end) == (T0, FEB_15)

    created = create_schedule_from_subscription(
        gateway, subscription_id=sub.stripe_id, installation_id=INSTALLATION, idempotency_key="s-2"
    ).record
    assert (created.status, created.subscription_id, created.owner) == (
        "active",
        sub.stripe_id,
        None,
    )
    assert [(p.start, p.end) for p in created.phases] == [(T0, FEB_15)]

    written = update_schedule(
        gateway,
        schedule_id=created.stripe_id,
        owner=_owner("org-1", plan="basic"),
        phases=[
            PhaseSpec(
                items=(PhaseItem(basic, 1),), start=period_start, end=period_end, plan="basic"
            ),
            PhaseSpec(items=(PhaseItem(pro, 1),), plan="pro", proration_behavior="none"),
        ],
        end_behavior="release",
        proration_behavior="none",
        idempotency_key="s-3",
    ).record

    assert written.owner == _owner("org-1", plan="basic")
    assert written.end_behavior == "release"
    assert written.current_phase == (T0, FEB_15)
    assert [(p.start, p.end, p.plan) for p in written.phases] == [
        (T0, FEB_15, "basic"),
        (FEB_15, FEB_15 + 28 * DAY, "pro"),
    ]
    assert [[(i.price_id, i.quantity) for i in p.items] for p in written.phases] == [
        [(basic, 1)],
        [(pro, 1)],
    ]
    assert written.phases[1].proration_behavior == "none"

    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": FEB_15 + 2 * 3600})

    moved = retrieve_subscription(gateway, sub.stripe_id, installation_id=INSTALLATION)
    assert [i.price_id for i in moved.items] == [pro]
    assert moved.owner is not None
    assert moved.owner.plan == "pro"
    assert moved.schedule_id == created.stripe_id
    assert (moved.current_period_start, moved.status) == (FEB_15, "active")
    observed = subscriptions_of_customer(gateway, customer, installation_id=INSTALLATION)
    assert observed.schedules[0].current_phase == (FEB_15, FEB_15 + 28 * DAY)
    renewal = sdk.v1.invoices.list({"subscription": sub.stripe_id, "limit": 1}).data[0]
    assert (renewal.billing_reason, renewal.subtotal) == ("subscription_cycle", 3000)


def test_release_leaves_the_subscription_and_a_repeat_is_replayed(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    sub = _create(gateway, _customer(sdk), price, "r-1").record.stripe_id
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub, installation_id=INSTALLATION, idempotency_key="r-2"
    ).record.stripe_id

    released = release_schedule(
        gateway, schedule_id=schedule, installation_id=INSTALLATION, idempotency_key="r-3"
    )
    again = release_schedule(
        gateway, schedule_id=schedule, installation_id=INSTALLATION, idempotency_key="r-4"
    )

    assert (released.record.status, released.record.subscription_id) == ("released", None)
    assert released.record.released_subscription == sub
    assert (released.replayed, again.replayed, again.record.status) == (False, True, "released")
    left = retrieve_subscription(gateway, sub, installation_id=INSTALLATION)
    assert (left.status, left.schedule_id) == ("active", None)


def test_cancel_schedule_cancels_its_subscription(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    price = _price(sdk, 1000)
    customer = _customer(sdk)
    sub = _create(gateway, customer, price, "x-1").record.stripe_id
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub, installation_id=INSTALLATION, idempotency_key="x-2"
    ).record.stripe_id

    canceled = cancel_schedule(
        gateway, schedule_id=schedule, installation_id=INSTALLATION, idempotency_key="x-3"
    )

    assert canceled.record.status == "canceled"
    left = retrieve_subscription(gateway, sub, installation_id=INSTALLATION)
    assert left.status == "canceled"
    pending = sdk.v1.invoice_items.list({"customer": customer, "pending": True}).data
    assert pending == []  # prorate=false was sent (Stripe's default there is true)


def test_immediate_change_ends_the_current_phase_now_and_keeps_metered_items_unquantified(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    basic, pro, calls = _price(sdk, 3100, "Basic"), _price(sdk, 6200, "Pro"), _metered_price(sdk)
    customer = _customer(sdk, clock=clock)
    sub = create_subscription(
        gateway,
        customer_id=customer,
        owner=_owner("org-1", plan="basic"),
        items=[Item(basic, 1), Item(calls, None)],
        currency="usd",
        idempotency_key="i-1",
    ).record
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub.stripe_id, installation_id=INSTALLATION, idempotency_key="i-2"
    ).record
    assert [[(i.price_id, i.quantity) for i in p.items] for p in schedule.phases] == [
        [(basic, 1), (calls, None)]
    ]
    now = T0 + 10 * DAY
    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": now})

    written = update_schedule(
        gateway,
        schedule_id=schedule.stripe_id,
        owner=_owner("org-1", plan="basic"),
        phases=[
            PhaseSpec(items=(PhaseItem(basic, 1), PhaseItem(calls, None)), end="now", plan="basic"),
            PhaseSpec(
                items=(PhaseItem(pro, 1), PhaseItem(calls, None)),
                plan="pro",
                proration_behavior="create_prorations",
            ),
        ],
        proration_behavior="create_prorations",
        idempotency_key="i-3",
    ).record

    assert written.current_phase is not None
    assert written.current_phase[0] == now
    assert [p.plan for p in written.phases] == ["basic", "pro"]
    moved = retrieve_subscription(gateway, sub.stripe_id, installation_id=INSTALLATION)
    assert sorted((i.price_id, i.quantity) for i in moved.items) == sorted(
        [(pro, 1), (calls, None)]
    )
    assert moved.owner is not None
    assert moved.owner.plan == "pro"
    pending = sdk.v1.invoice_items.list({"customer": customer, "pending": True}).data
    assert sorted(ii.amount for ii in pending) == [-2100, 4200]  # 21 of 31 days left


def test_cancel_at_period_end_through_the_schedule_and_a_trial_end(
    emu: EmulatorHandle, gateway: StripeGateway
) -> None:
    sdk = make_client(emu.url)
    clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
    price = _price(sdk, 1000)
    customer = _customer(sdk, clock=clock)
    sub = _create(gateway, customer, price, "p-1", trial_end=T0 + 5 * DAY).record
    assert (sub.status, sub.trial_end, sub.current_period_end) == (
        "trialing",
        T0 + 5 * DAY,
        T0 + 5 * DAY,
    )
    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": T0 + 6 * DAY})
    active = retrieve_subscription(gateway, sub.stripe_id, installation_id=INSTALLATION)
    assert active.status == "active"
    end = active.current_period_end
    assert end is not None
    schedule = create_schedule_from_subscription(
        gateway, subscription_id=sub.stripe_id, installation_id=INSTALLATION, idempotency_key="p-2"
    ).record

    written = update_schedule(
        gateway,
        schedule_id=schedule.stripe_id,
        owner=_owner("org-1"),
        phases=[PhaseSpec(items=(PhaseItem(price, 1),), end=end, plan="pro")],
        end_behavior="cancel",
        idempotency_key="p-3",
    ).record
    assert (written.end_behavior, [p.end for p in written.phases]) == ("cancel", [end])

    sdk.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": end + 3600})

    ended = subscriptions_of_customer(gateway, customer, installation_id=INSTALLATION)
    assert [(s.status, s.ended_at) for s in ended.subscriptions] == [("canceled", end)]
    assert [s.status for s in ended.schedules] == ["completed"]
