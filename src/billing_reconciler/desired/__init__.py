"""Desired state: YAML loading with positions, pydantic models, cross-references, JSON Schema.

Public API (consumed by the planner): `load_desired`, `LoadResult`, `Diagnostic`,
`DesiredState` and the specs it holds.
"""

from billing_reconciler.desired.diagnostics import Diagnostic
from billing_reconciler.desired.loader import LoadResult, load_desired
from billing_reconciler.desired.state import (
    AddressSpec,
    CurrencyOptionSpec,
    CustomerSpec,
    DesiredState,
    FeatureSpec,
    MeterSpec,
    PlanSpec,
    PriceSpec,
    ProductConfigSpec,
    ProductSpec,
    TaxIdSpec,
    TierSpec,
)

__all__ = [
    "AddressSpec",
    "CurrencyOptionSpec",
    "CustomerSpec",
    "DesiredState",
    "Diagnostic",
    "FeatureSpec",
    "LoadResult",
    "MeterSpec",
    "PlanSpec",
    "PriceSpec",
    "ProductConfigSpec",
    "ProductSpec",
    "TaxIdSpec",
    "TierSpec",
    "load_desired",
]
