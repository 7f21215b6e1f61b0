"""`POST .../subscriptions/{id}/change` with `preview: true` (issue 11, DESIGN §16, §19).

The host API over a real store (SQLite and PostgreSQL), the subscriptions domain's
controllers and the emulator over HTTP, on a test clock: a preview answers what the change
would invoice (Stripe's `create_preview` with the configured `billing.plan_change`
proration), writes nothing (the store's every row and the emulator's request log), refuses
what the change itself refuses with the same status and code, and its proration lines are
the ones the change then invoices.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.client import BillingClient
from billing_reconciler.config import BillingConfig, Secret
from billing_reconciler.controller import PlanOptions
from billing_reconciler.desired import load_desired
from billing_reconciler.store import IntentRepository, Store
from billing_reconciler.stripe_gateway import RetryPolicy, StripeGateway
from tests.fixtures.emulator import EmulatorHandle, make_client
from tests.fixtures.postgres import new_postgres_database
from tests.integration.api.conftest import APP, APP_TOKEN, dump, error_of
from tests.integration.subscriptions.conftest import DAY, DOMAINS, FEB_15, T0, World

BILLING = """\
billing:
  default_currency: usd
  customer:
    default_plan: free_monthly
  plan_change:
    proration_behavior: create_prorations
    immediate_proration_behavior: {immediate}
reconcile:
  installation_id: test
"""

CATALOG = """\
products:
  - name: free_base
    title: Free
    prices:
      - {name: monthly, interval: month, amount: 0, currency: usd}
  - name: team_base
    title: Team platform fee
    prices:
      - {name: monthly, interval: month, amount: 4900, currency: usd}
      - {name: yearly, interval: year, amount: 49000, currency: usd}
  - name: team_seat
    title: Team seat
    behavior: per_seat
    prices:
      - {name: monthly, interval: month, amount: 900, currency: usd}
      - {name: yearly, interval: year, amount: 9000, currency: usd}
  - name: business_base
    title: Business platform fee
    prices:
      - {name: monthly, interval: month, amount: 9900, currency: usd}
  - name: business_seat
    title: Business seat
    behavior: per_seat
    prices:
      - {name: monthly, interval: month, amount: 1900, currency: usd}
  - name: solo_seat
    title: Solo seat
    behavior: per_seat
    config: {seat_limit: 1}
    prices:
      - {name: monthly, interval: month, amount: 1500, currency: usd}
  - name: pound_base
    title: Pound plan
    prices:
      - {name: monthly, interval: month, amount: 1000, currency: gbp}
plans:
  - {name: free_monthly, title: Free, interval: month, products: [{name: free_base}]}
  - name: team_monthly
    title: Team
    interval: month
    products: [{name: team_base}, {name: team_seat}]
  - name: team_yearly
    title: Team (yearly)
    interval: year
    products: [{name: team_base}, {name: team_seat}]
  - name: business_monthly
    title: Business
    interval: month
    products: [{name: business_base}, {name: business_seat}]
  - {name: solo_monthly, title: Solo, interval: month, products: [{name: solo_seat}]}
  - {name: pound_monthly, title: Pound, interval: month, products: [{name: pound_base}]}
"""

SUBS = "/v1beta1/organizations/acme/billing/subscriptions"
TEN_DAYS_IN = T0 + 10 * DAY


def rfc(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Setup:
    world: World
    api: TestClient
    emulator: EmulatorHandle

    def configure(self, immediate: str = "always_invoice") -> None:
        path = self.world.directory / "billing.yaml"
        path.write_text(BILLING.format(immediate=immediate))

    def config(self) -> BillingConfig:
        result = load_desired(self.world.directory)
        assert result.state is not None, [str(d) for d in result.diagnostics]
        return result.state.config

    def team_subscriber(self) -> str:
        """`acme` with 2 members on team_monthly since T0 (paid by card), the clock 10 days
        into its period; the subscription's id."""
        world = self.world
        world.reconcile()  # the catalog
        world.open("acme", members=2)
        world.reconcile()
        world.add_card("acme")
        intent_id = world.subscribe("acme", "team_monthly")
        world.reconcile()
        world.reconcile()  # observes (mirrors) what the pass before created
        (sub,) = [s for s in world.subscriptions("acme") if s.status == "active"]
        assert sub.metadata["plan"] == "team_monthly"
        world.advance(TEN_DAYS_IN)
        return intent_id

    def preview(self, intent_id: str, **body: Any) -> Any:
        return self.api.post(
            f"{SUBS}/{intent_id}/change", json={**body, "preview": True}, headers=APP
        )

    def posts(self) -> list[str]:
        return [r.path for r in self.emulator.control.requests(method="POST")]


