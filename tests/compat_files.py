"""Where the vendored compatibility fixtures live (see tests/compat/README.md)."""

from pathlib import Path

COMPAT = Path(__file__).resolve().parent / "compat"
FRONTIER = COMPAT / "frontier"
FRONTIER_PLANS = FRONTIER / "plans-sample.yaml"
FRONTIER_BILLING = FRONTIER / "billing-config-sample.yaml"
STRIPE_FIXTURES = COMPAT / "stripe" / "fixtures3.json"
# The originals, beside the repository in the workplace and in CI (absent in other clones).
SHARED_COMPAT = Path(__file__).resolve().parents[2] / "shared" / "compat"
