"""The billing collections' secondary indexes survive a restore that predates them."""

from __future__ import annotations


def test_billing_collections_restored_before_registration_are_reindexed() -> None:
    from stripe_emulator.resources.subscriptions import BILLING_INDEXES, ensure_indexes
    from stripe_emulator.state import Collection, Store

    store = Store()
    stale = Collection(kind="subscription", indexed=())
    stale.insert({"id": "sub_1", "customer": "cus_1", "status": "active"}, 7)
    store.collections["subscription"] = stale
    ensure_indexes(store)
    fresh = store.collection("subscription")
    assert fresh.indexed == BILLING_INDEXES["subscription"]
    assert [s["id"] for s in fresh.lookup("customer", "cus_1")] == ["sub_1"]
    assert fresh.seq_of["sub_1"] == 7
