"""The billing collections' secondary indexes survive a restore that predates them, and a
page over a union of index values (the default subscription list) reads about one page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from stripe_emulator.state import Collection, Store


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


class _Counting(list[int]):
    """An index list that counts the elements read from it (by index or by iteration)."""

    reads = 0

    def __getitem__(self, key: Any) -> Any:
        _Counting.reads += len(range(len(self))[key]) if isinstance(key, slice) else 1
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[int]:
        for value in super().__iter__():
            _Counting.reads += 1
            yield value


def _store_of_subscriptions(count: int) -> Store:
    from stripe_emulator.resources.subscriptions import BILLING_INDEXES

    store = Store()
    collection = Collection(kind="subscription", indexed=BILLING_INDEXES["subscription"])
    store.collections["subscription"] = collection
    statuses = ("active", "trialing", "past_due", "canceled")
    for n in range(count):
        store.insert(
            "subscription",
            {"id": f"sub_{n}", "customer": f"cus_{n % 7}", "status": statuses[n % 4]},
        )
    for value, seqs in list(collection.indexes["status"].items()):
        collection.indexes["status"][value] = _Counting(seqs)
    return store


LIVE = ("active", "trialing", "past_due", "unpaid", "paused", "incomplete")


@pytest.mark.parametrize("size", [1_000, 20_000])
def test_a_page_over_a_union_of_index_values_reads_about_the_page(size: int) -> None:
    store = _store_of_subscriptions(size)
    collection = store.collection("subscription")
    _Counting.reads = 0
    page = collection.page(equals={"status": LIVE}, predicate=None, limit=10)
    assert len(page.objects) == 10
    assert page.has_more
    assert {o["status"] for o in page.objects} <= set(LIVE)
    first_reads = _Counting.reads
    # limit + 1 candidates from the merge, plus the bisections of the cursor: not the index.
    assert first_reads < 60
    _Counting.reads = 0
    after = collection.page(
        equals={"status": LIVE},
        predicate=None,
        limit=10,
        starting_after=page.objects[-1]["id"],
    )
    assert _Counting.reads < 100
    _Counting.reads = 0
    before = collection.page(
        equals={"status": LIVE},
        predicate=None,
        limit=10,
        ending_before=after.objects[0]["id"],
    )
    assert _Counting.reads < 100
    assert [o["id"] for o in before.objects] == [o["id"] for o in page.objects]


def test_a_union_intersected_with_another_filter_matches_a_full_scan() -> None:
    store = _store_of_subscriptions(500)
    collection = store.collection("subscription")
    equals = {"status": ["active", "past_due", "nope"], "customer": ["cus_3", "cus_3"]}
    expected = [
        o["id"]
        for o in reversed([collection.objects[collection.id_at[s]] for s in collection.alive])
        if o["status"] in ("active", "past_due") and o["customer"] == "cus_3"
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = collection.page(equals=equals, predicate=None, limit=7, starting_after=cursor)
        seen.extend(o["id"] for o in page.objects)
        if not page.has_more:
            break
        cursor = page.objects[-1]["id"]
    assert seen == expected
    assert collection.page(equals={"status": []}, predicate=None, limit=5).objects == []
    assert collection.page(equals={"status": ["nope"]}, predicate=None, limit=5).objects == []
    back = collection.page(equals=equals, predicate=None, limit=3, ending_before=expected[5])
    assert [o["id"] for o in back.objects] == expected[2:5]
