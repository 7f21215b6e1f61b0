"""`reconcile serve` answers a plan change preview from Stripe (its API is given the
runtime's gateway): real process, real HTTP, PostgreSQL, the emulator, the example desired
state (a new org starts on free_monthly)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from billing_reconciler.store import Store
from tests.e2e.test_serve import (  # noqa: F401
    START_TIMEOUT,
    applied_run,
    eventually,
    quiet,
    sdk,
    workdir,
)
from tests.e2e.test_serve_customers import TOKEN, serve  # noqa: F401
from tests.fixtures.emulator import EmulatorHandle

pytestmark = pytest.mark.timeout(120)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def fast_subscription_refresh(workdir: Path) -> None:  # noqa: F811
    """Subscriptions re-read every 2 s: the free subscription of a new org is made and
    mirrored within seconds even when its customer came after the org's targeted pass."""
    billing = workdir / "desired" / "billing.yaml"
    text = billing.read_text()
    assert "subscription: 1m" in text
    billing.write_text(text.replace("subscription: 1m", "subscription: 2s"))


@pytest.mark.postgres
def test_serve_previews_a_plan_change_from_stripe_and_changes_nothing(
    fast_subscription_refresh: None,
    serve: str,  # noqa: F811
    emulator: EmulatorHandle,
    postgres_database_url: str,
) -> None:
    waiting = Store.open(postgres_database_url)
    try:  # the catalog applied and the start runs over
        eventually(lambda: applied_run(waiting), timeout=START_TIMEOUT, what="the first apply")
        eventually(lambda: quiet(waiting, seconds=0.5), timeout=15, what="the start runs to end")
    finally:
        waiting.close()
    org = f"{serve}/v1beta1/organizations/initech"
    created = httpx.put(org, json={"title": "Initech"}, headers=HEADERS, timeout=10)
    assert created.status_code == 201, created.text

    def mirrored() -> dict[str, object] | None:
        listed = httpx.get(f"{org}/billing/subscriptions", headers=HEADERS, timeout=10)
        assert listed.status_code == 200, listed.text
        data: list[dict[str, object]] = listed.json()["data"]
        live = [s for s in data if s["stripe_subscription_id"] and s["state"] == "active"]
        return live[0] if live else None

    sub = eventually(mirrored, timeout=START_TIMEOUT, what="the free subscription mirrored")
    assert sub["plan"] == "free_monthly"
    emulator.control.clear_requests()

    answer = httpx.post(
        f"{org}/billing/subscriptions/{sub['id']}/change",
        json={"plan": "team_monthly", "preview": True},
        headers=HEADERS,
        timeout=10,
    )

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["plan"], body["current_plan"], body["immediate"]) == (
        "team_monthly",
        "free_monthly",
        False,
    )
    assert body["amount_due_now"] == 0
    assert body["next_renewal_total"] == 4900 + 900  # base + one seat (no metered usage)
    assert body["next_renewal_at"] == sub["current_period_end"]
    posts = {r.path for r in emulator.control.requests(method="POST")}
    assert posts <= {"/v1/invoices/create_preview"}
    assert "/v1/invoices/create_preview" in posts
    again = httpx.get(f"{org}/billing/subscriptions/{sub['id']}", headers=HEADERS, timeout=10)
    assert again.json()["pending_change"] is None
    assert sdk(emulator).v1.subscription_schedules.list({"limit": 10}).data == []
