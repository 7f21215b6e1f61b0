"""`write` refuses operations Stripe does not have, before any request is made."""

from __future__ import annotations

import pytest

from billing_reconciler.model import Kind
from billing_reconciler.stripe_gateway import Operation, StripeGateway, write

# Port 9 (discard) on loopback: any request that slipped through would fail loudly.
GATEWAY = StripeGateway(api_key="sk_test_x", api_base="http://127.0.0.1:9")


@pytest.mark.parametrize(
    ("kind", "operation", "target_id", "parent_id", "message"),
    [
        (Kind.PLAN, Operation.CREATE, None, None, "no Stripe object"),
        (Kind.PRICE, Operation.DELETE, "price_1", None, "no delete for a price"),
        (Kind.METER, Operation.DELETE, "mtr_1", None, "no delete for a meter"),
        (Kind.PRODUCT_FEATURE, Operation.UPDATE, "pf_1", "prod_1", "no update"),
        (Kind.PRODUCT, Operation.UPDATE, None, None, "needs target_id"),
        (Kind.PRODUCT_FEATURE, Operation.CREATE, None, None, "needs parent_id"),
    ],
)
def test_unsupported_or_incomplete_writes_are_refused(
    kind: Kind,
    operation: Operation,
    target_id: str | None,
    parent_id: str | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        write(
            GATEWAY,
            kind=kind,
            operation=operation,
            params={},
            idempotency_key="k1",
            target_id=target_id,
            parent_id=parent_id,
        )


def test_a_write_without_idempotency_key_is_refused() -> None:
    with pytest.raises(ValueError, match="idempotency key"):
        write(GATEWAY, kind=Kind.PRODUCT, operation=Operation.CREATE, params={}, idempotency_key="")