@pytest.fixture(params=["sqlite", "postgresql"])
def setup(
    request: pytest.FixtureRequest, tmp_path: Path, emulator: EmulatorHandle
) -> Iterator[Setup]:
    directory = tmp_path / "desired"
    (directory / "plans").mkdir(parents=True)
    (directory / "plans" / "catalog.yaml").write_text(textwrap.dedent(CATALOG))
    with contextlib.ExitStack() as stack:
        if request.param == "postgresql":
            url = stack.enter_context(new_postgres_database())
        else:
            url = f"sqlite:///{tmp_path / 'state.db'}"
        sdk = make_client(emulator.url)
        clock = sdk.v1.test_helpers.test_clocks.create({"frozen_time": T0}).id
        world = World(
            directory=directory,
            store=Store.open(url),
            emulator=emulator,
            stripe=sdk,
            test_clock=clock,
        )
        stack.callback(world.store.close)
        holder: list[Setup] = []
        context = ApiContext(
            store=world.store,
            tokens=ApiTokens(app=(Secret(APP_TOKEN),)),
            config=lambda: holder[0].config(),
            installation_id=lambda: "test",
            clock=lambda: datetime.fromtimestamp(world.now(), UTC),
            gateway=StripeGateway(
                api_key="sk_test_emulator",
                api_base=emulator.url,
                retry=RetryPolicy(max_attempts=2, base_delay=0.0, max_delay=0.0),
            ),
        )
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(api_router(context))
        client = stack.enter_context(TestClient(app, raise_server_exceptions=True))
        holder.append(Setup(world=world, api=client, emulator=emulator))
        holder[0].configure()
        yield holder[0]


def _lines(invoice: Any) -> list[tuple[str, int | None, int, int, int]]:
    return sorted(
        (li.description, li.quantity, li.amount, li.period.start, li.period.end)
        for li in invoice.lines.data
    )


def _preview_lines(body: dict[str, Any]) -> list[tuple[str, int | None, int, int, int]]:
    return sorted(
        (
            li["description"],
            li["quantity"],
            li["amount"],
            int(datetime.fromisoformat(li["period_start"]).timestamp()),
            int(datetime.fromisoformat(li["period_end"]).timestamp()),
        )
        for li in body["proration_lines"]
    )


def test_an_immediate_upgrade_preview_is_what_the_change_then_invoices(setup: Setup) -> None:
    world = setup.world
    intent_id = setup.team_subscriber()
    before = dump(world.store)
    setup.emulator.control.clear_requests()

    response = setup.preview(intent_id, plan="business_monthly", immediate=True)

    assert response.status_code == 200, response.text
    body = response.json()
    # 21 of the period's 31 days remain: the unused team time credited, business charged.
    assert body["plan"] == "business_monthly"
    assert body["current_plan"] == "team_monthly"
    assert body["immediate"] is True
    assert body["effective_at"] == rfc(TEN_DAYS_IN)
    assert body["proration_behavior"] == "always_invoice"
    assert body["currency"] == "usd"
    amounts = sorted(li["amount"] for li in body["proration_lines"])
    assert amounts == sorted(
        [
            -round(4900 * 21 / 31),
            -round(2 * 900 * 21 / 31),
            round(9900 * 21 / 31),
            round(2 * 1900 * 21 / 31),
        ]
    )
    assert body["amount_due_now"] == sum(amounts) > 0
    assert all(li["period_end"] == rfc(FEB_15) for li in body["proration_lines"])
    assert {li["quantity"] for li in body["proration_lines"]} == {1, 2}
    assert body["next_renewal_total"] == 9900 + 2 * 1900
    assert body["next_renewal_at"] == rfc(FEB_15)
    # Nothing written: no store row, no Stripe write (two previews: now and the renewal).
    assert dump(world.store) == before
    assert set(setup.posts()) == {"/v1/invoices/create_preview"}

    # The change itself, then its reconcile: the invoice made now has the preview's lines.
    change = setup.api.post(
        f"{SUBS}/{intent_id}/change",
        json={"plan": "business_monthly", "immediate": True},
        headers=APP,
    )
    assert change.status_code == 200, change.text
    world.reconcile()
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    (invoice,) = [
        i
        for i in world.stripe.v1.invoices.list({"customer": customer, "limit": 100}).data
        if i.billing_reason == "subscription_update"
    ]
    assert _lines(invoice) == _preview_lines(body)
    assert invoice.amount_due == body["amount_due_now"]
    (sub,) = [s for s in world.subscriptions("acme") if s.status == "active"]
    assert sub.metadata["plan"] == "business_monthly"
    upcoming = world.stripe.v1.invoices.create_preview({"subscription": sub.id})
    assert upcoming.total == body["next_renewal_total"]
    assert upcoming.created == FEB_15


