"""Apply groups consecutive steps of one phase into batches it may send concurrently."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pytest

from billing_reconciler.apply import Applier, ApplyError, _batches
from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Action, Plan, Reason, Ref, Step
from billing_reconciler.store import RunMode, RunRepository, Store
from billing_reconciler.stripe_gateway import (
    PermanentStripeError,
    TransientStripeError,
    WriteResult,
)


def _step(key: str, batch: int | None) -> Step:
    return Step(Action.CREATE, Kind.PRODUCT, key, Reason.NEW, batch=batch)


def test_consecutive_steps_of_one_batch_group_and_order_is_kept() -> None:
    steps = [_step("a", 30), _step("b", 30), _step("c", 40), _step("d", 30), _step("e", None)]
    grouped = [[step.key for _, step in batch] for batch in _batches(steps)]
    assert grouped == [["a", "b"], ["c"], ["d"], ["e"]]
    assert [index for batch in _batches(steps) for index, _ in batch] == [0, 1, 2, 3, 4]


def test_steps_without_a_batch_stand_alone() -> None:
    # Plans saved before batches existed run one step at a time, as they were printed.
    steps = [_step("a", None), _step("b", None)]
    assert [[s.key for _, s in batch] for batch in _batches(steps)] == [["a"], ["b"]]


# --- a failed step: what still runs ----------------------------------------------------------


class _Fake:
    """Executors that answer from a table: a key in `refused` is Stripe's 400, in `lost` a
    connection lost after the retries; `scoped`: steps of one org fail alone."""

    def __init__(self, refused: set[str], lost: set[str], *, scoped: bool) -> None:
        self.refused, self.lost, self.sent = refused, lost, []  # type: list[str]
        if scoped:
            self.scope_of = lambda key: "scope/" + key.split("/", 1)[1].split("/")[0]

    def send(self, gateway: object, step: Step, ids: Mapping[str, str]) -> WriteResult | None:
        del gateway, ids
        self.sent.append(step.key)
        if step.key in self.refused:
            raise PermanentStripeError("No such thing", http_status=400, request_id="req_1")
        if step.key in self.lost:
            raise TransientStripeError("cannot reach Stripe")
        return WriteResult(stripe_id="id_" + step.key, request_id=None, replayed=False)

    def record(self, session: object, done: object) -> None:
        del session, done


def _apply(
    tmp_path: Path, steps: list[Step], fake: _Fake, concurrency: int = 1
) -> tuple[list[str], ApplyError | None]:
    store = Store.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        with store.session() as session:
            run_id = RunRepository(session).start(domain="test", mode=RunMode.APPLY, actor="test")
        applier = Applier(
            gateway=cast(Any, None),
            store=store,
            run_id=run_id,
            desired_fields={},
            executors={"thing": cast(Any, fake)},
            concurrency=concurrency,
        )
        plan = Plan(
            steps=tuple(steps),
            installation_id="test",
            desired_revision="r",
            fingerprint="f",
            created_at=0,
        )
        try:
            done = [o.step.key for o in applier.apply(plan)]
        except ApplyError as error:
            return [k for k in fake.sent if k not in fake.refused | fake.lost], error
        return done, None
    finally:
        store.close()


def _thing(key: str, batch: int, **extra: Any) -> Step:
    return Step(Action.CREATE, "thing", key, Reason.NEW, batch=batch, idempotency_key=key, **extra)


PHASED = [
    _thing("thing/a", 1),
    _thing("thing/b", 1),
    _thing("thing/c", 1),
    _thing("thing/a/child", 2),
    _thing("thing/b/child", 2),
    _thing("thing/c/ref", 2, params={"of": Ref("thing/b")}),
]


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_refused_scoped_step_holds_back_only_its_scope(tmp_path: Path, concurrency: int) -> None:
    fake = _Fake({"thing/b"}, set(), scoped=True)
    done, error = _apply(tmp_path, PHASED, fake, concurrency)
    assert error is not None
    assert error.step.key == "thing/b"
    assert [s.key for s in error.skipped] == ["thing/b/child", "thing/c/ref"]
    assert sorted(done) == ["thing/a", "thing/a/child", "thing/c"]
    assert "thing/b" in str(error)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_refused_unscoped_step_stops_after_its_batch(tmp_path: Path, concurrency: int) -> None:
    # The catalog's: its phases depend on each other (a product's prices on the product).
    fake = _Fake({"thing/b"}, set(), scoped=False)
    done, error = _apply(tmp_path, PHASED, fake, concurrency)
    assert error is not None
    assert error.step.key == "thing/b"
    assert sorted(done) == ["thing/a", "thing/c"]


def test_a_failure_of_unknown_outcome_stops_at_once(tmp_path: Path) -> None:
    fake = _Fake(set(), {"thing/a"}, scoped=True)
    done, error = _apply(tmp_path, PHASED, fake)
    assert error is not None
    assert error.step.key == "thing/a"
    assert done == []


def test_failures_are_all_named(tmp_path: Path) -> None:
    fake = _Fake({"thing/a", "thing/c"}, set(), scoped=True)
    done, error = _apply(tmp_path, PHASED, fake)
    assert error is not None
    assert [f.step.key for f in error.failures] == ["thing/a", "thing/c"]
    assert sorted(done) == ["thing/b", "thing/b/child"]
    assert "1 more failed (thing/c)" in str(error)
