"""The credits domain's I/O: the reader bundles each part's reader (`domains.credits` asks
`part(name)` and hands it to that part's `observe`), and `EXECUTORS` merges each part's.

A part's edge lives in `effects/credit_<part>.py` and gives one `PartEffects` entry in
`PARTS`: its name (the `CreditPart.name` of `domains.credits.CREDIT_PARTS`), how to open its
reader over the gateway and the store, its executors by step kind, and optionally its facts
(numbers read from the store for `reconcile status` and the metrics; `facts` joins them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from billing_reconciler.apply import StepExecutor
from billing_reconciler.effects import credit_meters, credit_overdraft
from billing_reconciler.planning.plan import DomainFact
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import StripeGateway


@dataclass(frozen=True, slots=True)
class PartEffects:
    name: str
    open_reader: Callable[[StripeGateway, Store], Any]
    executors: Mapping[str, StepExecutor]
    # Optional: the part's facts from the store (`reconcile status`, metrics).
    facts: Callable[[Store], Sequence[DomainFact]] | None = None


#: One entry per part of `domains.credits.CREDIT_PARTS`.
PARTS: tuple[PartEffects, ...] = (
    PartEffects(
        credit_meters.PART,
        credit_meters.open_reader,
        credit_meters.EXECUTORS,
        facts=credit_meters.facts,
    ),
    PartEffects(credit_overdraft.PART, credit_overdraft.open_reader, credit_overdraft.EXECUTORS),
)


def facts(store: Store) -> list[DomainFact]:
    """Every part's facts, in part order."""
    return [fact for part in PARTS if part.facts is not None for fact in part.facts(store)]


@dataclass(frozen=True, slots=True)
class CreditsIO:
    """The credits domain's reader (`domains.credits.CreditsReader`)."""

    readers: Mapping[str, Any]

    def part(self, name: str) -> Any:
        return self.readers[name]


def open_reader(gateway: StripeGateway, store: Store) -> CreditsIO:
    return CreditsIO({part.name: part.open_reader(gateway, store) for part in PARTS})


def _merged(parts: tuple[PartEffects, ...]) -> dict[str, StepExecutor]:
    merged: dict[str, StepExecutor] = {}
    for part in parts:
        for kind, executor in part.executors.items():
            if kind in merged:
                raise ValueError(f"step kind {kind!r} has executors in two credit parts")
            merged[kind] = executor
    return merged


EXECUTORS: Mapping[str, StepExecutor] = _merged(PARTS)