def test_a_preview_at_the_period_end_is_the_next_renewal_on_the_new_plan(setup: Setup) -> None:
    world = setup.world
    intent_id = setup.team_subscriber()
    before = dump(world.store)
    setup.emulator.control.clear_requests()

    # Through the typed client (over the test app's transport).
    with BillingClient(
        "http://testserver", token=APP_TOKEN, transport=setup.api._transport
    ) as client:
        body = client.preview_change("acme", intent_id, "business_monthly")

    assert body["immediate"] is False
    assert body["effective_at"] == rfc(FEB_15)
    assert body["proration_behavior"] == "create_prorations"
    assert body["amount_due_now"] == 0
    assert body["proration_lines"] == []
    assert body["next_renewal_total"] == 9900 + 2 * 1900
    assert body["next_renewal_at"] == rfc(FEB_15)
    assert dump(world.store) == before
    assert setup.posts() == ["/v1/invoices/create_preview"]

    # The change at the period end: the renewal then bills what the preview said.
    change = setup.api.post(
        f"{SUBS}/{intent_id}/change", json={"plan": "business_monthly"}, headers=APP
    )
    assert change.status_code == 200, change.text
    world.reconcile()
    world.advance(FEB_15 + 3600)
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    renewals = [
        i
        for i in world.stripe.v1.invoices.list({"customer": customer, "limit": 100}).data
        if i.billing_reason == "subscription_cycle"
    ]
    assert [i.total for i in renewals] == [body["next_renewal_total"]]


def test_a_preview_of_a_yearly_plan_at_the_period_end_is_its_first_yearly_invoice(
    setup: Setup,
) -> None:
    world = setup.world
    intent_id = setup.team_subscriber()
    before = dump(world.store)

    response = setup.preview(intent_id, plan="team_yearly")

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["amount_due_now"], body["proration_lines"]) == (0, [])
    assert body["next_renewal_total"] == 49000 + 2 * 9000
    assert body["next_renewal_at"] == body["effective_at"] == rfc(FEB_15)
    assert dump(world.store) == before

    change = setup.api.post(f"{SUBS}/{intent_id}/change", json={"plan": "team_yearly"}, headers=APP)
    assert change.status_code == 200, change.text
    world.reconcile()
    world.advance(FEB_15 + 3600)
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    made = [
        i
        for i in world.stripe.v1.invoices.list({"customer": customer, "limit": 100}).data
        if i.created >= FEB_15
    ]
    assert [i.total for i in made] == [body["next_renewal_total"]]


@pytest.mark.parametrize("immediate_proration", ["always_invoice", "create_prorations"])
def test_an_immediate_preview_of_a_yearly_plan_is_invoiced_now_and_renews_in_a_year(
    setup: Setup, immediate_proration: str
) -> None:
    """Monthly -> yearly now: Stripe restarts the billing cycle at the change and invoices
    the year at once with the unused month credited (`create_prorations` too: an interval
    change is invoiced at once), so the next renewal is a year from now, not the old
    period end; the change itself then invoices what the preview said."""
    setup.configure(immediate=immediate_proration)
    world = setup.world
    intent_id = setup.team_subscriber()
    before = dump(world.store)
    setup.emulator.control.clear_requests()

    response = setup.preview(intent_id, plan="team_yearly", immediate=True)

    assert response.status_code == 200, response.text
    body = response.json()
    year_later = TEN_DAYS_IN + 365 * DAY  # 2026-01-25 -> 2027-01-25
    assert body["effective_at"] == rfc(TEN_DAYS_IN)
    assert body["proration_behavior"] == immediate_proration
    credits = sorted(li["amount"] for li in body["proration_lines"])
    assert credits == sorted([-round(4900 * 21 / 31), -round(2 * 900 * 21 / 31)])
    assert all(li["period_end"] == rfc(FEB_15) for li in body["proration_lines"])
    yearly = 49000 + 2 * 9000
    assert body["amount_due_now"] == yearly + sum(credits)
    assert body["next_renewal_total"] == yearly
    assert body["next_renewal_at"] == rfc(year_later)
    assert dump(world.store) == before
    assert set(setup.posts()) == {"/v1/invoices/create_preview"}

    change = setup.api.post(
        f"{SUBS}/{intent_id}/change", json={"plan": "team_yearly", "immediate": True}, headers=APP
    )
    assert change.status_code == 200, change.text
    _apply_once(world)
    customer = world.account("acme").stripe_customer_id
    assert customer is not None
    (invoice,) = [
        i
        for i in world.stripe.v1.invoices.list({"customer": customer, "limit": 100}).data
        if i.billing_reason == "subscription_update"
    ]
    assert invoice.amount_due == body["amount_due_now"]
    (sub,) = [s for s in world.subscriptions("acme") if s.status == "active"]
    assert sub.metadata["plan"] == "team_yearly"
    assert {i.current_period_end for i in sub["items"].data} == {year_later}
    upcoming = world.stripe.v1.invoices.create_preview({"subscription": sub.id})
    assert (upcoming.created, upcoming.total) == (year_later, body["next_renewal_total"])


