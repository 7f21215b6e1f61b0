"""The meter sender under a changed catalog and failures (tester T2 G4, G5, item 8), over HTTP
to the emulator on SQLite and PostgreSQL:
- the sender's meter definitions are the applied catalog's, the ones the usage API accepted
  the event by: a meter removed from desired/ and not applied yet still has its accepted
  usages sent; an event of a meter the applied catalog does not have waits, named;
- an event whose send keeps failing (5xx) is a plan warning and a status fact, its error
  text never showing a secret; it holds back its account's later events;
- one account whose aggregates cannot be formed holds back no other account's events.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from billing_reconciler.api import ApiContext, ApiTokens, api_router, install_error_handlers
from billing_reconciler.apply import ApplyError
from billing_reconciler.cli.status_cmd import DesiredReport, collect_status, render_status_text
from billing_reconciler.config import Secret
from billing_reconciler.desired import load_desired
from billing_reconciler.domains.credit_meters import METER_KEY_PREFIX, aggregate_identifier
from billing_reconciler.effects import credit_meters as effects
from billing_reconciler.registry import CREDITS
from billing_reconciler.store import OrganizationRepository
from billing_reconciler.store.meter_outbox import PendingEvent, drain
from billing_reconciler.stripe_gateway import NO_RETRY
from tests.integration.credits.conftest import CATALOG_YAML, COUNT, SUM, MeterWorld

APP_TOKEN = "app-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
SECRET = "sk_live_" + "Zq7" * 10 + "9x1w"


def _api(meters: MeterWorld, org: str) -> TestClient:
    with meters.store.session() as session:
        OrganizationRepository(session).upsert(org, title=org)
    state = load_desired(meters.directory).state
    assert state is not None
    context = ApiContext(
        store=meters.store,
        tokens=ApiTokens(app=(Secret(APP_TOKEN),), admin=(Secret(ADMIN_TOKEN),)),
        config=lambda: state.config,
        installation_id=lambda: "test",
        request_reconcile=lambda d, s, r: None,
    )
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(api_router(context))
    client = TestClient(app)
    granted = client.post(
        f"/v1beta1/admin/organizations/{org}/billing/credits",
        json={"id": f"grant-{org}", "amount": 1000},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert granted.status_code in (200, 201), granted.text
    return client


def _without_the_logins_meter(meters: MeterWorld) -> None:
    """desired/ loses the `logins` product (its price and meter); nothing is applied."""
    catalog = textwrap.dedent(CATALOG_YAML)
    start = catalog.index("  - name: logins")
    end = catalog.index("plans:")
    (meters.directory / "plans" / "catalog.yaml").write_text(catalog[:start] + catalog[end:])
    state = load_desired(meters.directory).state
    assert state is not None
    assert all(p.name != "logins" for p in state.products)


def test_a_meter_removed_from_desired_but_still_applied_has_its_usages_sent(
    meters: MeterWorld,
) -> None:
    """Tester T2 G5: the API accepted the usage (the meter is in the applied catalog) while
    the sender looked the meter up in desired/, so the event waited forever."""
    meters.open(["acme"])
    client = _api(meters, "acme")
    _without_the_logins_meter(meters)
    response = client.post(
        "/v1beta1/organizations/acme/billing/usages",
        json={"usages": [{"id": "login-1", "amount": 1, "meter": {"event_name": COUNT}}]},
        headers={"Authorization": f"Bearer {APP_TOKEN}"},
    )
    assert response.status_code == 201, response.text
    plan = meters.plan()
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/acme"]
    assert plan.notices == ()
    meters.send()
    (event,) = meters.events()
    assert event["identifier"] == "login-1"
    assert event["payload"] == {"stripe_customer_id": meters.customer("acme"), "value": "1"}
    assert meters.depth() == (0, 0)

    # An event of a meter the applied catalog does not have (written before its meter was
    # dropped from it): it waits, and the notice names the meter.
    ghost = meters.usages("acme", 2, event_name="ghost_meter", prefix="g")
    waiting = meters.plan()
    assert waiting.steps == ()
    (notice,) = waiting.notices
    assert "2 meter event(s) name an event no meter of the applied catalog" in notice.message
    assert "(ghost_meter)" in notice.message
    meters.send()
    assert not set(ghost) & {e["identifier"] for e in meters.events()}
    assert meters.depth() == (2, 0)


def _facts(meters: MeterWorld) -> dict[str, Any]:
    assert CREDITS.facts is not None
    return {f.name: f.value for f in CREDITS.facts(meters.store)}


def test_an_event_that_keeps_failing_is_warned_about_and_holds_back_its_account(
    meters: MeterWorld,
) -> None:
    """Tester T2 G4: a pending event whose send failed again and again (5xx) had `attempts`
    and `last_error` on its row and was shown nowhere. The sender goes in order, so it also
    holds back the account's later events until it is sent (kept on purpose: a `last`
    meter's final value must be the final usage's)."""
    meters.configure(concurrency=1)
    meters.open(["acme"])
    ids = meters.usages("acme", 3, at=time.time() - 60)
    for attempt in range(3):
        meters.emulator.control.add_fault(
            method="POST", path_prefix="/v1/billing/meter_events", nth=1, kind="500"
        )
        controller = meters.controller(CREDITS, retry=NO_RETRY)
        with pytest.raises(ApplyError):
            controller.apply(controller.plan())
        assert meters.events() == []  # the first failed; the later ones were not tried
        if attempt < 2:
            assert meters.plan().warnings == ()  # a failure or two is not yet a warning
    plan = meters.plan()
    (warning,) = plan.warnings
    assert warning.startswith("1 meter event(s) of org acme keep failing (attempts 3, last error: ")
    assert "status=500" in warning
    assert "hold back the org's later meter events" in warning
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/acme"]  # still retried
    assert _facts(meters)["meter_events_failing"] == 1
    report = collect_status(meters.store, DesiredReport(True, "test", "rev", ()))
    assert "meter events failing: 1" in render_status_text(report)

    meters.send()
    assert sorted(e["identifier"] for e in meters.events()) == sorted(ids)
    assert meters.plan().warnings == ()
    assert _facts(meters)["meter_events_failing"] == 0


def test_a_failing_events_stored_error_never_shows_a_secret(meters: MeterWorld) -> None:
    meters.open(["acme"])
    (ident,) = meters.usages("acme", 1, at=time.time() - 60)

    def fail(event: PendingEvent) -> tuple[str, str | None]:
        raise RuntimeError(f"proxy said no to Authorization: Bearer {SECRET}")

    for _ in range(3):
        with pytest.raises(RuntimeError):
            drain(
                meters.store,
                account_id=meters.account_id("acme"),
                up_to_seq=10**9,
                event_names=[SUM],
                send=fail,
            )
    with meters.store.session() as session:
        stored = session.execute(
            text("SELECT attempts, last_error FROM meter_outbox WHERE id = :id"), {"id": ident}
        ).one()
    assert stored[0] == 3
    assert SECRET not in stored[1]
    assert "sk_live_…9x1w" in stored[1]
    # A row written before errors were masked: the plan masks it when reading.
    with meters.store.session() as session:
        session.execute(
            text("UPDATE meter_outbox SET last_error = :e WHERE id = :id"),
            {"e": f"old text {SECRET}", "id": ident},
        )
    (warning,) = meters.plan().warnings
    assert SECRET not in warning
    assert "old text sk_live_…9x1w" in warning


@pytest.fixture
def unformable(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Forming the aggregates of the orgs in the returned set raises (as a bug or bad row
    would)."""
    orgs: set[str] = set()
    real = effects.form_aggregates

    def form(store: Any, **kwargs: Any) -> int:
        if kwargs["org_id"] in orgs:
            raise ValueError(f"cannot form the aggregates of {kwargs['org_id']}")
        return real(store, **kwargs)

    monkeypatch.setattr(effects, "form_aggregates", form)
    return orgs


