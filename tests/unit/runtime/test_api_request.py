"""`runtime.service.api_request`: the API's request as queue entries and a ticket to wait on
(DESIGN §19), driven on the test's thread (`run_pending`, a fake clock, `wait(0)`)."""

from __future__ import annotations

import pytest

from billing_reconciler.api.pending import ReconcileTicket
from billing_reconciler.registry import by_name
from billing_reconciler.runtime.domains import INTERRUPTED, DomainRunResult
from billing_reconciler.runtime.events import ReconcileRequest
from billing_reconciler.runtime.queue import (
    Backoff,
    FollowUp,
    Outcome,
    PermanentError,
    TransientError,
    WorkQueue,
)
from billing_reconciler.runtime.service import api_request, run_failure, run_outcome
from billing_reconciler.store import RunMode
from billing_reconciler.stripe_gateway import PermanentStripeError, TransientStripeError
from tests.unit.runtime.test_queue import FakeClock, Recorder


def _request(queue: WorkQueue, *, writing: bool = True, stopping: bool = False) -> ReconcileTicket:
    return api_request(
        "customer",
        frozenset({"acme"}),
        "test",
        registrations=by_name(),
        put=queue.put,
        writing=lambda: writing,
        stopping=lambda: stopping,
    )


def test_only_the_domains_whose_keys_match_are_queued_and_the_ticket_waits_for_them() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    ticket = _request(queue)
    assert ticket.wait(0).state == "pending"
    # Every domain scoped by customer (customers, subscriptions, credits), never the catalog.
    assert queue.run_pending() == 3
    assert handler.calls == [
        ReconcileRequest("customers", frozenset({"customer/acme"}), "test"),
        ReconcileRequest("subscriptions", frozenset({"customer/acme"}), "test"),
        ReconcileRequest("credits", frozenset({"customer/acme"}), "test"),
    ]
    verdict = ticket.wait(0)
    assert (verdict.state, verdict.request_id) == ("done", ticket.request_id)


def test_the_domains_run_one_after_the_other_in_apply_order() -> None:
    # The subscriptions run reads the customer the customers run creates: it is queued only
    # when that run has ended, never beside it (two workers would run them at once).
    seen: list[tuple[str, int]] = []

    def handler(request: ReconcileRequest) -> None:
        seen.append((request.domain, queue.depth))

    queue = WorkQueue(handler, workers=2, clock=FakeClock())
    ticket = _request(queue)
    assert queue.snapshot().waiting == (("customers", frozenset({"customer/acme"})),)
    assert queue.run_pending() == 3
    # While customers ran nothing else waited; subscriptions came after it, credits last.
    assert seen == [("customers", 0), ("subscriptions", 0), ("credits", 0)]
    assert ticket.wait(0).state == "done"


def test_a_follower_or_a_stopping_replica_defers_at_once_but_still_plans() -> None:
    handler = Recorder()
    queue = WorkQueue(handler, clock=FakeClock())
    follower = _request(queue, writing=False)
    assert (follower.wait(0).state, follower.wait(0).reason) == ("deferred", "not_leader")
    stopping = _request(queue, writing=False, stopping=True)
    assert stopping.wait(0).reason == "stopping"
    # The follower's dry runs (one per customer-scoped domain); the stopping one coalesced.
    assert queue.run_pending() == 3


def test_a_permanent_failure_is_failed_and_a_retrying_one_unavailable() -> None:
    clock = FakeClock()
    refused = PermanentStripeError("No such tax id type", code="invalid", param="tax_id_data")
    queue = WorkQueue(Recorder(refused), clock=clock)
    ticket = _request(queue)
    queue.run_pending()
    verdict = ticket.wait(0)
    assert verdict.state == "failed"
    assert verdict.failure is not None
    assert verdict.failure.stripe_param == "tax_id_data"

    queue = WorkQueue(
        Recorder(TransientStripeError("down"), None), clock=clock, backoff=Backoff(initial=1)
    )
    ticket = _request(queue)
    queue.run_pending()
    assert ticket.wait(0).state == "unavailable"
    clock.advance(1)
    queue.run_pending()
    assert ticket.wait(0).state == "done"  # the retry succeeded within the wait


def test_a_queue_stopping_before_the_run_defers_the_ticket() -> None:
    queue = WorkQueue(Recorder(), clock=FakeClock())
    ticket = _request(queue)
    queue.stop(timeout=1)
    assert (ticket.wait(0).state, ticket.wait(0).reason) == ("deferred", "stopping")


def test_what_a_failure_may_tell_the_caller() -> None:
    assert run_failure(PermanentError("the plan was refused: guard")).message == (
        "the plan was refused: guard"
    )
    assert run_failure(TransientError("apply did not converge")).retrying
    secret = run_failure(RuntimeError("postgresql://u:pw@db"))
    assert secret.message == "unexpected RuntimeError"
    try:
        try:
            raise PermanentStripeError("Invalid email", code="email_invalid", http_status=400)
        except PermanentStripeError as cause:
            raise RuntimeError("step 1 failed") from cause
    except RuntimeError as wrapped:
        failure = run_failure(wrapped)
    assert (failure.retrying, failure.stripe_code, failure.http_status) == (
        False,
        "email_invalid",
        400,
    )
    assert failure.message.startswith("Invalid email")


@pytest.mark.parametrize(
    ("mode", "result", "steps", "applied", "outcome"),
    [
        # suspended (or a follower): the plan had work, nothing was written
        (RunMode.DRY_RUN, "changes_pending", 2, 0, Outcome.NOT_APPLIED),
        # leadership lost between steps
        (RunMode.APPLY, INTERRUPTED, 3, 1, Outcome.NOT_APPLIED),
        # nothing to do, or all of it written
        (RunMode.DRY_RUN, "no_changes", 0, 0, None),
        (RunMode.APPLY, "applied", 2, 2, None),
    ],
)
def test_a_run_that_wrote_nothing_it_planned_is_not_applied(
    mode: RunMode, result: str, steps: int, applied: int, outcome: Outcome | None
) -> None:
    run = DomainRunResult(
        domain="customers",
        run_id="r1",
        result=result,
        mode=mode,
        whole_domain=False,
        steps=steps,
        applied=applied,
    )
    assert run_outcome(run) is outcome


def test_a_run_that_found_new_input_hands_the_queue_its_follow_up() -> None:
    follow_up = ReconcileRequest("subscriptions", frozenset({"customer/o2"}), "new input")
    run = DomainRunResult(
        domain="subscriptions",
        run_id="r1",
        result="applied",
        mode=RunMode.APPLY,
        whole_domain=True,
        steps=3,
        applied=3,
        follow_up=follow_up,
    )
    assert run_outcome(run) == FollowUp(follow_up)
