"""Webhook inbox: deduplication (also racing connections), claims with leases, processing."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from billing_reconciler.store import InboxRepository, Store
from tests.integration.store.conftest import FakeClock


def _store(inbox: InboxRepository, event_id: str, *, event_type: str = "product.updated") -> bool:
    return inbox.store_event(
        event_id=event_id,
        event_type=event_type,
        object_id="prod_1",
        livemode=False,
        api_version="2025-01-27.acacia",
        payload={"id": event_id, "data": {"object": {"id": "prod_1"}}},
    )


def test_store_round_trip_and_duplicate(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        inbox = InboxRepository(session, clock=clock)
        assert _store(inbox, "evt_1") is True
        assert _store(inbox, "evt_1") is False
    with store.session() as session:
        inbox = InboxRepository(session)
        event = inbox.get("evt_1")
        assert inbox.count() == 1
    assert event is not None
    assert (event.type, event.object_id, event.livemode) == ("product.updated", "prod_1", False)
    assert event.payload == {"id": "evt_1", "data": {"object": {"id": "prod_1"}}}
    assert event.received_at == clock.now
    assert (event.processed_at, event.attempts, event.last_error) == (None, 0, None)


def test_duplicates_racing_from_two_connections_are_stored_once(store: Store) -> None:
    event_ids = [f"evt_{n}" for n in range(20)]
    barrier = threading.Barrier(2)

    def deliver(_: int) -> list[bool]:
        barrier.wait(timeout=10)
        stored = []
        for event_id in event_ids:
            with store.session() as session:
                stored.append(_store(InboxRepository(session), event_id))
        return stored

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(deliver, range(2))
    assert [a + b for a, b in zip(first, second, strict=True)] == [1] * len(event_ids)
    with store.session() as session:
        assert InboxRepository(session).count() == len(event_ids)


def test_claims_are_exclusive_until_processed_or_expired(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        inbox = InboxRepository(session, clock=clock)
        for n in range(5):
            _store(inbox, f"evt_{n}")
    with store.session() as session:
        inbox = InboxRepository(session, clock=clock)
        claimed = inbox.claim_unprocessed(3, lease=timedelta(minutes=1))
        assert [event.event_id for event in claimed] == ["evt_0", "evt_1", "evt_2"]
        assert {event.attempts for event in claimed} == {1}
        assert [e.event_id for e in inbox.claim_unprocessed(10)] == ["evt_3", "evt_4"]
        assert inbox.claim_unprocessed(10) == []

        assert inbox.mark_processed("evt_0") is True
        assert inbox.mark_processed("evt_0") is False
        assert inbox.mark_failed("evt_1", "reconcile failed") is True
        assert inbox.count() == 5
        assert inbox.count(unprocessed_only=True) == 4

        # evt_1 was released; evt_2's claimer "died": its lease runs out and it is claimed again.
        assert [e.event_id for e in inbox.claim_unprocessed(10)] == ["evt_1"]
        clock.advance(timedelta(minutes=1))
        again = inbox.claim_unprocessed(10)
        assert [e.event_id for e in again] == ["evt_2"]
        assert again[0].attempts == 2

        failed = inbox.get("evt_1")
        assert failed is not None
        assert (failed.last_error, failed.attempts) == ("reconcile failed", 2)
        processed = inbox.get("evt_0")
        assert processed is not None
        assert processed.processed_at == clock.now - timedelta(minutes=1)


def test_concurrent_claimers_get_disjoint_events(store: Store) -> None:
    with store.session() as session:
        inbox = InboxRepository(session)
        for n in range(40):
            _store(inbox, f"evt_{n:02}")
    barrier = threading.Barrier(2)

    def claim_all(_: int) -> list[str]:
        claimed: list[str] = []
        barrier.wait(timeout=10)
        while True:
            with store.session() as session:
                batch = InboxRepository(session).claim_unprocessed(3)
            if not batch:
                return claimed
            claimed.extend(event.event_id for event in batch)

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(claim_all, range(2))
    assert not set(first) & set(second)
    assert sorted(first + second) == [f"evt_{n:02}" for n in range(40)]