def test_an_immediate_preview_with_create_prorations_carries_them_to_the_renewal(
    setup: Setup,
) -> None:
    setup.configure(immediate="create_prorations")
    intent_id = setup.team_subscriber()

    response = setup.preview(intent_id, plan_change={"plan": "business_monthly", "immediate": True})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["proration_behavior"] == "create_prorations"
    assert body["amount_due_now"] == 0
    prorations = sum(li["amount"] for li in body["proration_lines"])
    assert len(body["proration_lines"]) == 4
    assert prorations > 0
    assert body["next_renewal_total"] == 9900 + 2 * 1900 + prorations


def _apply_once(world: World) -> None:
    """One plan-and-apply pass of every domain, its residual left for the next pass: once
    the change made the subscription yearly, the subscriptions domain plans the yearly
    plan's `pending_invoice_item_interval` (added seats billed monthly) only on the next
    pass (`World.reconcile` asserts a pass converges)."""
    for registration in DOMAINS:
        controller = world.controller(registration)
        planned = controller.plan(PlanOptions())
        if planned.plan.has_work:
            controller.apply(planned)


def _same_refusal(setup: Setup, intent_id: str, status: int, code: str, **change: Any) -> None:
    """The preview and the change itself are refused alike; neither wrote anything (nor
    sent anything to Stripe)."""
    before = dump(setup.world.store)
    setup.emulator.control.clear_requests()
    previewed = setup.preview(intent_id, **change)
    changed = setup.api.post(f"{SUBS}/{intent_id}/change", json=change, headers=APP)
    for response in (previewed, changed):
        assert response.status_code == status, response.text
        assert error_of(response)["code"] == code
    assert error_of(previewed)["details"] == error_of(changed)["details"]
    assert dump(setup.world.store) == before
    assert setup.posts() == []


def test_a_preview_is_refused_exactly_as_the_change(setup: Setup) -> None:
    world = setup.world
    intent_id = setup.team_subscriber()

    _same_refusal(setup, intent_id, 404, "not_found", plan="enterprise")
    _same_refusal(setup, intent_id, 409, "failed_precondition", plan="team_monthly")
    _same_refusal(setup, intent_id, 422, "invalid_argument", plan="pound_monthly")
    _same_refusal(setup, intent_id, 409, "seat_limit_reached", plan="solo_monthly", immediate=True)
    _same_refusal(setup, "no-such-subscription", 404, "not_found", plan="business_monthly")

    # A change in flight: another one is refused until it is dropped.
    pending = setup.api.post(
        f"{SUBS}/{intent_id}/change", json={"plan": "business_monthly"}, headers=APP
    )
    assert pending.status_code == 200, pending.text
    world.reconcile()
    _same_refusal(setup, intent_id, 409, "failed_precondition", plan="free_monthly")

    # A canceled subscription.
    account = world.account("acme")
    with world.store.session() as session:
        IntentRepository(session).clear_pending_change(account.id)
        IntentRepository(session).request_cancel(account.id, immediate=True, effective_at=None)
    world.reconcile()
    world.reconcile()
    statuses = {s.metadata.to_dict().get("plan"): s.status for s in world.subscriptions("acme")}
    assert statuses["team_monthly"] == "canceled", statuses
    _same_refusal(setup, intent_id, 409, "failed_precondition", plan="business_monthly")


def test_preview_goes_with_a_plan_change_only(setup: Setup) -> None:
    before = dump(setup.world.store)
    response = setup.api.post(
        f"{SUBS}/sub-x/change",
        json={"cancel_upcoming_changes": True, "preview": True},
        headers=APP,
    )
    assert response.status_code == 422, response.text
    assert error_of(response)["code"] == "invalid_argument"
    assert dump(setup.world.store) == before
