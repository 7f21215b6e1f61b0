"""Controller state: suspension and the leader lease bookkeeping."""

from __future__ import annotations

from datetime import timedelta

from billing_reconciler.store import (
    ControllerStateRepository,
    LeaseRepository,
    Store,
    Suspension,
)
from tests.integration.store.conftest import FakeClock


def test_suspend_and_resume(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        state = ControllerStateRepository(session, clock=clock)
        assert state.suspension() is None
        assert state.suspend("incident 42", "ada@laptop") == Suspension(
            "incident 42", "ada@laptop", clock.now
        )
    clock.advance(timedelta(minutes=5))
    with store.session() as session:
        state = ControllerStateRepository(session, clock=clock)
        assert state.suspension() == Suspension(
            "incident 42", "ada@laptop", clock.now - timedelta(minutes=5)
        )
        state.suspend("still incident 42", "bob@host")
        assert state.suspension() == Suspension("still incident 42", "bob@host", clock.now)
        assert state.resume() is True
        assert state.resume() is False
        assert state.suspension() is None


def test_lease_bookkeeping(store: Store, clock: FakeClock) -> None:
    ttl = timedelta(seconds=30)
    with store.session() as session:
        leases = LeaseRepository(session, clock=clock)
        assert leases.current("leader") is None
        first = leases.record("leader", "pod-a", ttl)
        clock.advance(timedelta(seconds=10))
        renewed = leases.record("leader", "pod-a", ttl)
        assert renewed.acquired_at == first.acquired_at
        assert renewed.expires_at == clock.now + ttl
        assert leases.current("leader") == renewed
        assert renewed.is_live(clock.now)
        assert not renewed.is_live(clock.now + ttl)

        assert leases.release("leader", "pod-b") is False
        clock.advance(timedelta(minutes=1))
        taken = leases.record("leader", "pod-b", ttl)
        assert (taken.holder, taken.acquired_at) == ("pod-b", clock.now)
        assert leases.release("leader", "pod-b") is True
        assert leases.current("leader") is None
