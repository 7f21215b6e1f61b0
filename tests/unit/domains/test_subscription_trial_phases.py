"""A schedule written over a running trial keeps it in the current phase (DESIGN §16): phases
are declarative, so a current phase without the trial would make Stripe end it at once and
bill. An immediate change ("now") ends the trial with the phase."""

from __future__ import annotations

from billing_reconciler.domains.subscription_rules import SCHEDULE_STEP as SCHEDULE
from billing_reconciler.domains.subscription_types import CancelRequest
from billing_reconciler.model_subscriptions import PendingChange

from .test_subscription_rules import PERIOD_END, _bundle, _intent, _only, _plan, _sub


def test_a_cancel_at_the_period_end_during_a_trial_keeps_the_trial() -> None:
    trialing = _sub(status="trialing", trial_end=PERIOD_END)
    step = _only(_plan(_bundle(subs=(trialing,), intent=_intent(cancel=CancelRequest(False)))))
    [phase] = step.params["phases"]
    assert (phase["end_date"], phase["trial_end"]) == (PERIOD_END, PERIOD_END)
    assert step.params["end_behavior"] == "cancel"


def test_a_change_at_the_period_end_during_a_trial_keeps_the_trial_until_then() -> None:
    trialing = _sub(status="trialing", trial_end=PERIOD_END)
    intent = _intent(pending_change=PendingChange("team_yearly", PERIOD_END))
    first, second = _only(_plan(_bundle(subs=(trialing,), intent=intent))).params["phases"]
    assert first["trial_end"] == PERIOD_END
    assert "trial_end" not in second


def test_no_trial_is_written_for_an_active_subscription_or_an_immediate_change() -> None:
    active = _sub()
    step = _only(_plan(_bundle(subs=(active,), intent=_intent(cancel=CancelRequest(False)))))
    assert "trial_end" not in step.params["phases"][0]
    trialing = _sub(status="trialing", trial_end=PERIOD_END)
    now = _intent(pending_change=PendingChange("team_yearly", None, immediate=True))
    [step] = [s for s in _plan(_bundle(subs=(trialing,), intent=now)).steps if s.kind == SCHEDULE]
    first, _ = step.params["phases"]
    assert first["end_date"] == "now"
    assert "trial_end" not in first
