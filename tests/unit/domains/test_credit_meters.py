"""The meter-events part's pure rules (domains.credit_meters) and the credits domain's
composition of parts (domains.credits)."""

from __future__ import annotations

from typing import Any

import pytest

from billing_reconciler.config import BillingConfig
from billing_reconciler.desired.state import DesiredState
from billing_reconciler.domains.base import PlanContext, PlanOptions
from billing_reconciler.domains.credit_meters import (
    FLUSH_SECONDS,
    GRACE_SECONDS,
    METER_KEY_PREFIX,
    FailingMeterEvents,
    MeterKeys,
    MeterPart,
    MetersDesired,
    MetersObserved,
    OutboxAccount,
    PendingAggregates,
    PendingMeterEvents,
    RefusedMeterEvents,
    aggregate_identifier,
    closed_before,
    event_idempotency_key,
    meters_plan,
)
from billing_reconciler.domains.credit_parts import PartPlan
from billing_reconciler.domains.credits import CreditsDomain

NOW = 1_796_000_000
SUM = MeterKeys("customer", "requests", "sum")
COUNT = MeterKeys("stripe_customer_id", "value", "count")
METERS = {"api": SUM, "logins": COUNT}


def _context(now: int = NOW, salt: str = "salt") -> PlanContext:
    state = DesiredState(
        root=".", config=BillingConfig(), features=(), products=(), plans=(), revision="r"
    )
    return PlanContext(
        state=state,
        options=PlanOptions(),
        applied={},
        spent_keys=frozenset(),
        key_salt=salt,
        now=now,
    )


def _pending(org: str, event: str, count: int, *, seq: int, first: int) -> PendingMeterEvents:
    return PendingMeterEvents(f"acc_{org}", org, event, count, seq, NOW - 30, first)


def _account(org: str, customer: str | None = "cus", offline: bool = False) -> OutboxAccount:
    return OutboxAccount(
        f"acc_{org}", org, None if customer is None else f"{customer}_{org}", offline
    )


def _observed(*pending: PendingMeterEvents, **more: Any) -> MetersObserved:
    accounts = more.pop("accounts", None) or {p.account_id: _account(p.org_id) for p in pending}
    more.setdefault("meters", METERS)
    return MetersObserved(pending=pending, accounts=accounts, **more)


def test_one_step_per_account_up_to_its_highest_seq_with_the_meters_keys() -> None:
    plan = meters_plan(
        MetersDesired(),
        _observed(
            _pending("b", "api", 3, seq=30, first=NOW - 50),
            _pending("a", "api", 2, seq=12, first=NOW - 50),
            _pending("a", "logins", 1, seq=14, first=NOW - 50),
        ),
        _context(),
    )
    assert [s.key for s in plan.steps] == [f"{METER_KEY_PREFIX}/a", f"{METER_KEY_PREFIX}/b"]
    params = plan.steps[0].params
    assert params["up_to_seq"] == 14
    assert params["events"] == 3
    assert params["customer"] == "cus_a"
    assert params["single"] == ["api", "logins"]
    assert params["meters"]["api"] == {"customer_key": "customer", "value_key": "requests"}
    assert "aggregate" not in params
    # Independent accounts: one batch; keys from the salt and what is sent.
    assert {s.batch for s in plan.steps} == {0}
    again = meters_plan(
        MetersDesired(),
        _observed(
            _pending("a", "api", 2, seq=12, first=NOW - 50),
            _pending("a", "logins", 1, seq=14, first=NOW - 50),
        ),
        _context(),
    )
    assert again.steps[0].idempotency_key == plan.steps[0].idempotency_key
    salted = meters_plan(
        MetersDesired(),
        _observed(
            _pending("a", "api", 2, seq=12, first=NOW - 50),
            _pending("a", "logins", 1, seq=14, first=NOW - 50),
        ),
        _context(salt="other"),
    )
    assert salted.steps[0].params["key_prefix"] != params["key_prefix"]


def test_an_account_without_a_customer_waits_with_a_notice() -> None:
    rows = (_pending("off", "api", 4, seq=5, first=NOW - 50),)
    offline = {"acc_off": _account("off", customer=None, offline=True)}
    plan = meters_plan(MetersDesired(), _observed(*rows, accounts=offline), _context())
    assert plan.steps == ()
    waits = {n.key: n.message for n in plan.notices}
    assert "4 meter event(s) of an offline account" in waits[f"{METER_KEY_PREFIX}/off"]
    assert plan.info == ("meter outbox: 4 meter event(s) unsent, the oldest 30s old",)
    pending = {"acc_off": _account("off", customer=None)}
    plan = meters_plan(MetersDesired(), _observed(*rows, accounts=pending), _context())
    assert "without a Stripe customer yet" in plan.notices[0].message


