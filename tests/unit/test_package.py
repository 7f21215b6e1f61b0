"""The package imports and exposes its version."""

import billing_reconciler


def test_version_is_semver() -> None:
    parts = billing_reconciler.__version__.split(".")
    assert len(parts) == 3
    assert all(part.isdigit() for part in parts)
