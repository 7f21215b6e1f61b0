"""Apply groups consecutive steps of one phase into batches it may send concurrently."""

from __future__ import annotations

from billing_reconciler.apply import _batches
from billing_reconciler.model import Kind
from billing_reconciler.planning.plan import Action, Reason, Step


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