def test_an_event_no_meter_of_the_catalog_has_waits() -> None:
    plan = meters_plan(
        MetersDesired(),
        _observed(
            _pending("a", "gone", 2, seq=3, first=NOW - 50),
            _pending("a", "api", 1, seq=4, first=NOW - 50),
        ),
        _context(),
    )
    (step,) = plan.steps
    assert step.params["single"] == ["api"]
    assert step.params["events"] == 1
    assert "(gone)" in plan.notices[0].message
    only_unknown = meters_plan(
        MetersDesired(),
        _observed(_pending("a", "gone", 2, seq=3, first=NOW - 50)),
        _context(),
    )
    assert only_unknown.steps == ()


def test_aggregation_sends_sum_meters_only_once_a_window_is_closed() -> None:
    desired = MetersDesired(aggregate=True, flush_window=60)
    window = NOW // 60 * 60
    cutoff = closed_before(NOW, 60)
    assert cutoff == (NOW - GRACE_SECONDS) // 60 * 60
    open_only = meters_plan(
        desired, _observed(_pending("a", "api", 9, seq=9, first=window)), _context()
    )
    assert open_only.steps == ()
    assert open_only.info[0].startswith("meter outbox: 9 ")  # still counted as unsent
    closed = meters_plan(
        desired,
        _observed(
            _pending("a", "api", 9, seq=9, first=window - 120),
            _pending("a", "logins", 2, seq=11, first=window),
        ),
        _context(),
    )
    (step,) = closed.steps
    assert step.params["single"] == ["logins"]  # count meters: one event per usage
    assert step.params["events"] == 2
    assert step.params["aggregate"] == {
        "meters": ["api"],
        "window": 60,
        "closed_before": cutoff,
        "usages": 9,
        "formed": 0,
    }
    # Aggregates formed but unsent (a crash after forming) are sent on their own.
    formed = meters_plan(
        desired,
        MetersObserved(
            aggregates=(PendingAggregates("acc_a", "a", 3, NOW - 10),),
            accounts={"acc_a": _account("a")},
            meters=METERS,
        ),
        _context(),
    )
    assert formed.steps[0].params["aggregate"]["formed"] == 3
    assert "api" in formed.steps[0].params["meters"]


def test_refused_events_are_warned_about() -> None:
    plan = meters_plan(
        MetersDesired(),
        MetersObserved(refused=(RefusedMeterEvents("acc_a", "a", 2, "too old (param=timestamp)"),)),
        _context(),
    )
    assert plan.warnings == (
        "2 meter event(s) of org a were refused by Stripe and are kept unsent in the outbox "
        "(last: too old (param=timestamp))",
    )
    assert plan.steps == ()


def test_the_meters_sent_are_the_observed_applied_catalogs_not_desireds() -> None:
    """Tester T2 G5: the usage API accepts an event by the applied catalog; the sender takes
    its meters from the same place (the part observes them), so what was accepted is sent."""
    context = _context()
    desired = MeterPart().desired(context.state, context)  # desired/ has no meters at all
    plan = meters_plan(
        desired,
        _observed(_pending("a", "logins", 2, seq=3, first=NOW - 50), meters={"logins": COUNT}),
        context,
    )
    (step,) = plan.steps
    assert step.params["meters"] == {
        "logins": {"customer_key": "stripe_customer_id", "value_key": "value"}
    }
    gone = meters_plan(
        desired,
        _observed(_pending("a", "logins", 2, seq=3, first=NOW - 50), meters={"api": SUM}),
        context,
    )
    assert gone.steps == ()
    (notice,) = gone.notices
    assert "no meter of the applied catalog has (logins)" in notice.message


