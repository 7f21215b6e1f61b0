"""Mapping Stripe objects to records: Stripe's published fixtures plus hand-made marked ones."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from billing_reconciler.model import (
    CurrencyOption,
    Ownership,
    Recurring,
    Tier,
)
from billing_reconciler.stripe_gateway import (
    map_catalog,
    map_feature,
    map_meter,
    map_price,
    map_product,
    map_product_feature,
)
from tests import compat_files

# Stripe's published example objects, vendored from ../shared/compat (tests/compat/).
FIXTURES = compat_files.STRIPE_FIXTURES


@pytest.fixture(scope="module")
def stripe_fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES.read_text())["resources"]
    return resources


def fixture(resources: dict[str, Any], name: str) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(resources[name])
    return obj


def marker(key: str, **extra: str) -> dict[str, str]:
    return {**Ownership("inst-1", key, "rev-abc").as_metadata(), **extra}


# --- Stripe's published fixtures: unmarked objects get provisional keys ------------------


def test_fixture_product(stripe_fixtures: dict[str, Any]) -> None:
    record = map_product(fixture(stripe_fixtures, "product"))
    assert record.key == "product/t-shirt"
    assert (record.name, record.title) == ("t-shirt", "T-shirt")
    assert record.description == "Comfortable gray cotton t-shirt"
    assert record.active is True
    assert record.owner is None
    assert record.metadata == {}
    assert (record.stripe_id, record.default_price_id) == (
        "prod_QXg1hqf4jFNsqG",
        "price_1PgafmB7WZ01zgkW02Hf9z6c",
    )


def test_fixture_price(stripe_fixtures: dict[str, Any]) -> None:
    record = map_price(fixture(stripe_fixtures, "price"))
    assert record.key == "price/price_1pgafmb7wz01zgkw6dkueic5"
    assert record.owner is None
    assert (record.currency, record.unit_amount, record.billing_scheme) == ("usd", 2000, "per_unit")
    assert record.recurring == Recurring(interval="month", interval_count=1, usage_type="licensed")
    assert record.tax_behavior is None  # Stripe's "unspecified"
    assert (record.tiers, record.tiers_mode, record.currency_options) == ((), None, {})
    assert record.product_stripe_id == "prod_QXg1hqf4jFNsqG"
    assert record.product_key == ""  # the product was not observed alongside


def test_fixture_meter(stripe_fixtures: dict[str, Any]) -> None:
    record = map_meter(fixture(stripe_fixtures, "billing.meter"))
    assert record.key == "meter/test-meter-event-name"
    assert (record.event_name, record.display_name) == ("test-meter-event-name", "test-meter")
    assert (record.aggregation, record.customer_key, record.value_key) == (
        "sum",
        "customer",
        "value",
    )
    assert (record.active, record.stripe_id) == (True, "meter_123")


def test_fixture_feature(stripe_fixtures: dict[str, Any]) -> None:
    record = map_feature(fixture(stripe_fixtures, "entitlements.feature"))
    assert record.key == "feature/something"
    assert (record.lookup_key, record.title, record.active) == (
        "something",
        "My super awesome feature",
        True,
    )
    assert record.owner is None


def test_fixture_product_feature(stripe_fixtures: dict[str, Any]) -> None:
    obj = fixture(stripe_fixtures, "product_feature")
    obj["id"] = "prodft_1"
    obj["entitlement_feature"].update(id="feat_1", lookup_key="sso")
    record = map_product_feature(obj, product_id="prod_1")
    assert (record.stripe_id, record.product_stripe_id, record.feature_stripe_id) == (
        "prodft_1",
        "prod_1",
        "feat_1",
    )
    assert (record.product_key, record.feature_key) == ("", "")
    assert record.key == "product_feature//sso"


def test_fixtures_join_into_one_catalog(stripe_fixtures: dict[str, Any]) -> None:
    price = fixture(stripe_fixtures, "price")
    product = fixture(stripe_fixtures, "product")
    product["default_price"] = price["id"]
    catalog = map_catalog(products=[product], prices=[price])
    assert catalog.prices[0].product_key == "product/t-shirt"
    assert catalog.products[0].default_price_key == "price/price_1pgafmb7wz01zgkw6dkueic5"


# --- hand-made marked objects -------------------------------------------------------------


def marked_product() -> dict[str, Any]:
    return {
        "id": "prod_team",
        "object": "product",
        "name": "Team Plan",
        "description": None,
        "active": True,
        "default_price": "price_team_monthly",
        "metadata": marker("product/team", br_plans="team", br_protect="true", owner="ops"),
    }


def marked_price(**overrides: Any) -> dict[str, Any]:
    price: dict[str, Any] = {
        "id": "price_team_monthly",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "currency": "usd",
        "unit_amount": 1500,
        "unit_amount_decimal": "1500",
        "lookup_key": "team_monthly",
        "nickname": "Team monthly",
        "product": "prod_team",
        "recurring": {
            "interval": "month",
            "interval_count": 3,
            "usage_type": "licensed",
            "meter": None,
        },
        "tax_behavior": "exclusive",
        "tiers_mode": None,
        "metadata": marker("price/team/monthly", colour="blue"),
    }
    price.update(overrides)
    return price


def test_marked_product_takes_key_from_marker_and_strips_it_from_metadata() -> None:
    record = map_product(marked_product())
    assert (record.key, record.name, record.title) == ("product/team", "team", "Team Plan")
    assert record.owner == Ownership("inst-1", "product/team", "rev-abc")
    assert record.metadata == {"br_plans": "team", "br_protect": "true", "owner": "ops"}
    assert record.protect is True


def test_marked_price_fields() -> None:
    record = map_price(marked_price())
    assert (record.key, record.name, record.lookup_key) == (
        "price/team/monthly",
        "monthly",
        "team_monthly",
    )
    assert record.recurring == Recurring(interval="month", interval_count=3)
    assert (record.nickname, record.tax_behavior) == ("Team monthly", "exclusive")
    assert record.metadata == {"colour": "blue"}
    assert record.owner is not None
    assert record.owner.installation_id == "inst-1"
    assert record.protect is False


def test_unmarked_price_with_lookup_key_gets_provisional_key() -> None:
    record = map_price(marked_price(metadata={"colour": "blue"}))
    assert (record.key, record.owner, record.metadata) == (
        "price/team_monthly",
        None,
        {"colour": "blue"},
    )


def test_incomplete_marker_counts_as_unmarked() -> None:
    record = map_product({**marked_product(), "metadata": {"managed_by": "billing-reconciler"}})
    assert (record.owner, record.key) == (None, "product/team plan")


def test_tiers_with_inf_and_decimal_amounts() -> None:
    tiers = [
        {"up_to": 10, "unit_amount": 500, "unit_amount_decimal": "500", "flat_amount": None,
         "flat_amount_decimal": None},
        {"up_to": 100, "unit_amount": None, "unit_amount_decimal": "400.000",
         "flat_amount": None, "flat_amount_decimal": "1000"},
        {"up_to": None, "unit_amount": None, "unit_amount_decimal": "0.5",
         "flat_amount": 0, "flat_amount_decimal": "0"},
    ]  # fmt: skip
    record = map_price(
        marked_price(
            billing_scheme="tiered",
            tiers_mode="graduated",
            unit_amount=None,
            unit_amount_decimal=None,
            tiers=tiers,
        )
    )
    assert (record.billing_scheme, record.tiers_mode, record.unit_amount) == (
        "tiered",
        "graduated",
        None,
    )
    assert record.tiers == (
        Tier(up_to=10, unit_amount=500, flat_amount=None),
        Tier(up_to=100, unit_amount=400, flat_amount=1000),
        Tier(up_to=None, unit_amount=None, flat_amount=0),  # 0.5 is not a whole minor unit
    )


def test_currency_options_exclude_the_price_currency() -> None:
    options = {
        "usd": {"unit_amount": 1500, "tax_behavior": "exclusive", "tiers": None},
        "EUR": {"unit_amount": 1400, "tax_behavior": "unspecified"},
        "jpy": {"unit_amount": None, "unit_amount_decimal": "2000", "tax_behavior": "inclusive",
                "tiers": [{"up_to": None, "unit_amount": 10, "flat_amount": None}]},
    }  # fmt: skip
    record = map_price(marked_price(currency_options=options))
    assert record.currency_options == {
        "eur": CurrencyOption(unit_amount=1400, tax_behavior=None),
        "jpy": CurrencyOption(
            unit_amount=2000, tiers=(Tier(up_to=None, unit_amount=10),), tax_behavior="inclusive"
        ),
    }


def test_metered_price_resolves_its_meter_through_observed_meters() -> None:
    meter = {
        "id": "mtr_tokens",
        "object": "billing.meter",
        "event_name": "api_tokens",
        "display_name": "API tokens",
        "status": "inactive",
        "default_aggregation": {"formula": "count"},
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": None,
    }
    recurring = {"interval": "month", "interval_count": 1, "usage_type": "metered",
                 "meter": "mtr_tokens"}  # fmt: skip
    unknown = {**recurring, "meter": "mtr_gone"}
    catalog = map_catalog(
        meters=[meter],
        prices=[
            marked_price(recurring=recurring),
            marked_price(id="price_other", recurring=unknown),
        ],
    )
    assert catalog.meters[0].active is False
    assert (catalog.meters[0].aggregation, catalog.meters[0].value_key) == ("count", "value")
    assert catalog.prices[0].recurring == Recurring(
        interval="month", usage_type="metered", meter_key="meter/api_tokens"
    )
    assert catalog.prices[1].recurring is not None
    assert catalog.prices[1].recurring.meter_key == ""


def test_join_resolves_references_between_observed_objects() -> None:
    feature = {
        "id": "feat_sso",
        "object": "entitlements.feature",
        "lookup_key": "sso",
        "name": "Single sign-on",
        "active": True,
        "metadata": marker("feature/sso"),
    }
    attachment = {"id": "prodft_1", "object": "product_feature", "entitlement_feature": feature}
    catalog = map_catalog(
        features=[feature],
        products=[marked_product()],
        prices=[marked_price(), marked_price(id="price_orphan", product="prod_unknown")],
        product_features=[("prod_team", attachment)],
    )
    [product] = catalog.products
    assert (product.default_price_key, product.default_price_id) == (
        "price/team/monthly",
        "price_team_monthly",
    )
    assert [p.product_key for p in catalog.prices] == ["product/team", ""]
    [link] = catalog.product_features
    assert (link.key, link.product_key, link.feature_key) == (
        "product_feature/team/sso",
        "product/team",
        "feature/sso",
    )
    assert catalog.features[0].metadata == {}


def test_expanded_references_are_accepted() -> None:
    product = marked_product()
    product["default_price"] = {"id": "price_team_monthly", "object": "price"}
    price = marked_price(product={"id": "prod_team", "object": "product"})
    catalog = map_catalog(products=[product], prices=[price])
    assert catalog.products[0].default_price_key == "price/team/monthly"
    assert catalog.prices[0].product_key == "product/team"


def test_archived_objects_map_inactive() -> None:
    assert map_product({**marked_product(), "active": False}).active is False
    assert map_price(marked_price(active=False)).active is False
