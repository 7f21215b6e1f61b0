"""Plans: round trips, change detection, case-insensitive identity, archive and revival."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from billing_reconciler.store import PlanRepository, PlanRow, PlanState, Store
from tests.integration.store.conftest import FakeClock

TEAM = PlanRow(
    name="Team_Monthly",
    title="Team",
    description="For teams",
    interval="month",
    trial_days=14,
    on_start_credits=5_000_000_000,  # beyond 32 bits: money and credits are BIGINT
    products=["Team_Seat", "credits"],
    metadata={"tier": "b", "rank": 2, "nested": {"z": 1, "a": [1, 2]}},
)


def test_round_trip_lower_cases_identities(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        assert PlanRepository(session, clock=clock).upsert(TEAM) is True
    with store.session() as session:
        (plan,) = PlanRepository(session).list_active()
    assert plan.name == "team_monthly"
    assert plan.products == ("team_seat", "credits")
    assert plan.on_start_credits == 5_000_000_000
    assert plan.metadata == {"tier": "b", "rank": 2, "nested": {"z": 1, "a": [1, 2]}}
    assert plan.state is PlanState.ACTIVE
    assert plan.created_at == plan.updated_at == clock.now
    assert plan.content_hash == TEAM.content_hash
    assert plan.row.normalized() == TEAM.normalized()


def test_upsert_reports_only_real_changes(store: Store, clock: FakeClock) -> None:
    with store.session() as session:
        plans = PlanRepository(session, clock=clock)
        assert plans.upsert(TEAM) is True
        clock.advance(timedelta(minutes=1))
        assert plans.upsert(TEAM) is False
        # Same plan spelled differently: identity and product names are case-insensitive.
        assert plans.upsert(replace(TEAM, name="TEAM_MONTHLY")) is False
        assert plans.upsert(replace(TEAM, title="Team plan")) is True
        plan = plans.get("team_monthly")
    assert plan is not None
    assert plan.title == "Team plan"
    assert plan.updated_at == clock.now
    assert plan.created_at == clock.now - timedelta(minutes=1)


def test_archive_hides_a_plan_and_upsert_revives_it(store: Store) -> None:
    with store.session() as session:
        plans = PlanRepository(session)
        plans.upsert(TEAM)
        plans.upsert(PlanRow(name="free", title="Free"))
        assert plans.archive("TEAM_monthly") is True
        assert plans.archive("team_monthly") is False
        assert plans.archive("missing") is False
        assert [plan.name for plan in plans.list_active()] == ["free"]
        assert [(p.name, p.state) for p in plans.list_all()] == [
            ("free", PlanState.ACTIVE),
            ("team_monthly", PlanState.ARCHIVED),
        ]
        assert plans.upsert(TEAM) is True
        assert [plan.name for plan in plans.list_active()] == ["free", "team_monthly"]


def test_metadata_is_stored_as_canonical_json(store: Store) -> None:
    with store.session() as session:
        PlanRepository(session).upsert(PlanRow(name="p", title="P", metadata={"b": 1, "a": 2}))
    with store.engine.connect() as connection:
        stored = connection.exec_driver_sql("SELECT metadata FROM plans").scalar_one()
    # SQLite keeps our text; PostgreSQL's JSONB hands back a parsed value.
    assert stored in ('{"a":2,"b":1}', {"a": 2, "b": 1})
