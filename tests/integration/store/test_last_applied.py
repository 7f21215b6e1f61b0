"""Last-applied state: round trip, replace, delete, and installations kept apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from billing_reconciler.store import LastApplied, LastAppliedRepository, Store

APPLIED_AT = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def _entry(installation: str, key: str, **changes: object) -> LastApplied:
    values: dict[str, object] = {
        "installation_id": installation,
        "object_key": key,
        "kind": key.split("/", 1)[0],
        "stripe_id": "price_123",
        "fields": {"unit_amount": 1500, "currency": "usd", "metadata": {"b": "2", "a": "1"}},
        "content_hash": "h1",
        "revision": "abc123",
        "applied_at": APPLIED_AT,
    }
    values.update(changes)
    return LastApplied(**values)  # type: ignore[arg-type]


def test_put_then_read_back(store: Store) -> None:
    entry = _entry("prod", "price/team_seat/monthly")
    with store.session() as session:
        LastAppliedRepository(session).put(entry)
    with store.session() as session:
        assert LastAppliedRepository(session).for_installation("prod") == {entry.object_key: entry}


def test_put_replaces_and_delete_forgets(store: Store) -> None:
    first = _entry("prod", "product/team_seat")
    # Another zone in: stored and returned as the same instant in UTC.
    later = datetime(2025, 3, 4, 7, 6, 7, 890123, tzinfo=timezone(timedelta(hours=2)))
    second = _entry("prod", "product/team_seat", stripe_id="prod_9", applied_at=later)
    with store.session() as session:
        repository = LastAppliedRepository(session)
        repository.put(first)
        assert repository.get("prod", "product/team_seat") == first
        repository.put(second)
        stored = repository.get("prod", "product/team_seat")
        assert stored is not None
        assert stored.stripe_id == "prod_9"
        assert stored.applied_at == later
        assert stored.applied_at.tzinfo is UTC
        assert repository.delete("prod", "product/team_seat") is True
        assert repository.delete("prod", "product/team_seat") is False
        assert repository.for_installation("prod") == {}


def test_installations_never_see_each_other(store: Store) -> None:
    with store.session() as session:
        repository = LastAppliedRepository(session)
        repository.put(_entry("blue", "price/a/monthly"))
        repository.put(_entry("green", "price/a/monthly", stripe_id="price_green"))
        repository.put(_entry("green", "price/b/monthly"))
        assert set(repository.for_installation("blue")) == {"price/a/monthly"}
        green = repository.for_installation("green")
        assert set(green) == {"price/a/monthly", "price/b/monthly"}
        assert green["price/a/monthly"].stripe_id == "price_green"
        repository.delete("green", "price/a/monthly")
        assert repository.get("blue", "price/a/monthly") is not None
