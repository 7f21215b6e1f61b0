"""`reconcile.usage.aggregate: true`: one meter event per (customer, `sum` meter, flush
window), its identifier derived from that triple and a part number; other meters still one
event per usage; a window is sent only once closed; a resend after a crash reuses the stored
aggregate (issue 12 item 2)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from billing_reconciler.apply import ApplyError
from billing_reconciler.domains.credit_meters import (
    GRACE_SECONDS,
    aggregate_identifier,
)
from billing_reconciler.registry import CREDITS
from billing_reconciler.store import AccountRepository
from billing_reconciler.stripe_gateway import NO_RETRY
from tests.integration.credits.conftest import COUNT, SUM, MeterWorld

WINDOW = 60


def _window(at: float) -> int:
    return int(at) // WINDOW * WINDOW


def test_one_event_per_customer_sum_meter_and_closed_window(meters: MeterWorld) -> None:
    meters.configure(aggregate=True, window="1m")
    meters.open(["acme", "globex"])
    base = _window(time.time()) - 10 * WINDOW
    for org in ("acme", "globex"):
        for w in range(3):  # three closed windows, 100 usages each
            meters.usages(org, 100, value=2, at=base + w * WINDOW + 5, prefix=f"w{w}")
        meters.usages(org, 4, event_name=COUNT, at=base + 1, prefix="login")
    meters.send()
    events = meters.events()
    sums = sorted((e for e in events if e["event_name"] == SUM), key=lambda e: e["identifier"])
    assert len(sums) == 2 * 3
    assert len([e for e in events if e["event_name"] == COUNT]) == 2 * 4  # one per usage
    expected = {
        aggregate_identifier(org, SUM, base + w * WINDOW, 0): (org, base + w * WINDOW)
        for org in ("acme", "globex")
        for w in range(3)
    }
    assert {e["identifier"] for e in sums} == set(expected)
    for event in sums:
        org, start = expected[event["identifier"]]
        assert event["timestamp"] == start + 5  # its rows' latest event time (T1 F7)
        assert event["payload"] == {"customer": meters.customer(org), "requests": "200"}
    assert meters.depth() == (0, 0)
    assert meters.plan().steps == ()

    # A usage committed late for a closed window: a part 1 of it.
    late = meters.usages("acme", 3, value=5, at=base + 7, prefix="late")
    meters.send()
    part = aggregate_identifier("acme", SUM, base, 1)
    found = {e["identifier"]: e for e in meters.events()}
    assert found[part]["payload"]["requests"] == "15"
    assert not set(late) & set(found)
    assert len(meters.events()) == 6 + 8 + 1


def test_an_open_window_waits_until_it_is_closed(meters: MeterWorld) -> None:
    meters.configure(aggregate=True, window="1m")
    meters.open(["acme"])
    now = time.time()
    meters.usages("acme", 10, at=now)
    plan = meters.plan()
    assert plan.steps == ()
    assert plan.info[0].startswith("meter outbox: 10 meter event(s) unsent")
    closed = _window(now) + WINDOW + GRACE_SECONDS
    later = meters.send(clock=lambda: closed)
    assert len(later.steps) == 1
    (event,) = meters.events()
    assert event["identifier"] == aggregate_identifier("acme", SUM, _window(now), 0)
    assert event["payload"]["requests"] == "10"


def test_a_crash_while_sending_aggregates_resends_the_stored_ones(meters: MeterWorld) -> None:
    meters.configure(aggregate=True, window="1m", concurrency=1)
    meters.open(["acme"])
    base = _window(time.time()) - 10 * WINDOW
    for w in range(4):
        meters.usages("acme", 10, at=base + w * WINDOW, prefix=f"w{w}")
    meters.emulator.control.add_fault(
        method="POST", path_prefix="/v1/billing/meter_events", nth=2, kind="drop_after_commit"
    )
    crashing = meters.controller(CREDITS, retry=NO_RETRY)
    with pytest.raises(ApplyError):
        crashing.apply(crashing.plan())
    assert len(meters.events()) == 2  # the second was committed, its answer lost
    # More usage for an already formed window arrives meanwhile: a new part, not a new sum.
    meters.usages("acme", 1, value=9, at=base + 3, prefix="late")
    meters.send()
    events = {e["identifier"]: e["payload"]["requests"] for e in meters.events()}
    assert events == {
        **{aggregate_identifier("acme", SUM, base + w * WINDOW, 0): "10" for w in range(4)},
        aggregate_identifier("acme", SUM, base, 1): "9",
    }
    replayed = [r for r in meters.sends() if r.replayed]
    assert len(replayed) == 1  # the lost answer, replayed for its key


def test_an_aggregate_near_stripes_35_days_is_stamped_inside_them(meters: MeterWorld) -> None:
    """Tester T1 F7: aggregates were stamped at their window's start and sent once it closed,
    so usages the API had accepted (within 35 days when recorded) were refused by Stripe, a
    whole window at a time. An aggregate is stamped with its latest event time, or at the
    oldest time Stripe takes (less a margin) when that delay alone pushed it out."""
    meters.configure(aggregate=True, window="1m")
    meters.open(["acme"])
    limit = time.time() - 35 * 86400
    edge = meters.usages("acme", 3, value=2, at=limit - 30, prefix="edge")  # accepted 30 s ago
    meters.usages("acme", 1, value=9, at=limit - 86400, prefix="old")  # a day out: refused
    plan = meters.send()
    assert any("refused by Stripe" in w for w in meters.plan().warnings), plan
    (sent,) = meters.events()
    assert sent["payload"]["requests"] == "6"
    assert limit + 60 <= sent["timestamp"] <= time.time() - 35 * 86400 + 300
    assert sent["identifier"] == aggregate_identifier("acme", SUM, _window(limit - 30), 0)
    assert meters.depth() == (0, 1)
    assert len(edge) == 3


def test_a_window_summing_past_the_store_limit_is_split_into_parts(meters: MeterWorld) -> None:
    """Tester T2 G6: 1,030 usages of 2^53 in one window sum past 2^63-1; they are formed
    into several parts (each within it), every row in exactly one, and another customer's
    window is still sent in the same pass."""
    meters.configure(aggregate=True, window="1m")
    meters.open(["acme", "globex"])
    base = _window(time.time()) - 10 * WINDOW
    big = 2**53
    ids = meters.usages("acme", 1030, value=big, at=base + 5, prefix="big")
    meters.usages("globex", 3, value=3, at=base + 5, prefix="small")
    meters.send()
    sums = [e for e in meters.events() if e["event_name"] == SUM]
    mine = {e["identifier"]: int(e["payload"]["requests"]) for e in sums}
    globex = aggregate_identifier("globex", SUM, base, 0)
    assert mine.pop(globex) == 9
    parts = [aggregate_identifier("acme", SUM, base, p) for p in range(len(mine))]
    assert sorted(mine) == sorted(parts)
    assert len(parts) >= 2
    assert all(v <= 2**63 - 1 for v in mine.values())
    assert sum(mine.values()) == 1030 * big
    with meters.store.session() as session:
        assigned = session.execute(
            text("SELECT aggregate_id, count(*) FROM meter_outbox GROUP BY aggregate_id")
        ).all()
    counts = dict(assigned)
    assert None not in counts
    assert sum(counts[p] for p in parts) == len(ids)
    assert meters.depth() == (0, 0)


def test_an_org_with_a_new_account_forms_its_next_part_of_a_window(meters: MeterWorld) -> None:
    """Tester T3-6: the identifier is the org's, the part numbers were the account's, so an
    org whose account was replaced (disabled, a new one opened) could not form a window its
    earlier account had formed: the same identifier, a primary-key violation on every pass,
    its usage never sent. The new account's aggregate is that window's next part, sent to
    its own customer."""
    meters.configure(aggregate=True, window="1m")
    meters.open(["acme"])
    base = _window(time.time() - 600)
    first_customer = meters.customer("acme")
    meters.usages("acme", 2, value=3, at=base + 5, prefix="old")
    meters.send()
    with meters.store.session() as session:
        accounts = AccountRepository(session)
        old = accounts.active_for_org("acme")
        assert old is not None
        accounts.set_state(old.id, "disabled")
    meters.open(["acme"])  # a new account, and its customer
    assert meters.customer("acme") != first_customer
    meters.usages("acme", 2, value=7, at=base + 9, prefix="new")
    meters.send()
    found = {e["identifier"]: e for e in meters.events()}
    first = found[aggregate_identifier("acme", SUM, base, 0)]
    second = found[aggregate_identifier("acme", SUM, base, 1)]
    assert first["payload"] == {"customer": first_customer, "requests": "6"}
    assert second["payload"] == {"customer": meters.customer("acme"), "requests": "14"}
    assert meters.depth() == (0, 0)
