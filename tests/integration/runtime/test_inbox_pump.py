"""The inbox pump on a real store: stored events become queued reconciles, and the inbox
records how each ended. Driven by hand (`drain`, `flush`), no threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from billing_reconciler.cli.status_cmd import run_resume
from billing_reconciler.runtime.control import RESUMED
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import OnDone, Outcome
from billing_reconciler.runtime.service import InboxPump
from billing_reconciler.store import ControllerStateRepository, InboxRepository, Store
from billing_reconciler.store.tables import InboxModel


@pytest.fixture
def inbox_store(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    yield store
    store.close()


def product_event(
    event_id: str, name: str, *, event_type: str = "product.updated"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": event_type,
        "data": {
            "object": {
                "id": f"prod_{name}",
                "metadata": {"managed_by": "billing-reconciler", "br_key": f"product/{name}"},
            }
        },
    }


def store_events(store: Store, *events: dict[str, Any]) -> None:
    with store.session() as session:
        inbox = InboxRepository(session)
        for event in events:
            inbox.store_event(
                event_id=event["id"],
                event_type=event["type"],
                object_id=event["data"]["object"].get("id"),
                livemode=False,
                api_version=None,
                payload=event,
            )


def processed(store: Store, event_id: str) -> bool:
    with store.session() as session:
        event = InboxRepository(session).get(event_id)
    assert event is not None
    return event.processed_at is not None


class Queue:
    def __init__(self) -> None:
        self.requests: list[ReconcileRequest] = []
        self.callbacks: list[OnDone] = []

    def put(self, request: ReconcileRequest, on_done: OnDone) -> bool:
        self.requests.append(request)
        self.callbacks.append(on_done)
        return True


def pump(store: Store, queue: Queue) -> InboxPump:
    return InboxPump(
        store=store, enqueue=queue.put, handles=lambda domain: domain == "catalog", poll_seconds=1
    )


def test_only_an_active_pump_claims_events(inbox_store: Store) -> None:
    store_events(inbox_store, product_event("evt_1", "team"))
    queue = Queue()
    follower = pump(inbox_store, queue)
    assert follower.drain() == 0
    follower.set_active(True)
    assert follower.drain() == 1
    assert queue.requests == [
        ReconcileRequest("catalog", frozenset({"product/team"}), "webhook product.updated evt_1")
    ]


def test_events_are_processed_once_their_reconcile_has_run(inbox_store: Store) -> None:
    store_events(inbox_store, product_event("evt_1", "team"), product_event("evt_2", "team"))
    queue = Queue()
    active = pump(inbox_store, queue)
    active.set_active(True)
    assert active.drain() == 2
    assert active.drain() == 0, "claimed events are not claimed again"
    assert not processed(inbox_store, "evt_1")
    for callback in queue.callbacks:
        callback(Outcome.DONE)
    active.flush()
    assert processed(inbox_store, "evt_1")
    assert processed(inbox_store, "evt_2")


def test_unrouted_events_and_unbuilt_domains_are_processed_at_once(inbox_store: Store) -> None:
    customer = {"id": "evt_c", "type": "customer.updated", "data": {"object": {"id": "cus_1"}}}
    store_events(
        inbox_store,
        product_event("evt_plan", "team", event_type="plan.updated"),
        customer,
    )
    queue = Queue()
    active = pump(inbox_store, queue)
    active.set_active(True)
    assert active.drain() == 2
    assert queue.requests == []
    assert processed(inbox_store, "evt_plan")
    assert processed(inbox_store, "evt_c")


def test_dropped_work_releases_its_events_for_the_next_leader(inbox_store: Store) -> None:
    store_events(inbox_store, product_event("evt_1", "team"))
    queue = Queue()
    active = pump(inbox_store, queue)
    active.set_active(True)
    active.drain()
    queue.callbacks[0](Outcome.DROPPED)
    active.flush()
    assert not processed(inbox_store, "evt_1")
    next_leader = Queue()
    successor = pump(inbox_store, next_leader)
    successor.set_active(True)
    assert successor.drain() == 1


def notices(store: Store) -> list[tuple[str, bool]]:
    """The resume notices in the inbox: (event id, processed)."""
    with store.session() as session:
        rows = session.execute(
            select(InboxModel.event_id, InboxModel.processed_at)
            .where(InboxModel.type == RESUMED)
            .order_by(InboxModel.id)
        ).all()
    return [(event_id, processed_at is not None) for event_id, processed_at in rows]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_resume_leaves_a_notice_the_leaders_pump_turns_into_a_run_of_every_domain(
    backend: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "postgres":
        url: str = request.getfixturevalue("postgres_database_url")
    else:
        url = f"sqlite:///{tmp_path / 'state.db'}"
    monkeypatch.setenv("BILLING_DATABASE_URL", url)
    directory = tmp_path / "desired"
    directory.mkdir()
    store = Store.open(url)
    try:
        assert run_resume(directory) == 0
        assert notices(store) == [], "nothing was suspended: no notice"

        with store.session() as session:
            ControllerStateRepository(session).suspend("incident 9", "oncall")
        # `reconcile resume` in another process: its own connection, its own transaction.
        assert run_resume(directory) == 0
        [(notice_id, done)] = notices(store)
        assert not done
        with store.session() as session:
            assert ControllerStateRepository(session).suspension() is None

        queue = Queue()
        resumed: list[str] = []
        leader = InboxPump(
            store=store,
            enqueue=queue.put,
            handles=lambda domain: True,
            poll_seconds=1,
            on_resumed=resumed.append,
        )
        assert leader.drain() == 0, "a follower's pump leaves the notice to the leader"
        leader.set_active(True)
        assert leader.drain() == 1
        assert resumed == [notice_id]
        assert queue.requests == [], "not a Stripe event: never routed as one"
        assert notices(store) == [(notice_id, True)]
        assert leader.drain() == 0
    finally:
        store.close()