def test_one_account_whose_aggregates_cannot_be_formed_holds_back_no_other(
    meters: MeterWorld, unformable: set[str]
) -> None:
    """Item 8: the forming error escaped the applier as an unexpected exception, which stops
    the whole apply: the accounts after it in the pass sent nothing. Now its own step fails
    (scoped to its customer) after its other events are sent, and every other account's
    step runs."""
    meters.configure(aggregate=True, window="1m", concurrency=1)
    meters.open(["acme", "globex", "initech"])
    start = int(time.time()) // 60 * 60 - 600
    for org in ("acme", "globex", "initech"):
        meters.usages(org, 5, value=2, at=start + 5)
    logins = meters.usages("acme", 2, event_name=COUNT, at=start + 5, prefix="login")
    unformable.add("acme")
    controller = meters.controller(CREDITS)
    planned = controller.plan()
    assert planned.plan.steps[0].key == f"{METER_KEY_PREFIX}/acme"  # first in order
    _, _, residual = controller.apply(planned, hold_back_refused=True)
    sent = {e["identifier"]: e for e in meters.events()}
    for org in ("globex", "initech"):
        assert sent[aggregate_identifier(org, SUM, start, 0)]["payload"]["requests"] == "10"
    assert set(logins) <= set(sent)  # acme's own other events went too
    assert aggregate_identifier("acme", SUM, start, 0) not in sent
    assert meters.depth() == (5, 0)  # acme's rows, kept for the next pass
    assert residual.steps == ()  # held back, not a repeat (a scheduled pass)

    # A targeted run names the failure (no traceback, the customer's step).
    again = meters.controller(CREDITS)
    targeted = again.plan()
    with pytest.raises(ApplyError, match=r"could not be formed \(cannot form the aggregates"):
        again.apply(targeted)

    unformable.clear()
    meters.send()
    sent = {e["identifier"]: e for e in meters.events()}
    assert sent[aggregate_identifier("acme", SUM, start, 0)]["payload"]["requests"] == "10"
    assert meters.depth() == (0, 0)