def test_events_that_keep_failing_are_warned_about_without_secrets() -> None:
    """Tester T2 G4: a pending event whose send failed again and again (5xx, timeout) was
    invisible; each account's are a warning naming the attempts and the last error."""
    failing = FailingMeterEvents("acc_a", "a", 1, 7, "Stripe is down\n (status=503)")
    plan = meters_plan(
        MetersDesired(),
        _observed(_pending("a", "api", 2, seq=3, first=NOW - 50), failing=(failing,)),
        _context(),
    )
    assert plan.warnings == (
        "1 meter event(s) of org a keep failing (attempts 7, last error: Stripe is down "
        "(status=503)); retried each pass under the same identifier, they hold back the org's "
        "later meter events",
    )
    assert len(plan.steps) == 1  # still retried
    assert "meter events failing: 1" in plan.facts
    # Its step goes last: a failure of unknown outcome stops the apply's later steps, so it
    # must not starve the accounts after it in org order.
    ordered = meters_plan(
        MetersDesired(),
        _observed(
            _pending("a", "api", 2, seq=3, first=NOW - 50),
            _pending("b", "api", 2, seq=5, first=NOW - 50),
            _pending("c", "api", 2, seq=7, first=NOW - 50),
            failing=(failing,),
        ),
        _context(),
    )
    assert [s.key.rsplit("/", 1)[1] for s in ordered.steps] == ["b", "c", "a"]
    long = FailingMeterEvents("acc_a", "a", 1, 3, "x" * 5000)
    (warning,) = meters_plan(MetersDesired(), _observed(failing=(long,)), _context()).warnings
    assert len(warning) < 500


def test_identifiers_and_keys_are_derived_and_fit_stripe() -> None:
    ident = aggregate_identifier("o" * 64, "e" * 100, 1_796_000_000, 12)
    assert len(ident) <= 100
    assert ident == aggregate_identifier("o" * 64, "e" * 100, 1_796_000_000, 12)
    assert ident != aggregate_identifier("o" * 64, "e" * 100, 1_796_000_000, 13)
    assert ident != aggregate_identifier("o" * 64, "e" * 100, 1_796_000_060, 12)
    assert event_idempotency_key("p", "u1") == event_idempotency_key("p", "u1")
    assert event_idempotency_key("p", "u1") != event_idempotency_key("q", "u1")


def test_the_part_scopes_its_keys_and_refreshes_every_10_seconds() -> None:
    part = MeterPart()
    assert part.scope_of(f"{METER_KEY_PREFIX}/acme") == "customer/acme"
    assert part.scope_of("customer/acme") is None
    assert part.scope_of(METER_KEY_PREFIX) is None
    assert part.refresh_seconds(_context().state) == FLUSH_SECONDS == 10


class _Part:
    def __init__(self, name: str, kinds: frozenset[str], refresh: int) -> None:
        self.name = name
        self.kinds = kinds
        self.event_routes = ()
        self._refresh = refresh

    def refresh_seconds(self, state: DesiredState) -> int:
        return self._refresh

    def desired(self, state: DesiredState, context: PlanContext) -> str:
        return f"{self.name}-desired"

    def observe(self, reader: Any, desired: Any, context: PlanContext) -> Any:
        return (reader, desired)

    def plan(self, desired: Any, observed: Any, context: PlanContext) -> PartPlan:
        from billing_reconciler.planning.plan import Action, Notice, Reason, Step

        return PartPlan(
            steps=(Step(Action.CREATE, next(iter(self.kinds)), f"{self.name}/x", Reason.NEW),),
            notices=(Notice(self.name, self.name, None, str(observed)),),
            warnings=(f"{self.name} warned",),
            fingerprint=self.name,
        )

    def scope_of(self, key: str) -> str | None:
        return f"customer/{key}" if key.startswith(f"{self.name}/") else None


def test_the_domain_is_the_union_of_its_parts_in_order() -> None:
    class Reader:
        def part(self, name: str) -> str:
            return f"{name}-reader"

    one, two = _Part("one", frozenset({"k1"}), 0), _Part("two", frozenset({"k2"}), 30)
    domain = CreditsDomain((one, two))
    assert domain.kinds == frozenset({"k1", "k2"})
    context = _context()
    assert domain.refresh_seconds(context.state) == 30
    desired = domain.desired(context.state, context)
    observed = domain.observe(Reader(), desired, context)
    plan = domain.plan(desired, observed, context)
    assert [s.key for s in plan.steps] == ["one/x", "two/x"]
    assert [n.message for n in plan.notices] == [
        "('one-reader', 'one-desired')",
        "('two-reader', 'two-desired')",
    ]
    assert plan.warnings == ("one warned", "two warned")
    assert domain.scope_of("two/x") == "customer/two/x"
    assert domain.scope_of("three/x") is None
    # The request key of one customer is its own scope (the API's targeted requests).
    assert domain.scope_of("customer/acme") == "customer/acme"
    with pytest.raises(ValueError, match="another part plans"):
        CreditsDomain((one, _Part("dup", frozenset({"k1"}), 0)))
