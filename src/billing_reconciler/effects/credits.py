"""The credits domain's I/O: the reader bundles each part's reader (`domains.credits` asks
`part(name)` and hands it to that part's `observe`), and `EXECUTORS` merges each part's.

A part's edge lives in `effects/credit_<part>.py` and gives one `PartEffects` entry in
`PARTS`: its name (the `CreditPart.name` of `domains.credits.CREDIT_PARTS`), how to open its
reader over the gateway and the store, and its executors by step kind.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from billing_reconciler.apply import StepExecutor
from billing_reconciler.effects import credit_meters, credit_overdraft
from billing_reconciler.store import Store
from billing_reconciler.stripe_gateway import StripeGateway


@dataclass(frozen=True, slots=True)
class PartEffects:
    name: str
    open_reader: Callable[[StripeGateway, Store], Any]
    executors: Mapping[str, StepExecutor]


#: One entry per part of `domains.credits.CREDIT_PARTS`.
PARTS: tuple[PartEffects, ...] = (
    PartEffects(credit_meters.PART, credit_meters.open_reader, credit_meters.EXECUTORS),
    PartEffects(credit_overdraft.PART, credit_overdraft.open_reader, credit_overdraft.EXECUTORS),
)


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
