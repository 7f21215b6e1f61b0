"""Renderers: amounts by currency exponent, nested changes leaf by leaf, the summary line."""

from __future__ import annotations

import dataclasses

from billing_reconciler.model import Catalog
from billing_reconciler.planning.diff import diff
from billing_reconciler.planning.plan import FieldChange
from billing_reconciler.planning.render import leaf_changes, render_markdown, render_text

from .factories import applied_from, link, live, policy, price, product


def test_amounts_follow_the_currency_exponent() -> None:
    assert leaf_changes(FieldChange("unit_amount", 1000, 1200), "jpy") == [
        ("unit_amount", "1000 JPY", "1200 JPY")
    ]
    assert leaf_changes(FieldChange("unit_amount", 1000, 1200), "usd") == [
        ("unit_amount", "10.00 USD", "12.00 USD")
    ]
    assert leaf_changes(FieldChange("unit_amount", 1000, 1200), "kwd") == [
        ("unit_amount", "1.000 KWD", "1.200 KWD")
    ]


def test_nested_currency_options_show_only_the_leaves_that_differ() -> None:
    before = {"eur": {"unit_amount": 4500, "tiers": [], "tax_behavior": None}}
    after = {
        "eur": {"unit_amount": 4000, "tiers": [], "tax_behavior": None},
        "jpy": {"unit_amount": 700, "tiers": [], "tax_behavior": None},
    }
    assert leaf_changes(FieldChange("currency_options", before, after), "usd") == [
        ("currency_options.eur.unit_amount", "45.00 EUR", "40.00 EUR"),
        ("currency_options.jpy.unit_amount", "(none)", "700 JPY"),
    ]


def test_text_plan_of_a_supersede_marks_the_forcing_field_and_counts_every_step() -> None:
    desired = Catalog(products=(product("team"),), prices=(price("team"),))
    observed_products, observed_prices = link(
        [live(desired.products[0])], [live(desired.prices[0])]
    )
    observed = Catalog(products=tuple(observed_products), prices=tuple(observed_prices))
    changed = dataclasses.replace(desired, prices=(price("team", amount=1500),))
    text = render_text(diff(changed, observed, applied_from(observed), policy()))
    assert "-/+ price/team/monthly" in text
    assert "unit_amount: 10.00 USD -> 15.00 USD  # forces supersede" in text
    # Supersede, the repoint of the default price, and the archive of the old price: 3 steps.
    assert text.rstrip().endswith("Plan: 0 to create, 1 to update, 1 to supersede, 1 to archive.")
    markdown = render_markdown(diff(changed, observed, applied_from(observed), policy()))
    assert "⚠️ **destructive**" in markdown
    # The same fact as the text plan's note (before: only the row's flag).
    assert "`unit_amount`: 10.00 USD → 15.00 USD (**forces supersede**)" in markdown


def test_no_changes() -> None:
    assert render_text(diff(Catalog(), Catalog(), {}, policy())) == "No changes.\n"
