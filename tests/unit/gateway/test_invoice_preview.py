"""`stripe_gateway.invoices`: the item changes a plan change previews (those a starting
schedule phase makes) and the mapping of a `create_preview` answer."""

from __future__ import annotations

from billing_reconciler.model_subscriptions import ItemRecord
from billing_reconciler.stripe_gateway.invoices import map_preview, phase_item_changes
from billing_reconciler.stripe_gateway.subscriptions import ItemChange


def test_a_kept_price_stays_requantified_others_are_deleted_and_new_ones_added_first() -> None:
    current = [
        ("si_base", "price_team_base", 1),
        ("si_seat", "price_seat", 2),
        ("si_usage", "price_usage", None),
    ]
    target = [
        ItemRecord(price_id="price_business_base", quantity=1),
        ItemRecord(price_id="price_seat", quantity=3),
        ItemRecord(price_id="price_usage", quantity=None),
    ]

    changes = phase_item_changes(current, target)

    assert changes == (
        ItemChange(price_id="price_business_base", quantity=1),
        ItemChange(item_id="si_base", deleted=True),
        ItemChange(item_id="si_seat", quantity=3),
    )
    assert [c.as_params() for c in changes] == [
        {"price": "price_business_base", "quantity": 1},
        {"id": "si_base", "deleted": True},
        {"id": "si_seat", "quantity": 3},
    ]


def test_the_same_items_change_nothing_and_an_item_without_its_id_is_left_alone() -> None:
    target = [ItemRecord(price_id="price_a", quantity=2)]
    assert phase_item_changes([("si_a", "price_a", 2)], target) == ()
    assert phase_item_changes([(None, "price_old", 1), ("si_a", "price_a", 2)], target) == ()


def test_a_preview_answer_maps_its_lines_and_which_are_prorations() -> None:
    def line(amount: int, *, proration: bool, item: bool) -> dict[str, object]:
        details = {"proration": proration}
        return {
            "description": f"line {amount}",
            "quantity": 2,
            "amount": amount,
            "period": {"start": 10, "end": 20},
            "pricing": {"price_details": {"price": "price_x", "product": "prod_x"}},
            "parent": {
                "type": "invoice_item_details" if item else "subscription_item_details",
                "invoice_item_details": details if item else None,
                "subscription_item_details": None if item else details,
            },
        }

    preview = map_preview(
        {
            "currency": "USD",
            "billing_reason": "subscription_update",
            "subtotal": 700,
            "total": 700,
            "amount_due": 650,
            "created": 5,
            "period_start": 1,
            "period_end": 5,
            "lines": {
                "data": [
                    line(-300, proration=True, item=True),
                    line(1000, proration=True, item=True),
                    line(0, proration=False, item=False),
                ]
            },
        }
    )

    assert (preview.currency, preview.amount_due, preview.total, preview.created) == (
        "usd",
        650,
        700,
        5,
    )
    assert [(li.amount, li.proration, li.subscription_item) for li in preview.lines] == [
        (-300, True, False),
        (1000, True, False),
        (0, False, True),
    ]
    assert [li.amount for li in preview.proration_lines] == [-300, 1000]
    assert preview.lines[0].price_id == "price_x"
    assert (preview.lines[0].period_start, preview.lines[0].period_end) == (10, 20)
