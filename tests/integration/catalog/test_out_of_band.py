"""Objects deleted in the dashboard after we applied them: the next pass re-creates them.

Stripe lets a human delete a product that has no prices and detach a feature from a product.
Observation must not fail on the deleted product (we list the features of every product we
attached some to), and
within the 24 h an idempotency key lives, re-sending the first create with the same key would
replay Stripe's first response (the id of the deleted object) instead of creating anything, so
the re-create must go out under a new key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import stripe

from billing_reconciler.desired import load_desired
from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Action

from .conftest import MakeController, converge, write_desired

CATALOG = """\
features:
  - name: export
products:
  - name: reports
    title: Reports
    prices:
      - name: monthly
        interval: month
        amount: 900
        currency: usd
    features:
      - name: export
  - name: addon
    title: Add-on
    features:
      - name: export
"""


def sdk(emulator: Any) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_human", base_addresses={"api": emulator.url})


def managed(client: stripe.StripeClient, br_key: str) -> list[stripe.Product]:
    products = client.v1.products.list({"limit": 100}).data
    return [p for p in products if p.to_dict()["metadata"].get("br_key") == br_key]


def test_product_deleted_in_the_dashboard_is_recreated(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    state = write_desired(tmp_path, CATALOG)
    converge(make_controller(state))
    client = sdk(emulator)
    [addon] = managed(client, "product/addon")
    client.v1.products.delete(addon.id)

    controller = make_controller(state)
    plan = controller.plan().plan
    assert [(s.action, s.key) for s in plan.steps] == [
        (Action.CREATE, "product/addon"),
        (Action.CREATE, "product_feature/addon/export"),
        (Action.UPDATE, "product/addon"),  # its `br_features` record, after attaching
    ]
    converge(controller)
    [again] = managed(client, "product/addon")
    assert again.id != addon.id


def test_feature_detached_in_the_dashboard_is_reattached(
    tmp_path: Path, emulator: Any, make_controller: MakeController
) -> None:
    state = write_desired(tmp_path, CATALOG)
    converge(make_controller(state))
    client = sdk(emulator)
    [reports] = managed(client, "product/reports")
    [attachment] = client.v1.products.features.list(reports.id).data
    assert attachment.entitlement_feature.lookup_key == "export"
    client.v1.products.features.delete(reports.id, attachment.id)

    # Observation trusts the product's `br_features` record (Stripe has no account-wide list
    # of attachments): a detach in the dashboard alone is not seen by a default plan ...
    assert make_controller(state).plan().plan.steps == ()
    # ... and is by one that verifies attachments.
    billing = tmp_path / "billing.yaml"
    billing.write_text(billing.read_text() + "  verify_attachments: true\n")
    result = load_desired(tmp_path)
    assert result.state is not None, [str(d) for d in result.diagnostics]
    controller = make_controller(result.state)
    plan = controller.plan().plan
    assert [(s.action, s.kind) for s in plan.steps] == [(Action.CREATE, Kind.PRODUCT_FEATURE)]
    converge(controller)
    [reattached] = client.v1.products.features.list(reports.id).data
    assert reattached.id != attachment.id
